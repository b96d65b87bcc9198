"""The ARM management plane over plain HTTP: deployments, long-running provisioning, errors."""
import shutil
import time

from conftest import Server


def test_api_version_is_required_and_checked(server):
    status, body, _ = server.arm("GET", server.account_path + "/deployments", api_version=None)
    assert (status, body["error"]["code"]) == (400, "MissingApiVersionParameter")
    assert body["error"]["message"] == "The api-version query parameter (?api-version=) is required for all requests."
    status, body, _ = server.arm("GET", server.account_path + "/deployments", api_version="yesterday")
    assert (status, body["error"]["code"]) == (400, "InvalidApiVersionParameter")
    for version in ("2024-10-01", "2025-09-01", "2026-05-15-preview"):
        status, body, _ = server.arm("GET", server.account_path + "/deployments", api_version=version)
        assert status == 200, (version, body)


def test_bearer_auth_errors(server):
    import requests_shim as http

    url = f"{server.url}{server.account_path}/deployments?api-version=2024-10-01"
    status, body, _ = http.request("GET", url)
    assert (status, body["error"]["code"]) == (401, "AuthenticationFailed")
    assert body["error"]["message"] == "Authentication failed. The 'Authorization' header is missing."
    status, body, _ = http.request("GET", url, headers={"Authorization": "Bearer not-a-token"})
    assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationToken")
    # The error body always has ARM's full shape.
    assert set(body["error"]) == {"code", "message", "details", "additionalInfo"}


def test_unknown_account_and_deployment_are_404(server):
    status, body, _ = server.arm("GET", server.account_path + "/deployments/nope")
    assert (status, body["error"]["code"]) == (404, "NotFound")
    assert "deployments/nope' cannot be found" in body["error"]["message"]
    other = server.account_path.rsplit("/", 1)[0] + "/missing-account"
    status, body, _ = server.arm("GET", other + "/deployments")
    assert (status, body["error"]["code"]) == (404, "ResourceNotFound")


def test_put_validation_errors(server):
    path = server.account_path + "/deployments/bad"
    model = {"format": "OpenAI", "name": "smollm2", "version": "1"}
    cases = [
        ({"sku": {"name": "Premium", "capacity": 1}, "properties": {"model": model}}, "InvalidResourceProperties", "sku.name"),
        ({"sku": {"name": "Standard", "capacity": 0}, "properties": {"model": model}}, "InvalidResourceProperties", "sku.capacity"),
        ({"properties": {"model": model}}, "InvalidResourceProperties", "sku"),
        ({"sku": {"name": "Standard", "capacity": 1}, "properties": {"model": {**model, "name": "gpt-9"}}}, "DeploymentModelNotSupported", "properties.model"),
        ({"sku": {"name": "Standard", "capacity": 1}, "properties": {}}, "InvalidResourceProperties", "properties.model.name"),
    ]
    for body, code, target in cases:
        status, resp, _ = server.arm("PUT", path, body)
        assert (status, resp["error"]["code"], resp["error"].get("target")) == (400, code, target), resp
    status, resp, _ = server.arm("PUT", path, raw=b"{not json")
    assert (status, resp["error"]["code"]) == (400, "InvalidRequestContent")
    status, resp, _ = server.arm("PUT", server.account_path + "/deployments/-x", {"sku": {"name": "Standard"}, "properties": {"model": model}})
    assert (status, resp["error"]["code"]) == (400, "InvalidResourceName")
    # Provisioned types need a recent api-version.
    status, resp, _ = server.arm("PUT", path, {"sku": {"name": "ProvisionedManaged", "capacity": 25}, "properties": {"model": model}}, api_version="2023-05-01")
    assert (status, resp["error"]["code"]) == (400, "InvalidResourceProperties")
    # Nothing was stored by any of these.
    status, listed, _ = server.arm("GET", server.account_path + "/deployments")
    assert "bad" not in [d["name"] for d in listed["value"]]


