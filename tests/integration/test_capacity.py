"""Deployment types, the catalog, quotas and data-plane rate limits through the HTTP API: each rule
with its error code and message."""
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import requests_shim as http
from conftest import Server, berth_bin

VERSION = "2024-10-21"
QUESTION = [{"role": "user", "content": "Say hello."}]


def put(s, name, model, sku="Standard", capacity=1, method="PUT", api_version="2024-10-01"):
    body = {"sku": {"name": sku, "capacity": capacity}, "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}}}
    if method == "PATCH":
        body = {"sku": {"name": sku, "capacity": capacity}}
    return s.arm(method, f"{s.account_path}/deployments/{name}", body, api_version=api_version)


def region_server(gguf, tmp_path, location, models=("smollm2",), args=()):
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = Server(str(tmp_path)).start(args=("--location", location, *args))
    for m in models:
        s.cli("base-model", "add", m, "--path", gguf)
    return s


def test_the_catalog_decides_types_per_model_family_and_region(gguf, adapter_dir, tmp_path):
    # Azure's table: gpt-35-turbo fine-tunes on Standard in Sweden Central, not GlobalStandard; gpt-4o-mini
    # provisioned only in North Central US and Switzerland West; Berth's own models in the local region.
    s = region_server(gguf, tmp_path / "sweden", "swedencentral", models=("gpt-35-turbo-0125", "gpt-4o-mini-2024-07-18", "smollm2"))
    try:
        ft = json.loads(s.cli("model", "import", "--base", "gpt-35-turbo-0125", "--adapter", adapter_dir).stdout)["id"]
        status, body, _ = put(s, "ok", ft, "Standard", 1)
        assert status == 201, body
        cases = [
            (ft, "GlobalStandard", 1, "The specified SKU 'GlobalStandard' for model 'gpt-35-turbo-0125' is not supported in this region 'swedencentral'."),
            ("gpt-4o-mini-2024-07-18", "ProvisionedManaged", 25, "The specified SKU 'ProvisionedManaged' for model 'gpt-4o-mini-2024-07-18' is not supported in this region 'swedencentral'."),
            ("smollm2", "Standard", 1, "The specified SKU 'Standard' for model 'smollm2' is not supported in this region 'swedencentral'."),
            ("gpt-35-turbo-0125", "Developer", 1, "The SKU 'Developer' is for fine-tuned models only; 'gpt-35-turbo-0125' is a base model."),
        ]
        for model, sku, cap, message in cases:
            status, body, _ = put(s, "bad", model, sku, cap)
            assert (status, body["error"]["code"], body["error"]["message"]) == (400, "InvalidResourceProperties", message), body
            assert body["error"]["target"] == "sku.name"
    finally:
        s.stop()
    s = region_server(gguf, tmp_path / "nc", "northcentralus", models=("gpt-4o-mini-2024-07-18",))
    try:
        status, body, _ = put(s, "ptu", "gpt-4o-mini-2024-07-18", "ProvisionedManaged", 30)
        assert (status, body["error"]["code"], body["error"]["target"]) == (400, "InvalidResourceProperties", "sku.capacity"), body
        assert "at least 25 PTU, in steps of 25" in body["error"]["message"]
        status, body, _ = put(s, "ptu", "gpt-4o-mini-2024-07-18", "provisionedmanaged", "50")
        assert status == 201 and body["sku"] == {"name": "ProvisionedManaged", "capacity": 50}, body
        status, skus, _ = s.arm("GET", f"{s.account_path}/deployments/ptu/skus")
        assert status == 200
        by_name = {x["sku"]["name"]: x["capacity"] for x in skus["value"]}
        assert set(by_name) == {"Standard", "GlobalStandard", "ProvisionedManaged"}, by_name
        assert by_name["ProvisionedManaged"] == {"minimum": 25, "maximum": 500, "step": 25, "default": 25}
        # Scaling is a PUT with a new capacity; PATCH cannot touch a provisioned SKU.
        assert s.wait_deployment("ptu")["properties"]["provisioningState"] == "Succeeded"
        status, body, _ = put(s, "ptu", "gpt-4o-mini-2024-07-18", "ProvisionedManaged", 75)
        assert status == 200 and body["sku"]["capacity"] == 75 and body["properties"]["provisioningState"] == "Succeeded"
        status, body, _ = put(s, "ptu", None, "ProvisionedManaged", 100, method="PATCH")
        assert status == 400 and body["error"]["code"] == "InvalidResourceProperties" and "with PUT, not PATCH" in body["error"]["message"], (status, body)
    finally:
        s.stop()
    s = region_server(gguf, tmp_path / "fr", "francecentral")
    try:
        ft = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter_dir).stdout)["id"]
        status, body, _ = put(s, "ft", ft)
        assert (status, body["error"]["code"]) == (400, "InvalidResourceProperties")
        assert body["error"]["message"] == f"The region 'francecentral' does not support fine-tuned models; the fine-tuned model '{ft}' cannot be deployed there."
    finally:
        s.stop()


