"""Deployments on an engine pool of two real vLLM servers (vLLM's CPU build, float32, from
`scripts/vllm/install.sh`; BERTH_TEST_VLLM names its venv, default target/vllm-venv). SmolLM2 is
exported from the GGUF to Hugging Face's layout; the same PEFT adapters are imported once for the
GGUF base on Berth's engine and once for the pool's base, so every answer can be compared.

Nothing is mocked: the servers are vLLM, killed and restarted for real."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import requests_shim as http
from openai import AzureOpenAI
from conftest import ROOT, Server, free_port
from adapters import make_adapter
from test_full_weights import export_hf, export_tokenizer

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three primary colors.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 12?",
    "Give one tip for sleeping well.",
    "Say something kind about Mondays.",
]


def vllm_venv():
    venv = os.environ.get("BERTH_TEST_VLLM", str(ROOT / "target" / "vllm-venv"))
    assert os.path.exists(os.path.join(venv, "bin", "python")), f"{venv} has no vLLM: run scripts/vllm/install.sh {venv}"
    return venv


class Vllm:
    """One vLLM server started with scripts/vllm/serve.sh."""

    def __init__(self, hf_dir, log_dir):
        self.hf_dir, self.port = hf_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(log_dir, f"vllm-{self.port}.log"), "ab")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "vllm" / "serve.sh"), vllm_venv(), self.hf_dir, str(self.port), "smollm2"],
            stdout=self.log, stderr=self.log, start_new_session=True,
        )
        return self

    def wait(self, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"vLLM on {self.port} exited; see {self.log.name}"
            try:
                if http.request("GET", self.url + "/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(f"vLLM on {self.port} did not start")

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def adapters(self):
        status, body, _ = http.request("GET", self.url + "/v1/models")
        assert status == 200, body
        return sorted(m["id"] for m in body["data"] if m.get("parent"))


@pytest.fixture(scope="module")
def pool(gguf, tmp_path_factory):
    """Two vLLM servers on SmolLM2 in Hugging Face layout, and a Berth server with the pool
    registered; the GGUF base `smollm2` on Berth's engine; two adapters imported for both bases."""
    work = tmp_path_factory.mktemp("pool")
    hf = str(work / "hf")
    export_hf(gguf, hf)
    export_tokenizer(gguf, hf)
    servers = [Vllm(hf, str(work)).start() for _ in range(2)]
    adapters = []
    for seed in (1, 2):
        path = str(work / f"adapter-{seed}")
        make_adapter(path, gguf, rank=8, alpha=16, targets=["q_proj", "v_proj", "gate_proj", "down_proj"], seed=seed, scale=0.08)
        adapters.append(path)
    s = Server(tempfile.mkdtemp(prefix="berth-it-")).start()
    try:
        for v in servers:
            v.wait()
        s.cli("engine-pool", "add", "cpus", "--endpoint", servers[0].url, "--endpoint", servers[1].url)
        s.cli("base-model", "add", "smollm2", "--path", gguf)
        s.cli("base-model", "add", "smollm2-pool", "--path", hf, "--engine-pool", "cpus", "--served-model", "smollm2")
        s.local_ft, s.pool_ft = [], []
        for a in adapters:
            s.local_ft.append(json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", a).stdout)["id"])
            s.pool_ft.append(json.loads(s.cli("model", "import", "--base", "smollm2-pool", "--adapter", a).stdout)["id"])
        for name, model in [("local", "smollm2"), ("local-ft1", s.local_ft[0]), ("local-ft2", s.local_ft[1]),
                            ("pool", "smollm2-pool"), ("pool-ft1", s.pool_ft[0]), ("pool-ft2", s.pool_ft[1])]:
            d = s.deploy(name, model)
            assert d["properties"]["provisioningState"] == "Succeeded", d
            assert d["properties"].get("enginePool") == ("cpus" if name.startswith("pool") else None)
        s.vllm = servers
        s.client = AzureOpenAI(azure_endpoint=s.url, api_key=s.keys()["key1"], api_version="2024-10-21", max_retries=0)
        yield s
    finally:
        s.stop()
        for v in servers:
            if v.proc.poll() is None:
                v.kill()


def show(s):
    return json.loads(s.cli("engine-pool", "show", "cpus").stdout)


def lora_name(s, model):
    """The name the pool knows a model's adapter by (the model id and a digest of its files' path)."""
    names = {a for e in show(s)["endpoints"] for a in e["adapters"]} | set(show(s)["adapters"])
    (name,) = [n for n in names if n.startswith(model + "-")]
    return name


def chat(s, deployment, prompt, **kw):
    kw.setdefault("max_tokens", 24)
    return s.client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": prompt}], temperature=0, **kw)


def test_greedy_answers_through_the_pool_equal_berths_engine(pool):
    s = pool
    for local, remote in (("local", "pool"), ("local-ft1", "pool-ft1"), ("local-ft2", "pool-ft2")):
        for prompt in PROMPTS:
            a, b = chat(s, local, prompt), chat(s, remote, prompt)
            assert (b.choices[0].message.content, b.choices[0].finish_reason) == (a.choices[0].message.content, a.choices[0].finish_reason), (remote, prompt)
            assert (b.usage.prompt_tokens, b.usage.completion_tokens) == (a.usage.prompt_tokens, a.usage.completion_tokens)
            assert b.model == s.pool_ft[int(remote[-1]) - 1] if remote != "pool" else b.model == "smollm2-pool"
            assert b.system_fingerprint == "fp_berth_vllm_llama" and b.id.startswith("chatcmpl-")
    # The adapters change the answers: the comparison above is not of three copies of the base.
    answers = {d: chat(s, d, PROMPTS[0]).choices[0].message.content for d in ("pool", "pool-ft1", "pool-ft2")}
    assert len(set(answers.values())) == 3, answers


def test_streams_logprobs_and_completions_keep_the_contract(pool):
    s = pool
    prompt = PROMPTS[1]
    whole = chat(s, "pool-ft1", prompt).choices[0].message.content
    chunks = list(chat(s, "pool-ft1", prompt, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-2].choices[0].finish_reason in ("stop", "length")
    a = chat(s, "local-ft2", prompt, logprobs=True, top_logprobs=3).choices[0].logprobs.content
    b = chat(s, "pool-ft2", prompt, logprobs=True, top_logprobs=3).choices[0].logprobs.content
    assert [t.token for t in b] == [t.token for t in a]
    assert max(abs(x.logprob - y.logprob) for x, y in zip(a, b)) < 1e-3
    assert [[t.token for t in x.top_logprobs] for x in b][:8] == [[t.token for t in x.top_logprobs] for x in a][:8]
    legacy = [s.client.completions.create(model=d, prompt="The capital of France is", max_tokens=8, temperature=0) for d in ("local", "pool")]
    assert legacy[0].choices[0].text == legacy[1].choices[0].text and legacy[1].usage.prompt_tokens == legacy[0].usage.prompt_tokens


def test_structured_outputs_and_required_tool_calls_are_enforced_by_vllm_too(pool):
    """Berth sends the grammar it compiled to vLLM's structured outputs: answers parse and validate."""
    import jsonschema

    s = pool
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer", "minimum": 0, "maximum": 100000000}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    for d in ("pool", "pool-ft1"):
        answer = chat(s, d, "Describe the largest city of France.", response_format=fmt, max_tokens=60)
        assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
        jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"], "additionalProperties": False},
        },
    }
    answer = chat(s, "pool", "What is the weather in Oslo?", tools=[tool], tool_choice="required", parallel_tool_calls=False, max_tokens=80)
    calls = answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "tool_calls" and calls and calls[0].function.name == "get_weather", (answer.choices[0].message, answer.usage)
    jsonschema.validate(json.loads(calls[0].function.arguments), tool["function"]["parameters"])


