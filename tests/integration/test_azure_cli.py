"""The Azure CLI, unchanged, against Berth over HTTPS: `az cloud register` pointing at Berth, `az login
--identity` through Berth's managed-identity endpoint (as App Service injects IDENTITY_ENDPOINT and
IDENTITY_HEADER into a workload), then `az cognitiveservices account deployment create|show|list|delete`,
and the refusals the CLI reports for identities without the right role.

The CLI lives in its own virtual environment (it is large and pins its own SDKs); `scripts/test.sh`
installs it and sets BERTH_TEST_AZ to its `az`."""
import json
import os
import subprocess
import time

import pytest
import requests_shim as http
from conftest import Server

CHAT_VERSION = "2024-10-21"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def az_binary():
    path = os.environ.get("BERTH_TEST_AZ")
    if not path:
        pytest.skip("BERTH_TEST_AZ is not set: scripts/test.sh installs the Azure CLI and sets it")
    assert os.path.exists(path), f"BERTH_TEST_AZ={path} does not exist"
    return path


@pytest.fixture
def berth(gguf, tmp_path):
    s = Server(str(tmp_path)).start(args=("--tls-self-signed",))
    status, body, _ = s.arm("POST", "/berth/v1/base-models", {"name": "smollm2", "path": gguf}, api_version=None)
    assert status in (200, 201), body
    yield s
    s.stop()


class Workload:
    """A workload with a managed identity of Berth's, and the Azure CLI configured for Berth's cloud."""

    def __init__(self, server, home, name, role=None, header=None):
        self.az = az_binary()
        status, mi, _ = server.arm("POST", "/berth/v1/principals", {"displayName": name, "kind": "ManagedIdentity"}, api_version=None)
        assert status == 201 and mi["identityEndpoint"].startswith("https://"), mi
        self.object_id = mi["objectId"]
        if role:
            sub = server.creds["subscriptionId"]
            path = f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments/{os.urandom(16).hex()}"
            body = {"properties": {"roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/{role}", "principalId": self.object_id}}
            status, body, _ = server.arm("PUT", path, body, api_version="2022-04-01")
            assert status == 201, body
        self.env = dict(
            os.environ,
            AZURE_CONFIG_DIR=str(home / name),
            AZURE_CORE_COLLECT_TELEMETRY="0",
            AZURE_CORE_NO_COLOR="1",
            REQUESTS_CA_BUNDLE=os.path.join(server.data_dir, "tls", "cert.pem"),
            IDENTITY_ENDPOINT=mi["identityEndpoint"],
            IDENTITY_HEADER=header or mi["identityHeader"],
        )
        url = server.url + "/"
        self.run("cloud", "register", "--name", "Berth", "--skip-endpoint-discovery", "--endpoint-resource-manager", url,
                 "--endpoint-active-directory", url, "--endpoint-active-directory-resource-id", "https://management.core.windows.net/",
                 "--endpoint-active-directory-graph-resource-id", url)
        self.run("cloud", "set", "--name", "Berth")

    def run(self, *args, check=True):
        p = subprocess.run([self.az, *args, "--output", "json"], env=self.env, capture_output=True, text=True, timeout=300)
        if check:
            assert p.returncode == 0, f"az {' '.join(args)} failed ({p.returncode}): {p.stderr}"
        return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None), p.stderr