def test_an_operator_catalog_replaces_the_builtin_one(gguf, tmp_path):
    catalog = tmp_path / "catalog.toml"
    base = subprocess.run([berth_bin(), "catalog", "show"], capture_output=True, text=True, check=True).stdout
    assert "[regions.local]" in base and "switzerlandwest" in base
    lab = '[regions.lab]\ndisplay_name = "Lab"\nfine_tuning = true\n\n[regions.local]'
    catalog.write_text(base.replace("[regions.local]", lab).replace('regions = ["local"]', 'regions = ["local", "lab"]').replace("standard_ktpm = 1000", "standard_ktpm = 5"))
    s = region_server(gguf, tmp_path / "lab", "lab", args=("--catalog", str(catalog)))
    try:
        status, body, _ = put(s, "first", "smollm2", "Standard", 5)
        assert status == 201, body
        status, body, _ = put(s, "second", "smollm2", "Standard", 1)
        assert (status, body["error"]["code"]) == (400, "InsufficientQuota"), body
    finally:
        s.stop()
    broken = tmp_path / "broken.toml"
    broken.write_text(base.replace('regions = ["local"]', 'regions = ["atlantis"]'))
    p = subprocess.run(
        [berth_bin(), "serve", "--listen", "127.0.0.1:0", "--catalog", str(broken)],
        env=dict(os.environ, BERTH_DATA_DIR=str(tmp_path / "broken")), capture_output=True, text=True, timeout=60,
    )
    assert p.returncode != 0 and "the catalog offers the unknown region 'atlantis'" in p.stderr, p.stderr


def test_quota_is_per_subscription_region_and_family(fresh_server):
    s = fresh_server
    assert put(s, "big", "smollm2", "Standard", 600)[0] == 201
    status, body, _ = put(s, "more", "smollm2", "GlobalStandard", 500)
    assert (status, body["error"]["code"], body["error"]["target"]) == (400, "InsufficientQuota", "sku.capacity"), body
    assert body["error"]["message"] == (
        "This operation require 500 new capacity in quota Tokens Per Minute (thousands) - local, which is bigger than the current "
        "available capacity 400. The current quota usage is 600 and the quota limit is 1000 for quota Tokens Per Minute (thousands) - local."
    )
    status, usages, _ = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/locations/local/usages")
    assert status == 200
    by_name = {u["name"]["value"]: u for u in usages["value"]}
    assert by_name["OpenAI.Standard.local"]["currentValue"] == 600 and by_name["OpenAI.Standard.local"]["limit"] == 1000
    assert by_name["OpenAI.Standard.local"]["name"]["localizedValue"] == "Tokens Per Minute (thousands) - local"
    assert by_name["OpenAI.ProvisionedManaged.local"]["currentValue"] == 0
    # Provisioned capacity is a separate quota; scaling the first down makes room at once.
    assert put(s, "ptu", "smollm2", "ProvisionedManaged", 3)[0] == 201
    assert put(s, "big", "smollm2", "Standard", 100)[0] == 200
    assert put(s, "more", "smollm2", "GlobalStandard", 500)[0] == 201
    listed = json.loads(s.cli("usage", "list", "-l", "local").stdout)
    assert {u["name"]["value"]: u["currentValue"] for u in listed} == {"OpenAI.Standard.local": 600, "OpenAI.ProvisionedManaged.local": 3}
    status, body, _ = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/locations/atlantis/usages")
    assert status == 404 and body["error"]["code"] == "LocationNotFound"


