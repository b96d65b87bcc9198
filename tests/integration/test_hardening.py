"""Issue 12 through the real binary: a client's mistake is a 4xx in the contract's shape (a prompt the
KV pool can never hold, unknown or unserved fields, too many or too long stop strings), what a call
computed is billed even when it fails or its client leaves, and the newcomer's path (CLI lists, a bare
token, a missing deployment named, the portal under the account's address, the pid file, a plain log)."""
from http.client import HTTPConnection
import json
import os
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests_shim as http
from conftest import Server

CHAT = "/openai/deployments/{}/chat/completions?api-version=2024-10-21"
# SmolLM2's end-of-turn and end-of-text tokens: banned, so that an answer runs until something stops it.
NO_EOS = {"2": -100, "0": -100}


@pytest.fixture(scope="module")
def small(gguf):
    """A server whose KV pool (4 MiB: 5 blocks, 80 tokens of SmolLM2) is far smaller than the model's
    8,192-token context."""
    s = Server(tempfile.mkdtemp(prefix="berth-it-")).start(args=("--kv-cache-mib", "4"))
    s.cli("base-model", "add", "smollm2", "--path", gguf)
    assert s.deploy("tiny", "smollm2", capacity=100)["properties"]["provisioningState"] == "Succeeded"
    s.key = s.keys()["key1"]
    yield s
    s.stop()


def chat(s, body, deployment="tiny"):
    return http.request("POST", s.url + CHAT.format(deployment), body=body, headers={"api-key": s.key})


def usage_of(s, deployment):
    now = datetime.now(timezone.utc)
    q = f"from={(now - timedelta(hours=2)).strftime('%Y-%m-%dT%H:%M:%SZ')}&to={(now + timedelta(hours=2)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    status, body, _ = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/costs?{q}")
    assert status == 200, body
    line = next((l for l in body["value"] if l["deployment"] == deployment), {})
    return line.get("requests", 0), line.get("inputTokens", 0), line.get("outputTokens", 0)


def test_a_prompt_the_kv_pool_can_never_hold_is_a_400_with_the_real_limit(small):
    """Item 5: it was a 500, found by matching the engine's message text."""
    status, body, _ = chat(small, {"messages": [{"role": "user", "content": "word " * 120}], "max_tokens": 4})
    assert status == 400, body
    assert (body["error"]["code"], body["error"]["type"]) == ("context_length_exceeded", "invalid_request_error"), body
    assert "at most 80 tokens" in body["error"]["message"], body
    # The deployment still answers what fits.
    status, body, _ = chat(small, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert status == 200, body


def test_a_call_that_fails_after_generating_is_billed_for_what_it_computed(small):
    """Items 5 and 9: an answer that outgrows the whole pool fails as the client's limit, and its tokens are metered."""
    before = usage_of(small, "tiny")
    body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 500, "logit_bias": NO_EOS}
    status, err, _ = chat(small, body)
    assert status == 400 and err["error"]["code"] == "context_length_exceeded", err
    after = usage_of(small, "tiny")
    assert after[0] == before[0] + 1, (before, after)
    prompt, completion = after[1] - before[1], after[2] - before[2]
    assert prompt > 20 and completion > 20 and prompt + completion <= 81, (prompt, completion)