def test_deployment_lifecycle_with_async_operation(server):
    name = "life"
    body = {"sku": {"name": "standard", "capacity": "2"}, "properties": {"model": {"format": "OpenAI", "name": "smollm2", "version": "1"}}}
    started = time.time()
    status, created, headers = server.arm("PUT", f"{server.account_path}/deployments/{name}", body)
    assert status == 201, created
    assert created["properties"]["provisioningState"] in ("Accepted", "Creating")
    assert created["sku"] == {"name": "Standard", "capacity": 2}
    assert created["type"] == "Microsoft.CognitiveServices/accounts/deployments"
    assert created["id"] == f"{server.account_path}/deployments/{name}"
    op_url = headers["azure-asyncoperation"]
    assert op_url.startswith(server.url + "/subscriptions/")
    import requests_shim as http

    while True:
        status, op, _ = http.request("GET", op_url, headers={"Authorization": f"Bearer {server.token}"})
        assert status == 200, op
        if op["status"] != "InProgress":
            break
        assert time.time() - started < 120
        time.sleep(0.05)
    assert op["status"] == "Succeeded", op
    assert set(op) >= {"id", "name", "status", "startTime", "endTime"}
    status, got, _ = server.arm("GET", f"{server.account_path}/deployments/{name}")
    assert status == 200 and got["properties"]["provisioningState"] == "Succeeded"
    assert got["properties"]["rateLimits"] == [{"key": "request", "renewalPeriod": 10, "count": 2}, {"key": "token", "renewalPeriod": 60, "count": 2000}]
    assert set(got["systemData"]) == {"createdBy", "createdByType", "createdAt", "lastModifiedBy", "lastModifiedByType", "lastModifiedAt"}
    # A second PUT that only changes capacity applies at once: 200, no new provisioning.
    body["sku"]["capacity"] = 3
    status, updated, headers = server.arm("PUT", f"{server.account_path}/deployments/{name}", body)
    assert status == 200 and updated["properties"]["provisioningState"] == "Succeeded" and updated["sku"]["capacity"] == 3
    assert "azure-asyncoperation" not in headers
    status, listed, _ = server.arm("GET", f"{server.account_path}/deployments")
    assert name in [d["name"] for d in listed["value"]]
    status, _, _ = server.arm("DELETE", f"{server.account_path}/deployments/{name}")
    assert status == 200
    status, _, _ = server.arm("DELETE", f"{server.account_path}/deployments/{name}")
    assert status == 204
    status, _, _ = server.arm("GET", f"{server.account_path}/deployments/{name}")
    assert status == 404


def test_broken_model_files_fail_the_deployment_and_others_keep_serving(fresh_server, gguf, tmp_path):
    s = fresh_server
    assert s.deploy("good", "smollm2")["properties"]["provisioningState"] == "Succeeded"
    # A GGUF cut short: its header reads, its tensors do not.
    broken = tmp_path / "broken.gguf"
    with open(gguf, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read(8_000_000))
    s.cli("base-model", "add", "broken", "--path", str(broken))
    d = s.deploy("bad", "broken")
    assert d["properties"]["provisioningState"] == "Failed"
    assert d["properties"]["error"]["code"] == "ModelLoadFailed"
    assert "could not be loaded" in d["properties"]["error"]["message"]
    from openai import AzureOpenAI

    client = AzureOpenAI(azure_endpoint=s.url, api_key=s.keys()["key1"], api_version="2024-10-21")
    r = client.chat.completions.create(model="good", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0)
    assert r.choices[0].message.content


def test_restart_reloads_succeeded_deployments(fresh_server):
    s = fresh_server
    s.deploy("keep", "smollm2")
    s.stop()
    s2 = Server(s.data_dir)
    s2.port, s2.url = s.port, s.url
    s2.start()
    try:
        status, d, _ = s2.arm("GET", f"{s2.account_path}/deployments/keep")
        assert d["properties"]["provisioningState"] == "Succeeded"
        from openai import AzureOpenAI

        client = AzureOpenAI(azure_endpoint=s2.url, api_key=s2.keys()["key1"], api_version="2024-10-21")
        r = client.chat.completions.create(model="keep", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
        assert r.usage.completion_tokens >= 1
    finally:
        s2.stop()


def test_a_crash_during_provisioning_resumes_it_on_restart(fresh_server):
    s = fresh_server
    created, headers = s.deploy("interrupted", "smollm2", wait=False)
    assert created["properties"]["provisioningState"] in ("Accepted", "Creating")
    s.proc.kill()  # SIGKILL: no shutdown path runs
    s.proc.wait()
    s2 = Server(s.data_dir)
    s2.port, s2.url = s.port, s.url
    s2.start()  # /healthz answers 200 only once interrupted provisioning has finished
    try:
        status, d, _ = s2.arm("GET", f"{s2.account_path}/deployments/interrupted")
        assert d["properties"]["provisioningState"] == "Succeeded", d
        import requests_shim as http

        status, op, _ = http.request("GET", headers["azure-asyncoperation"], headers={"Authorization": f"Bearer {s2.token}"})
        assert op["status"] == "Succeeded" and op["endTime"]
    finally:
        s2.stop()
