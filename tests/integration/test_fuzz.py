"""Fuzzing both planes through HTTP: thousands of mutated JSON bodies, raw bytes and paths against
chat completions, completions, deployments, accounts, files and fine-tuning jobs. No input may get a
5xx or take the server down. The figures (inputs tried, statuses seen) are printed."""
import json
import random
import string
from collections import Counter

import requests_shim as http

VERSION = "2024-10-21"
SEEDS = {
    "chat": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0, "stop": ["x"], "n": 1, "logit_bias": {"1": 1}},
    "completion": {"prompt": "Hi", "max_tokens": 2, "echo": False, "n": 1},
    "deployment": {"sku": {"name": "Standard", "capacity": 1}, "properties": {"model": {"format": "OpenAI", "name": "smollm2", "version": "1"}}, "tags": {"a": "b"}},
    "account": {"location": "local", "kind": "OpenAI", "sku": {"name": "S0"}},
    "job": {"model": "smollm2", "training_file": "file-x", "hyperparameters": {"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1}, "suffix": "s", "seed": 1},
}
ODD_VALUES = [None, True, -1, 0, 2**63, -2**70, 1e308, -1e308, "", "x" * 5000, "\u0000\ud7ff\U0001F600", [], {}, [[[[]]]], {"a": {"b": {"c": {}}}}, "9" * 40, 0.5, "NaN"]
# Numbers at the edges of i64, u64 and f64, and numbers spelled as strings, for every numeric field.
EDGE_NUMBERS = [2**63 - 1, -2**63, 2**64 - 1, 2**64, 1e19, 9.2e18, -0.0, 5e-324, 1e-7, "NaN", "-NaN", "Infinity", "-Infinity", "-0", "1e308", "9223372036854775808", "0x10", " 5 "]
ODD_VALUES += EDGE_NUMBERS
NUMERIC_FIELDS = {"max_tokens", "temperature", "top_p", "n", "seed", "presence_penalty", "frequency_penalty", "capacity", "n_epochs", "batch_size", "learning_rate_multiplier"}
QUERY_PARAMS = ["api-version", "limit", "after", "from", "to", "resourceGroup", "account", "deployment", "purpose"]


def unicode_text(rng, n):
    """Any code points (astral, combining, controls), percent-encoded as UTF-8 by the caller."""
    pools = [(0x20, 0x7E), (0xA0, 0x2FF), (0x300, 0x36F), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F), (0x1, 0x1F), (0xE000, 0xF8FF)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(pools)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def fuzz_query(rng, version):
    from urllib.parse import quote

    params = {"api-version": version}
    if rng.random() < 0.3:
        params["api-version"] = rng.choice([unicode_text(rng, rng.randint(1, 14)), "123456789\u00e9", version + "-\u00e9"])
    for name in rng.sample(QUERY_PARAMS, rng.randint(0, 2)):
        params[name] = unicode_text(rng, rng.randint(0, 12))
    return "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())


def fuzz_headers(rng, headers):
    """Credentials and other headers with any printable Latin-1 text (what HTTP/1.1 can carry)."""
    headers = dict(headers)
    for name in rng.sample(["api-key", "Authorization", "x-ms-authorization-auxiliary", "x-identity-header", "Content-Type"], rng.randint(0, 2)):
        text = "".join(chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0xFF)])) for _ in range(rng.randint(0, 20)))
        headers[name] = rng.choice(["", "Bearer "]) + text
    return headers


def edge_numbers(value, rng):
    """The body with every numeric field (at any depth) set to an edge value."""
    if isinstance(value, dict):
        return {k: (rng.choice(EDGE_NUMBERS) if k in NUMERIC_FIELDS else edge_numbers(v, rng)) for k, v in value.items()}
    if isinstance(value, list):
        return [edge_numbers(v, rng) for v in value]
    return value


def mutate(value, rng, depth=0):
    if isinstance(value, dict) and value and rng.random() < 0.7:
        v = dict(value)
        k = rng.choice(list(v))
        roll = rng.random()
        if roll < 0.25:
            del v[k]
        elif roll < 0.35:
            v["".join(rng.choices(string.printable, k=rng.randint(0, 12)))] = rng.choice(ODD_VALUES)
        else:
            v[k] = mutate(v[k], rng, depth + 1)
        return v
    if isinstance(value, list) and value and rng.random() < 0.7:
        v = list(value)
        i = rng.randrange(len(v))
        v[i] = mutate(v[i], rng, depth + 1)
        if rng.random() < 0.2:
            v = v * rng.randint(2, 300)
        return v
    return rng.choice(ODD_VALUES + [value])


def raw_garbage(rng):
    kinds = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))),
        lambda: b"{" * rng.randint(1, 3000),
        lambda: json.dumps(SEEDS["chat"]).encode()[: rng.randint(0, 60)],
        lambda: b'{"messages": "' + b"\\u" * rng.randint(1, 50) + b'"}',
        lambda: ("[" * 200 + "]" * 200).encode(),
    ]
    return rng.choice(kinds)()