def test_a_stream_the_client_abandons_is_billed_for_what_it_computed(small):
    """Item 9: a dropped stream was never metered."""
    before = usage_of(small, "tiny")
    conn = http_client(small)
    payload = {"messages": [{"role": "user", "content": "Count to a hundred."}], "max_tokens": 40, "logit_bias": NO_EOS, "stream": True}
    conn.request("POST", CHAT.format("tiny"), body=json.dumps(payload), headers={"api-key": small.key, "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    frames = 0
    while frames < 4:
        if resp.fp.readline().startswith(b"data: "):
            frames += 1
    conn.sock.shutdown(2)
    conn.close()
    deadline = time.time() + 30
    while time.time() < deadline and usage_of(small, "tiny")[0] == before[0]:
        time.sleep(0.2)
    after = usage_of(small, "tiny")
    assert after[0] == before[0] + 1, (before, after)
    assert after[1] > before[1] and after[2] - before[2] >= 2, (before, after)


def http_client(s):
    host, port = s.url.removeprefix("http://").split(":")
    return HTTPConnection(host, int(port), timeout=60)


@pytest.mark.parametrize(
    "extra,param,code",
    [
        ({"temprature": 0.5}, "temprature", "unknown_parameter"),
        ({"functions": [{"name": "f g", "parameters": {}}]}, "functions[0].name", "invalid_value"),
        ({"function_call": "auto"}, "function_call", "invalid_value"),
        ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls", "invalid_value"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "if": {}}}}}, "response_format", "invalid_value"),
        ({"data_sources": [{"type": "azure_search"}]}, "data_sources", "unsupported_parameter"),
        ({"store": True}, "store", "unsupported_parameter"),
        ({"metadata": {"team": "a"}}, "metadata", "unsupported_parameter"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        ({"stop": "x" * 300}, "stop", "invalid_value"),
        ({"max_tokens": 9223372036854775807}, "messages", "context_length_exceeded"),
    ],
)
def test_fields_are_served_or_refused_by_name(small, extra, param, code):
    """Item 6 (data plane) and item 10 (stop strings): nothing is silently ignored."""
    status, body, _ = chat(small, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **extra})
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == (param, code), body


def test_the_completions_surface_refuses_unknown_fields_too(small):
    status, body, _ = http.request(
        "POST", small.url + "/openai/deployments/tiny/completions?api-version=2024-10-21",
        body={"prompt": "Hi", "max_tokens": 2, "best_off": 2}, headers={"api-key": small.key},
    )
    assert status == 400 and (body["error"]["param"], body["error"]["code"]) == ("best_off", "unknown_parameter"), body


def test_the_newcomer_s_path(small):
    """Item 11 and item 12: az-shaped lists, a bare token, a missing deployment named, the portal
    under the account's address, a log without colour codes."""
    listed = json.loads(small.cli("deployment", "list").stdout)
    assert isinstance(listed, list) and [d["name"] for d in listed] == ["tiny"]
    assert isinstance(json.loads(small.cli("usage", "list", "-l", "local").stdout), list)
    token = small.cli("token", "--raw").stdout.strip()
    assert token.count(".") == 2 and " " not in token and not token.startswith("{"), token
    status, _, _ = http.request("GET", small.url + "/subscriptions?api-version=2024-10-01", headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    p = small.cli("chat", "--deployment", "nope", "Hi", check=False)
    assert p.returncode != 0 and "'nope'" in p.stderr and "tiny" in p.stderr, p.stderr
    status, page, _ = http.request("GET", small.url + "/accounts/berth/portal")
    assert status == 200 and "<html" in page.lower(), page[:200]
    assert "\x1b[" not in small.read_log()


def test_the_pid_file_names_the_running_server_and_goes_with_it(gguf):
    s = Server(tempfile.mkdtemp(prefix="berth-it-")).start()
    pid_file = os.path.join(s.data_dir, "server.pid")
    assert open(pid_file).read().strip() == str(s.proc.pid)
    s.stop()
    assert not os.path.exists(pid_file)


def multipart(fields, files):
    """A multipart/form-data body: text fields, then (name, bytes) files as `file` parts."""
    boundary = "berth-test-boundary"
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for name, data in files:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_a_contributor_imports_by_upload_never_by_server_path(small, adapter_dir):
    """Item 4: import read any server directory a Contributor named; tenants now send the files."""
    from test_identity import assign, principal, token_for

    s = small
    who = principal(s, "uploader")
    status, body, _ = assign(s, s.account_path, "Contributor", who)
    assert status in (200, 201), body
    token = token_for(s, s.creds["tenantId"], who)
    # A server path: refused, and the answer says nothing of the server's filesystem.
    status, body, _ = s.arm("POST", s.account_path + "/models/import", {"base": "smollm2", "adapter": "/etc"}, token=token)
    assert status == 403 and "/etc" not in json.dumps(body), body
    url = s.url + s.account_path + "/models/upload?api-version=2024-10-01"
    files = [(n, open(os.path.join(adapter_dir, n), "rb").read()) for n in sorted(os.listdir(adapter_dir))]
    # Names that are paths or hidden files, and files that are not an adapter of the base, are refused.
    for bad_files, needle in [
        ([("../adapter_config.json", files[0][1])], "not allowed"),
        ([(".env", b"x")], "not allowed"),
        ([("adapter_config.json", b"{}")], "uploaded"),
    ]:
        raw, ctype = multipart({"base": "smollm2", "kind": "adapter"}, bad_files)
        status, body, _ = http.request("POST", url, raw=raw, headers={"Authorization": f"Bearer {token}", "Content-Type": ctype})
        assert status == 400, body
        assert needle in body["error"]["message"] and "uploads/" not in body["error"]["message"], body
    raw, ctype = multipart({"base": "smollm2", "kind": "adapter"}, files)
    status, model, _ = http.request("POST", url, raw=raw, headers={"Authorization": f"Bearer {token}", "Content-Type": ctype})
    assert status == 201 and model["id"].startswith("smollm2.ft-") and model["kind"] == "adapter", model
    assert not os.listdir(os.path.join(s.data_dir, "uploads")), "an upload leaves nothing behind"
    assert s.deploy("uploaded", model["id"], capacity=10)["properties"]["provisioningState"] == "Succeeded"
    status, answer, _ = chat(s, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}, deployment="uploaded")
    assert status == 200, answer


def test_an_uploaded_file_is_on_disk_before_its_answer(small):
    """Item 8: nothing was fsynced. Watched with strace: the file is flushed before the rename that
    publishes it, and the directory after, all before the 200."""
    import re
    import subprocess

    log = os.path.join(small.data_dir, "strace.log")
    tracer = subprocess.Popen(
        ["strace", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-p", str(small.proc.pid), "-o", log],
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    try:
        data = open(os.path.join(os.path.dirname(__file__), "..", "..", "data", "fine-tuning", "pirate-train.jsonl"), "rb").read()
        raw, ctype = multipart({"purpose": "fine-tune"}, [("train.jsonl", data)])
        status, body, _ = http.request("POST", small.url + "/openai/files?api-version=2024-10-21", raw=raw, headers={"api-key": small.key, "Content-Type": ctype})
        assert status == 200 or status == 201, body
    finally:
        time.sleep(0.3)
        tracer.terminate()
        tracer.wait(10)
    lines = open(log).read().splitlines()
    name = f"{body['id']}.jsonl"
    renamed = next(i for i, l in enumerate(lines) if re.search(r"rename(at2?)?\(.*" + re.escape(name + ".tmp") + r".*" + re.escape(name) + r'"', l))
    assert any(re.search(r"f(data)?sync\(\d+<[^>]*" + re.escape(name + ".tmp") + ">", l) for l in lines[:renamed]), lines
    assert any(re.search(r"fsync\(\d+<[^>]*/files>", l) for l in lines[renamed:]), lines


def test_engines_share_a_memory_budget(gguf, tmp_path):
    """Item 10: engines were created per weights path with no cap; now a load past the budget fails
    provisioning with the reason, and room made by deleting a deployment is usable at once."""
    import shutil

    s = Server(tempfile.mkdtemp(prefix="berth-it-")).start(args=("--kv-cache-mib", "16", "--engine-memory-mib", "200"))
    try:
        copy = tmp_path / "copy.gguf"
        shutil.copy(gguf, copy)
        s.cli("base-model", "add", "smollm2", "--path", gguf)
        s.cli("base-model", "add", "smollm2-copy", "--path", str(copy))
        assert s.deploy("first", "smollm2", capacity=10)["properties"]["provisioningState"] == "Succeeded"
        second = s.deploy("second", "smollm2-copy", capacity=10)
        assert second["properties"]["provisioningState"] == "Failed", second
        message = second["properties"]["error"]["message"]
        assert "engine memory budget" in message and "200 MiB" in message and str(copy) not in message, message
        # A second deployment of the loaded model shares its engine and needs no more.
        assert s.deploy("also-first", "smollm2", capacity=10)["properties"]["provisioningState"] == "Succeeded"
        for name in ("first", "also-first"):
            status, _, _ = s.arm("DELETE", f"{s.account_path}/deployments/{name}")
            assert status == 200
        assert s.deploy("second", "smollm2-copy", capacity=10)["properties"]["provisioningState"] == "Succeeded"
    finally:
        s.stop()


def scrape(s, token=None):
    """`/metrics` as {(name, frozenset(labels)): value}."""
    import re

    status, text, headers = http.request("GET", s.url + "/metrics", headers={"Authorization": f"Bearer {token or s.token}"})
    assert status == 200, text
    assert headers["content-type"].startswith("application/openmetrics-text"), headers
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def test_metrics_move_by_exactly_a_known_workload(small):
    """Issue 14's metrics, taken with this issue: every counter moves by exactly what was done."""
    from test_identity import principal, token_for

    L = lambda **kw: frozenset({"account": "berth", "deployment": "tiny", "model": "smollm2", **kw}.items())  # noqa: E731
    before = scrape(small)
    usages = []
    for i in range(3):
        status, body, _ = chat(small, {"messages": [{"role": "user", "content": f"Say {i}"}], "max_tokens": 3, "logit_bias": NO_EOS})
        assert status == 200, body
        usages.append(body["usage"])
    status, body, _ = chat(small, {"messages": [{"role": "user", "content": "Hi"}], "temperature": 9})
    assert status == 400
    after = scrape(small)
    delta = lambda key: after.get(key, 0) - before.get(key, 0)  # noqa: E731
    assert delta(("berth_requests_total", L(outcome="ok"))) == 3
    assert delta(("berth_requests_total", L(outcome="4xx"))) == 1
    assert delta(("berth_tokens_total", L(kind="prompt"))) == sum(u["prompt_tokens"] for u in usages)
    assert delta(("berth_tokens_total", L(kind="completion"))) == sum(u["completion_tokens"] for u in usages) == 9
    assert delta(("berth_tokens_total", L(kind="cached"))) == sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    assert delta(("berth_time_to_first_token_seconds_count", L())) == 3
    assert delta(("berth_time_per_output_token_seconds_count", L())) == 3
    route = "/openai/deployments/{deployment}/chat/completions"
    assert delta(("berth_http_requests_total", frozenset({"method": "POST", "route": route, "status": "2xx"}.items()))) == 3
    assert delta(("berth_http_requests_total", frozenset({"method": "POST", "route": route, "status": "4xx"}.items()))) == 1
    engine = frozenset({"engine": os.path.basename(os.environ["BERTH_TEST_GGUF"])}.items())
    assert ("berth_engine_queue_depth", engine) in after and ("berth_engine_running_sequences", engine) in after
    assert after[("berth_kv_blocks", engine | {("state", "free")})] + after[("berth_kv_blocks", engine | {("state", "used")})] == 5
    assert ("berth_fine_tuning_jobs", frozenset({("status", "pending")})) in after
    assert any(k[0] == "berth_provisioning_duration_seconds_count" for k in after)
    # Which replica answered is on every answer.
    _, _, headers = http.request("GET", small.url + "/healthz")
    assert headers["x-berth-replica"], headers
    # Only the operator scrapes: the names of every tenant's deployments are in it.
    status, _, _ = http.request("GET", small.url + "/metrics")
    assert status == 401
    reader = token_for(small, small.creds["tenantId"], principal(small, "nobody"))
    status, _, _ = http.request("GET", small.url + "/metrics", headers={"Authorization": f"Bearer {reader}"})
    assert status == 403
    # The request log: one line per request, with its route template and deployment, never a key.
    log = small.read_log()
    assert 'route="/openai/deployments/{deployment}/chat/completions"' in log or "route=/openai/deployments/{deployment}/chat/completions" in log, log[-2000:]
    assert small.key not in log