def test_limits_headers_and_metering_are_those_of_a_local_deployment(pool):
    s = pool
    for name, model in (("local-small", "smollm2"), ("pool-small", "smollm2-pool")):
        assert s.deploy(name, model, capacity=1)["properties"]["provisioningState"] == "Succeeded"
    body = {"messages": [{"role": "user", "content": PROMPTS[2]}], "max_tokens": 16, "temperature": 0}
    seen, key = {}, s.keys()["key1"]
    for name in ("local-small", "pool-small"):
        statuses, headers = [], []
        for _ in range(4):
            status, answer, h = http.request(
                "POST", f"{s.url}/openai/deployments/{name}/chat/completions?api-version=2024-10-21", body=body, headers={"api-key": key},
            )
            statuses.append(status)
            headers.append({k: h.get(k) for k in ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")})
        seen[name] = (statuses, headers)
    assert seen["pool-small"] == seen["local-small"], seen
    assert 429 in seen["pool-small"][0], "capacity 1 allows fewer calls than were made"
    status, costs, _ = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/costs")
    assert status == 200, costs
    lines = {line["deployment"]: line for line in costs["value"] if line["deployment"] in ("local-small", "pool-small")}
    # Cached tokens differ by engine (vLLM caches whole blocks of its own size), the rest may not.
    counts = lambda line: (line["requests"], line["inputTokens"], line["outputTokens"], line["sku"])
    assert set(lines) == {"local-small", "pool-small"} and counts(lines["pool-small"]) == counts(lines["local-small"]), lines


def test_adapters_are_loaded_only_where_routed_and_unloaded_on_delete(pool):
    s = pool
    name = lora_name(s, s.pool_ft[1])
    for _ in range(4):
        chat(s, "pool-ft2", PROMPTS[3])
    holders = [v.url for v in s.vllm if name in v.adapters()]
    assert len(holders) == 1, holders
    # A second deployment of the same model shares the adapter: deleting one keeps it loaded.
    assert s.deploy("pool-ft2-b", s.pool_ft[1])["properties"]["provisioningState"] == "Succeeded"
    assert s.arm("DELETE", f"{s.account_path}/deployments/pool-ft2-b")[0] in (200, 202, 204)
    time.sleep(2)
    assert [v.url for v in s.vllm if name in v.adapters()] == holders
    assert s.arm("DELETE", f"{s.account_path}/deployments/pool-ft2")[0] in (200, 202, 204)
    deadline = time.time() + 10
    while any(name in v.adapters() for v in s.vllm):
        assert time.time() < deadline, "the adapter was not unloaded from every endpoint"
        time.sleep(0.2)
    assert name not in show(s)["adapters"]


def test_the_portal_deploys_onto_the_pool_shows_it_and_chats(pool):
    s = pool
    chromium = shutil.which(os.environ.get("CHROMIUM", "chromium"))
    assert chromium and (ROOT / "tests" / "portal" / "node_modules" / "playwright-core").exists(), "scripts/test.sh installs chromium and playwright-core"
    shots = os.environ.get("BERTH_PORTAL_SCREENSHOTS", str(ROOT / "target" / "portal-screenshots"))
    env = dict(os.environ, BERTH_URL=s.url, BERTH_TOKEN=s.token, BERTH_MODEL=s.pool_ft[0], BERTH_POOL="cpus", SCREENSHOTS=shots, CHROMIUM=chromium)
    p = subprocess.run(["node", str(ROOT / "tests" / "portal" / "pool.mjs")], env=env, capture_output=True, text=True, timeout=600)
    print(p.stdout)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}\nserver log:\n{s.read_log()[-3000:]}"


def test_a_killed_endpoint_is_routed_around_shown_down_and_reused_when_back(pool):
    s = pool
    victim, survivor = s.vllm
    results, lock = [], threading.Lock()
    killed_at = []

    def caller(i):
        for j in range(3):
            started = time.time()
            try:
                r = chat(s, "pool-ft1", PROMPTS[(i + j) % len(PROMPTS)])
                outcome = r.choices[0].finish_reason
            except Exception as e:  # noqa: BLE001 - the outcome is what is checked
                outcome = f"error: {e}"
            with lock:
                results.append((started, outcome))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    victim.kill()
    killed_at.append(time.time())
    for t in threads:
        t.join(120)
    after = [o for started, o in results if started > killed_at[0]]
    assert after and all(o in ("stop", "length") for o in after), results
    endpoints = {e["url"]: e for e in show(s)["endpoints"]}
    assert endpoints[victim.url]["health"] == "down" and endpoints[survivor.url]["health"] == "up"
    status, metrics, _ = http.request("GET", s.url + "/metrics", headers={"Authorization": f"Bearer {s.token}"})
    assert status == 200
    assert f'berth_engine_pool_endpoint_up{{pool="cpus",endpoint="{victim.url}"}} 0' in metrics, metrics[-3000:]
    assert f'berth_engine_pool_endpoint_up{{pool="cpus",endpoint="{survivor.url}"}} 1' in metrics
    # The adapter lives on the survivor now, whichever endpoint held it before.
    assert lora_name(s, s.pool_ft[0]) in survivor.adapters()
    victim.start().wait()
    deadline = time.time() + 20
    while {e["url"]: e for e in show(s)["endpoints"]}[victim.url]["health"] != "up":
        assert time.time() < deadline, "the pool did not see the endpoint back"
        time.sleep(0.5)
    before = {e["url"]: e["served"] for e in show(s)["endpoints"]}
    threads = [threading.Thread(target=lambda: chat(s, "pool", PROMPTS[5])) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    served = {e["url"]: e["served"] - before[e["url"]] for e in show(s)["endpoints"]}
    assert served[victim.url] > 0 and sum(served.values()) == 8, served


def test_pool_administration_refuses_what_it_cannot_serve(pool, tmp_path):
    s = pool
    bad = [
        ({"name": "x", "kind": "tgi", "endpoints": ["http://127.0.0.1:1"]}, 400, "UnsupportedEnginePoolKind"),
        ({"name": "x", "kind": "vllm", "endpoints": ["ftp://h"]}, 400, "InvalidEndpoints"),
        ({"name": "x", "kind": "vllm", "endpoints": []}, 400, "InvalidEndpoints"),
        ({"name": "../x", "kind": "vllm", "endpoints": ["http://h"]}, 400, "InvalidEnginePoolName"),
        ({"name": "cpus", "kind": "vllm", "endpoints": ["http://h"]}, 409, "EnginePoolExists"),
    ]
    for body, code, error in bad:
        status, answer, _ = s.arm("POST", "/berth/v1/engine-pools", body, api_version=None)
        assert (status, answer["error"]["code"]) == (code, error), (body, answer)
    # A pool whose server is not up cannot take a base model; one in use cannot be removed.
    status, _, _ = s.arm("POST", "/berth/v1/engine-pools", {"name": "nowhere", "kind": "vllm", "endpoints": [f"http://127.0.0.1:{free_port()}"]}, api_version=None)
    assert status == 201
    status, answer, _ = s.arm("POST", "/berth/v1/base-models", {"name": "m2", "path": s.vllm[0].hf_dir, "engine_pool": "nowhere"}, api_version=None)
    assert (status, answer["error"]["code"]) == (400, "EnginePoolMismatch") and "does not answer" in answer["error"]["message"]
    status, answer, _ = s.arm("POST", "/berth/v1/base-models", {"name": "m3", "path": s.vllm[0].hf_dir, "engine_pool": "cpus", "served_model": "other"}, api_version=None)
    assert (status, answer["error"]["code"]) == (400, "EnginePoolMismatch") and "not 'other'" in answer["error"]["message"]
    assert s.arm("DELETE", "/berth/v1/engine-pools/nowhere", api_version=None)[0] == 200
    status, answer, _ = s.arm("DELETE", "/berth/v1/engine-pools/cpus", api_version=None)
    assert (status, answer["error"]["code"]) == (409, "EnginePoolInUse")
    # An API key is not the operator's token.
    assert s.arm("GET", "/berth/v1/engine-pools", api_version=None, token=s.keys()["key1"])[0] == 401


def test_the_management_sdk_deploys_onto_the_pool(pool, tmp_path):
    """`azure-mgmt-cognitiveservices` (over HTTPS, as it insists) deploys a fine-tune onto the pool
    through another Berth server registering the same servers, and the deployment answers."""
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
    from azure.mgmt.cognitiveservices.models import Deployment, DeploymentModel, DeploymentProperties, Sku
    from test_azure_mgmt import BerthToken

    s2 = Server(str(tmp_path)).start(args=("--tls-self-signed",))
    try:
        s2.cli("engine-pool", "add", "cpus", "--endpoint", pool.vllm[0].url, "--endpoint", pool.vllm[1].url)
        s2.cli("base-model", "add", "smollm2-pool", "--path", pool.vllm[0].hf_dir, "--engine-pool", "cpus", "--served-model", "smollm2")
        adapter = os.path.join(os.path.dirname(pool.vllm[0].hf_dir), "adapter-1")
        ft = json.loads(s2.cli("model", "import", "--base", "smollm2-pool", "--adapter", adapter).stdout)["id"]
        cert = str(tmp_path / "tls" / "cert.pem")
        mgmt = CognitiveServicesManagementClient(BerthToken(s2.token), s2.creds["subscriptionId"], base_url=s2.url, connection_verify=cert, polling_interval=0.2)
        body = Deployment(sku=Sku(name="Standard", capacity=5), properties=DeploymentProperties(model=DeploymentModel(format="OpenAI", name=ft, version="1")))
        created = mgmt.deployments.begin_create_or_update(s2.creds["resourceGroup"], s2.creds["account"], "sdk-ft", body).result()
        assert created.properties.provisioning_state == "Succeeded"
        body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 24, "temperature": 0}
        status, answer, _ = http.request("POST", f"{s2.url}/openai/deployments/sdk-ft/chat/completions?api-version=2024-10-21",
                                         body=body, headers={"api-key": s2.keys()["key1"]}, context=s2.ssl)
        assert status == 200, answer
        assert answer["choices"][0]["message"]["content"] == chat(pool, "local-ft1", PROMPTS[0]).choices[0].message.content
        mgmt.deployments.begin_delete(s2.creds["resourceGroup"], s2.creds["account"], "sdk-ft").result()
        # This server's copy of the adapter (its own name: its model store differs) leaves every endpoint.
        deadline = time.time() + 10
        while any(n.startswith(ft) for v in pool.vllm for n in v.adapters()):
            assert time.time() < deadline, "the deleted deployment's adapter stayed loaded"
            time.sleep(0.2)
    finally:
        s2.stop()


def test_deployments_on_a_pool_that_is_down_survive_a_restart_and_answer_when_it_is_back(pool):
    """Runs last: it stops every vLLM server. A restarted Berth keeps its pool deployments `Succeeded`,
    answers 503 with retry-after while no endpoint is up, and serves again once one is back."""
    s = pool
    for v in s.vllm:
        if v.proc.poll() is None:
            v.kill()
    s.stop()
    s.start()
    for name in ("pool", "pool-ft1"):
        d = s.wait_deployment(name)
        assert d["properties"]["provisioningState"] == "Succeeded", d
    body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 8}
    status, answer, headers = http.request(
        "POST", f"{s.url}/openai/deployments/pool-ft1/chat/completions?api-version=2024-10-21", body=body, headers={"api-key": s.keys()["key1"]}
    )
    assert status == 503 and headers.get("retry-after"), (status, answer)
    back = s.vllm[1].start().wait()
    deadline = time.time() + 30
    while True:
        try:
            answer = chat(s, "pool-ft1", PROMPTS[0])
            break
        except Exception:  # noqa: BLE001 - 503 until the pool's probe sees the server back
            assert time.time() < deadline, "the pool deployment did not answer once its server was back"
            time.sleep(1)
    assert answer.choices[0].message.content == chat(s, "local-ft1", PROMPTS[0]).choices[0].message.content
    assert lora_name(s, s.pool_ft[0]) in back.adapters()