def fuzz_path(rng):
    pieces = ["..", "%2e%2e", "%00", "\u00e9", "a" * 3000, "deployments", "openai", "{x}", "%ZZ", "subscriptions", "-", ""]
    return "/" + "/".join(rng.choice(pieces + [unicode_text(rng, rng.randint(1, 8))]) for _ in range(rng.randint(1, 8)))


def test_no_input_gets_a_server_error(fresh_server):
    s = fresh_server
    s.deploy("smol", "smollm2", capacity=500)
    s.deploy("alive", "smollm2", capacity=10)
    key = s.keys()["key1"]
    rng = random.Random(20261129)
    data = lambda p: f"{s.url}/openai/deployments/smol/{p}"  # noqa: E731
    targets = [
        ("POST", data("chat/completions"), "chat", "data"),
        ("POST", data("completions"), "completion", "data"),
        ("PUT", f"{s.url}{s.account_path}/deployments/fz", "deployment", "arm"),
        ("PATCH", f"{s.url}{s.account_path}/deployments/smol", "deployment", "arm"),
        ("PUT", f"{s.url}{s.account_path[: s.account_path.rindex('/')]}/fz", "account", "arm"),
        ("POST", f"{s.url}/openai/fine_tuning/jobs", "job", "data"),
    ]
    seen = Counter()
    failures = []
    tried = 0
    for i in range(6000):
        method, url, seed, plane = targets[i % len(targets)]
        headers = {"api-key": key} if plane == "data" else {"Authorization": f"Bearer {s.token}"}
        if rng.random() < 0.2:
            headers = fuzz_headers(rng, headers)
        url = f"{url}?{fuzz_query(rng, VERSION if plane == 'data' else '2024-10-01')}"
        if rng.random() < 0.15:
            raw = raw_garbage(rng)
        else:
            body = SEEDS[seed]
            if rng.random() < 0.3:
                body = edge_numbers(body, rng)
            for _ in range(rng.randint(1, 4)):
                body = mutate(body, rng)
            raw = json.dumps(body, allow_nan=True).encode()
        try:
            status, resp, _ = http.request(method, url, raw=raw, headers=headers, timeout=120)
        except OSError:
            # An over-size body is refused before it is read whole: the connection closes under the
            # sender. The server must still be there.
            status, resp = "closed", len(raw)
            assert http.request("GET", s.url + "/healthz")[0] == 200
        tried += 1
        seen[status] += 1
        if status != "closed" and status >= 500:
            failures.append((method, url, raw[:300], status, resp))
        elif status != "closed" and status >= 400 and not (isinstance(resp, dict) and isinstance(resp.get("error", {}).get("message"), str)):
            failures.append(("shape", method, url, raw[:300], status, resp))
    for i in range(1000):
        path = fuzz_path(rng)
        for prefix, headers in [("", {"api-key": key}), ("/subscriptions/x", {"Authorization": f"Bearer {s.token}"})]:
            from urllib.parse import quote

            url = s.url + quote(prefix + path, safe="/%") + "?api-version=" + rng.choice([VERSION, "bad", "", "2024-13-45"])
            status, resp, _ = http.request(rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"]), url, raw=b"{}", headers=headers)
            tried += 1
            seen[status] += 1
            if status >= 500:
                failures.append(("path", url[:200], status, resp))
    print(f"fuzz: {tried} inputs, statuses {dict(sorted(seen.items(), key=str))}, server errors {len(failures)}")
    assert not failures, failures[:5]
    assert http.request("GET", s.url + "/healthz")[0] == 200
    alive = f"{s.url}/openai/deployments/alive/chat/completions?api-version={VERSION}"
    ok, body, _ = http.request("POST", alive, body=SEEDS["chat"], headers={"api-key": key})
    assert ok == 200, body


def test_size_limits_answer_in_each_plane_s_error_shape(fresh_server):
    s = fresh_server
    s.deploy("smol", "smollm2", capacity=50)
    key = s.keys()["key1"]
    url = f"{s.url}/openai/deployments/smol/chat/completions?api-version={VERSION}"
    many = {"messages": [{"role": "user", "content": "a"}] * 2049}
    status, body, _ = http.request("POST", url, body=many, headers={"api-key": key})
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "array_above_max_length", "messages"), body
    long = {"messages": [{"role": "user", "content": "word " * 20000}], "max_tokens": 5}
    status, body, _ = http.request("POST", url, body=long, headers={"api-key": key})
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded"), body
    huge = b'{"messages": [{"role": "user", "content": "' + b"a" * (3 << 20) + b'"}]}'
    try:
        status, body, _ = http.request("POST", url, raw=huge, headers={"api-key": key})
        assert status == 413 and "error" in body, body
    except OSError:
        pass  # refused before the body was read whole
    status, body, _ = s.arm("PUT", s.account_path + "/deployments/big", raw=b'{"tags": {"a": "' + b"b" * (3 << 20) + b'"}}')
    assert status == 413 and body["error"]["code"] == "InvalidRequestContent", body
    assert http.request("GET", s.url + "/healthz")[0] == 200