def test_the_azure_cli_logs_in_with_a_managed_identity_and_manages_deployments(berth, tmp_path):
    s = berth
    rg, account, sub = s.creds["resourceGroup"], s.creds["account"], s.creds["subscriptionId"]
    w = Workload(s, tmp_path, "deployer", role=CONTRIBUTOR)

    _, logged_in, _ = w.run("login", "--identity")
    assert [(x["id"], x["tenantId"], x["user"]["type"]) for x in logged_in] == [(sub, s.creds["tenantId"], "servicePrincipal")]
    _, token, _ = w.run("account", "get-access-token")
    assert token["tenant"] == s.creds["tenantId"] and token["subscription"] == sub

    dep = ("--resource-group", rg, "--name", account, "--deployment-name", "from-cli")
    _, created, _ = w.run("cognitiveservices", "account", "deployment", "create", *dep, "--model-name", "smollm2", "--model-version", "1",
                          "--model-format", "OpenAI", "--sku-name", "Standard", "--sku-capacity", "5")
    # The CLI sends the PUT without polling (polling=False), so it prints the accepted state.
    assert (created["name"], created["sku"]["capacity"], created["properties"]["provisioningState"]) == ("from-cli", 5, "Creating"), created
    assert (created["systemData"]["createdBy"], created["systemData"]["createdByType"]) == (w.object_id, "ManagedIdentity")
    deadline = time.time() + 120
    while (shown := w.run("cognitiveservices", "account", "deployment", "show", *dep)[1])["properties"]["provisioningState"] == "Creating":
        assert time.time() < deadline, shown
        time.sleep(0.5)
    assert shown["properties"]["provisioningState"] == "Succeeded", shown
    assert (shown["properties"]["model"]["name"], shown["sku"]["name"]) == ("smollm2", "Standard")
    _, listed, _ = w.run("cognitiveservices", "account", "deployment", "list", "--resource-group", rg, "--name", account)
    assert [d["name"] for d in listed] == ["from-cli"]

    # The deployment answers with a key the CLI fetched.
    _, keys, _ = w.run("cognitiveservices", "account", "keys", "list", "--resource-group", rg, "--name", account)
    status, answer, _ = http.request(
        "POST", f"{s.url}/openai/deployments/from-cli/chat/completions?api-version={CHAT_VERSION}",
        body={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}, headers={"api-key": keys["key1"]}, context=s.ssl,
    )
    assert status == 200 and answer["usage"]["completion_tokens"] > 0, answer

    w.run("cognitiveservices", "account", "deployment", "delete", *dep)
    assert w.run("cognitiveservices", "account", "deployment", "list", "--resource-group", rg, "--name", account)[1] == []
    rc, _, err = w.run("cognitiveservices", "account", "deployment", "show", *dep, check=False)
    assert rc != 0 and "NotFound" in err, err


def test_the_azure_cli_reports_berth_s_refusals(berth, tmp_path):
    s = berth
    rg, account = s.creds["resourceGroup"], s.creds["account"]
    dep = ("--resource-group", rg, "--name", account, "--deployment-name", "not-allowed")

    # A Reader signs in and reads, but may not deploy.
    reader = Workload(s, tmp_path, "reader", role=READER)
    reader.run("login", "--identity")
    assert reader.run("cognitiveservices", "account", "deployment", "list", "--resource-group", rg, "--name", account)[1] == []
    rc, _, err = reader.run("cognitiveservices", "account", "deployment", "create", *dep, "--model-name", "smollm2", "--model-version", "1",
                            "--model-format", "OpenAI", "--sku-name", "Standard", "--sku-capacity", "5", check=False)
    assert rc != 0 and "AuthorizationFailed" in err, err
    rc, _, err = reader.run("cognitiveservices", "account", "keys", "list", "--resource-group", rg, "--name", account, check=False)
    assert rc != 0 and "AuthorizationFailed" in err, err

    # An identity without any role sees no subscription, so the CLI refuses to sign it in.
    nobody = Workload(s, tmp_path, "nobody")
    rc, _, err = nobody.run("login", "--identity", check=False)
    assert rc != 0 and "no subscriptions were found" in err, err

    # A wrong identity secret gets no token.
    impostor = Workload(s, tmp_path, "impostor", role=CONTRIBUTOR, header="0" * 64)
    rc, _, err = impostor.run("login", "--identity", check=False)
    assert rc != 0 and "X-IDENTITY-HEADER" in err, err
