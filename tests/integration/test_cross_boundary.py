"""Deploying a model from another account: another region and subscription of the same tenant
(`properties.model.source`, the caller's token must read the source), and another tenant
(`properties.model.sourceAccount` with the source tenant's token in `x-ms-authorization-auxiliary`).
The model is copied, so deleting the source account later does not break the deployment."""
import json
import subprocess
import uuid

import requests_shim as http
from conftest import Server, berth_bin

VERSION = "2024-10-21"


def catalog(tmp_path):
    base = subprocess.run([berth_bin(), "catalog", "show"], capture_output=True, text=True, check=True).stdout
    extra = '[regions.westlab]\ndisplay_name = "West Lab"\nfine_tuning = true\n\n[regions.nolab]\ndisplay_name = "No Lab"\nfine_tuning = false\n\n[regions.local]'
    path = tmp_path / "catalog.toml"
    path.write_text(base.replace("[regions.local]", extra).replace('regions = ["local"]', 'regions = ["local", "westlab", "nolab"]'))
    return path


def deploy_body(model, source=None, key="source"):
    m = {"format": "OpenAI", "name": model, "version": "1"}
    if source:
        m[key] = source
    return {"sku": {"name": "Standard", "capacity": 5}, "properties": {"model": m}}


def test_models_deploy_across_regions_subscriptions_and_tenants(gguf, adapter_dir, tmp_path):
    (tmp_path / "data").mkdir()
    s = Server(str(tmp_path / "data")).start(args=("--catalog", str(catalog(tmp_path))))
    try:
        s.cli("base-model", "add", "smollm2", "--path", gguf)
        ft = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter_dir).stdout)["id"]
        source = s.account_path
        # Same tenant, another subscription and region.
        status, sub2, _ = s.arm("POST", "/berth/v1/subscriptions", {"displayName": "second"}, api_version=None)
        assert status == 201, sub2
        rg = f"/subscriptions/{sub2['subscriptionId']}/resourceGroups/west-rg"
        assert s.arm("PUT", rg, {"location": "westlab"}, api_version="2021-04-01")[0] == 201
        west = f"{rg}/providers/Microsoft.CognitiveServices/accounts/west"
        assert s.arm("PUT", west, {"location": "westlab", "kind": "OpenAI", "sku": {"name": "S0"}})[0] == 201
        status, body, _ = s.arm("PUT", f"{west}/deployments/copied", deploy_body(ft))
        assert (status, body["error"]["code"]) == (400, "DeploymentModelNotSupported"), body  # not in the target without a source
        status, body, _ = s.arm("PUT", f"{west}/deployments/copied", deploy_body(ft, source))
        assert status == 201, body
        assert s.wait_deployment_at(west, "copied")["properties"]["provisioningState"] == "Succeeded"
        # A region without fine-tuning refuses.
        assert s.arm("PUT", f"{rg}/providers/Microsoft.CognitiveServices/accounts/nolab", {"location": "nolab"})[0] == 201
        status, body, _ = s.arm("PUT", f"{rg}/providers/Microsoft.CognitiveServices/accounts/nolab/deployments/mirror", deploy_body(ft, source))
        assert (status, body["error"]["code"]) == (400, "InvalidResourceProperties") and "does not support fine-tuned" in body["error"]["message"], body
        # A caller who may write the target but not read the source is refused.
        status, p, _ = s.arm("POST", "/berth/v1/principals", {"displayName": "west-only"}, api_version=None)
        assert s.arm("PUT", f"{west}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                     {"properties": {"roleDefinitionId": "Contributor", "principalId": p["objectId"]}}, api_version="2022-04-01")[0] == 201
        west_only = s.arm("POST", "/berth/v1/token", {"principal": p["objectId"]}, api_version=None)[1]["accessToken"]
        status, body, _ = s.arm("PUT", f"{west}/deployments/denied", deploy_body(ft, source), token=west_only)
        assert (status, body["error"]["code"]) == (403, "AuthorizationFailed"), body

        # Another tenant: its admin deploys from our account with our token as the auxiliary one.
        status, other, _ = s.arm("POST", "/berth/v1/tenants", {"displayName": "Other"}, api_version=None)
        other_token = s.arm("POST", "/berth/v1/token", {"tenant": other["tenantId"], "principal": other["admin"]["objectId"]}, api_version=None)[1]["accessToken"]
        org = f"/subscriptions/{other['subscriptionId']}/resourceGroups/o-rg"
        assert s.arm("PUT", org, {"location": "local"}, api_version="2021-04-01", token=other_token)[0] == 201
        theirs = f"{org}/providers/Microsoft.CognitiveServices/accounts/theirs"
        assert s.arm("PUT", theirs, {"location": "local"}, token=other_token)[0] == 201
        body = deploy_body(ft, source, key="sourceAccount")
        status, resp, _ = s.arm("PUT", f"{theirs}/deployments/mirror", body, token=other_token)
        assert (status, resp["error"]["code"]) == (403, "LinkedAuthorizationFailed"), resp
        status, resp, _ = s.arm("PUT", f"{theirs}/deployments/mirror", body, token=other_token, headers={"x-ms-authorization-auxiliary": f"Bearer {west_only}"})
        assert (status, resp["error"]["code"]) == (403, "LinkedAuthorizationFailed"), resp
        status, resp, _ = s.arm("PUT", f"{theirs}/deployments/mirror", body, token=other_token, headers={"x-ms-authorization-auxiliary": f"Bearer {s.token}"})
        assert status == 201, resp
        assert s.wait_deployment_at(theirs, "mirror", token=other_token)["properties"]["provisioningState"] == "Succeeded"

        # The source account goes; the copies keep answering.
        assert s.arm("DELETE", source)[0] == 200
        for account, path, token in [("west", west, s.token), ("theirs", theirs, other_token)]:
            key = s.arm("POST", path + "/listKeys", token=token)[1]["key1"]
            name = "copied" if account == "west" else "mirror"
            url = f"{s.url}/accounts/{account}/openai/deployments/{name}/chat/completions?api-version={VERSION}"
            status, resp, _ = http.request("POST", url, body={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}, headers={"api-key": key})
            assert status == 200, resp
    finally:
        s.stop()