def chat(s, deployment, max_tokens=8, stream=False, key=None):
    body = {"messages": QUESTION, "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body["stream"] = True
    url = f"{s.url}/openai/deployments/{deployment}/chat/completions?api-version={VERSION}"
    return http.request("POST", url, body=body, headers={"api-key": key or s.keys()["key1"]})


def test_standard_deployments_limit_requests_per_10_seconds_and_tokens_per_minute(fresh_server):
    s = fresh_server
    s.deploy("one", "smollm2", capacity=1)  # 1 request per 10 s, 1,000 tokens per minute
    status, body, headers = chat(s, "one", max_tokens=8)
    assert status == 200, body
    used = body["usage"]["prompt_tokens"] + 8
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert int(headers["x-ratelimit-remaining-tokens"]) == 1000 - used
    status, body, headers = chat(s, "one")
    assert status == 429 and body["error"]["code"] == "429", body
    assert "exceeded the request rate limit of 1 requests per 10 seconds" in body["error"]["message"]
    assert 1 <= int(headers["retry-after"]) <= 10 and 0 < int(headers["retry-after-ms"]) <= 10000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    # A scale applies at the next call, without dropping anything.
    assert put(s, "one", "smollm2", "Standard", 2)[0] == 200
    status, body, headers = chat(s, "one", max_tokens=8)
    assert status == 200, body
    # Every answer of a deployment carries what is left, errors included.
    url = f"{s.url}/openai/deployments/one/chat/completions?api-version={VERSION}"
    status, body, headers = http.request("POST", url, body={"messages": QUESTION, "temperature": 5}, headers={"api-key": s.keys()["key1"]})
    assert status == 400 and "x-ratelimit-remaining-requests" in headers and "x-ratelimit-remaining-tokens" in headers, headers
    # An estimate over the minute's budget can never pass: it says so.
    s.deploy("tiny", "smollm2", capacity=1)
    status, body, headers = chat(s, "tiny", max_tokens=1500)
    assert status == 429 and "lower max_tokens" in body["error"]["message"], body


def test_the_estimate_is_corrected_when_the_call_ends(fresh_server):
    s = fresh_server
    s.deploy("two", "smollm2", capacity=2)  # 2 requests per 10 s, 2,000 tokens per minute
    status, first, h1 = chat(s, "two", max_tokens=900)
    assert status == 200
    charged = first["usage"]["prompt_tokens"] + 900
    assert int(h1["x-ratelimit-remaining-tokens"]) == 2000 - charged
    # The first call used far fewer than 900 tokens: the second is charged against what it used.
    status, second, h2 = chat(s, "two", max_tokens=900, stream=True)
    assert status == 200
    used_first = first["usage"]["total_tokens"]
    assert int(h2["x-ratelimit-remaining-tokens"]) == 2000 - used_first - charged
    assert h2["x-ratelimit-remaining-requests"] == "0"


def test_provisioned_deployments_admit_by_utilisation(fresh_server):
    """Each call is charged prompt + max_tokens while it runs and corrected to its use when it ends:
    sequential short calls never fill the meter, concurrent ones do."""
    s = fresh_server
    s.deploy("ptu", "smollm2", sku="ProvisionedManaged", capacity=1)  # local family: 1,000 tokens per minute per PTU
    for _ in range(5):
        status, body, headers = chat(s, "ptu", max_tokens=300)
        assert status == 200 and headers["azure-openai-deployment-utilization"].endswith("%"), headers
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: chat(s, "ptu", max_tokens=300), range(8)))
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(ok) + len(refused) == 8 and 3 <= len(ok) <= 5 and refused, [r[0] for r in results]
    status, body, headers = refused[0]
    assert "utilisation" in body["error"]["message"], body
    assert int(headers["retry-after-ms"]) > 0 and int(headers["retry-after"]) >= 1
    assert int(headers["azure-openai-deployment-utilization"].rstrip("%")) >= 100
