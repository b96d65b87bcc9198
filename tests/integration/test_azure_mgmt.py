"""`azure-mgmt-cognitiveservices`, unchanged, against Berth over HTTPS (the SDK sends bearer tokens only
over TLS): create, get, list and delete a deployment through its long-running-operation pollers, an
account, keys and quotas."""
import json
import time

import pytest
import requests_shim as http
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, Deployment, DeploymentModel, DeploymentProperties, Sku
from conftest import Server


class BerthToken:
    """A TokenCredential handing out a Berth token (`berth token`)."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3000)


@pytest.fixture
def mgmt(gguf, tmp_path):
    s = Server(str(tmp_path)).start(args=("--tls-self-signed",))
    status, body, _ = s.arm("POST", "/berth/v1/base-models", {"name": "smollm2", "path": gguf}, api_version=None)
    assert status in (200, 201), body
    client = CognitiveServicesManagementClient(
        BerthToken(s.token), s.creds["subscriptionId"], base_url=s.url, connection_verify=str(tmp_path / "tls" / "cert.pem"), polling_interval=0.2
    )
    yield s, client
    s.stop()


def test_the_management_sdk_drives_deployments_accounts_keys_and_quotas(mgmt):
    s, client = mgmt
    rg, account = s.creds["resourceGroup"], s.creds["account"]
    body = Deployment(sku=Sku(name="Standard", capacity=5), properties=DeploymentProperties(model=DeploymentModel(format="OpenAI", name="smollm2", version="1")))
    created = client.deployments.begin_create_or_update(rg, account, "from-sdk", body).result()
    assert created.name == "from-sdk" and created.properties.provisioning_state == "Succeeded"
    got = client.deployments.get(rg, account, "from-sdk")
    assert got.sku.capacity == 5 and got.properties.model.name == "smollm2"
    assert [d.name for d in client.deployments.list(rg, account)] == ["from-sdk"]
    skus = [x.sku.name for x in client.deployments.list_skus(rg, account, "from-sdk")]
    assert "Standard" in skus and "ProvisionedManaged" in skus
    keys = client.accounts.list_keys(rg, account)
    assert keys.key1 and keys.key2
    usages = {u.name.value: (u.current_value, u.limit) for u in client.usages.list("local")}
    assert usages["OpenAI.Standard.local"] == (5.0, 1000.0)
    client.deployments.begin_delete(rg, account, "from-sdk").result()
    assert list(client.deployments.list(rg, account)) == []
    second = client.accounts.begin_create(rg, "from-sdk-account", Account(location="local", kind="OpenAI", sku=Sku(name="S0"))).result()
    assert second.name == "from-sdk-account" and second.properties.provisioning_state == "Succeeded"
    assert {a.name for a in client.accounts.list_by_resource_group(rg)} == {account, "from-sdk-account"}
    client.accounts.begin_delete(rg, "from-sdk-account").result()
    assert {a.name for a in client.accounts.list_by_resource_group(rg)} == {account}


def test_the_management_sdk_deploys_across_subscriptions_and_tenants(gguf, adapter_dir, tmp_path):
    s = Server(str(tmp_path)).start(args=("--tls-self-signed",))
    cert = str(tmp_path / "tls" / "cert.pem")

    def sdk(token, subscription):
        return CognitiveServicesManagementClient(BerthToken(token), subscription, base_url=s.url, connection_verify=cert, polling_interval=0.2)

    def model(**source):
        return Deployment(sku=Sku(name="Standard", capacity=5), properties=DeploymentProperties(model=DeploymentModel(format="OpenAI", name=ft, version="1", **source)))

    try:
        s.cli("base-model", "add", "smollm2", "--path", gguf)
        ft = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter_dir).stdout)["id"]

        # Another subscription of the same tenant: `model.source` names the account the model is in.
        sub2 = s.arm("POST", "/berth/v1/subscriptions", {"displayName": "second"}, api_version=None)[1]["subscriptionId"]
        assert s.arm("PUT", f"/subscriptions/{sub2}/resourceGroups/rg2", {"location": "local"}, api_version="2021-04-01")[0] == 201
        second = sdk(s.token, sub2)
        second.accounts.begin_create("rg2", "second", Account(location="local", kind="OpenAI", sku=Sku(name="S0"))).result()
        with pytest.raises(HttpResponseError) as refused:
            second.deployments.begin_create_or_update("rg2", "second", "copied", model()).result()
        assert refused.value.error.code == "DeploymentModelNotSupported"
        copied = second.deployments.begin_create_or_update("rg2", "second", "copied", model(source=s.account_path)).result()
        assert copied.properties.provisioning_state == "Succeeded" and copied.properties.model.name == ft

        # Another tenant: `model.sourceAccount`, with a token of the source tenant as the auxiliary one.
        other = s.arm("POST", "/berth/v1/tenants", {"displayName": "Other"}, api_version=None)[1]
        other_token = s.arm("POST", "/berth/v1/token", {"tenant": other["tenantId"], "principal": other["admin"]["objectId"]}, api_version=None)[1]["accessToken"]
        sub3 = other["subscriptionId"]
        assert s.arm("PUT", f"/subscriptions/{sub3}/resourceGroups/o-rg", {"location": "local"}, api_version="2021-04-01", token=other_token)[0] == 201
        theirs = sdk(other_token, sub3)
        theirs.accounts.begin_create("o-rg", "theirs", Account(location="local", kind="OpenAI", sku=Sku(name="S0"))).result()
        with pytest.raises(HttpResponseError) as refused:
            theirs.deployments.begin_create_or_update("o-rg", "theirs", "mirror", model(source_account=s.account_path)).result()
        assert refused.value.error.code == "LinkedAuthorizationFailed"
        mirror = theirs.deployments.begin_create_or_update(
            "o-rg", "theirs", "mirror", model(source_account=s.account_path), headers={"x-ms-authorization-auxiliary": f"Bearer {s.token}"}
        ).result()
        assert mirror.properties.provisioning_state == "Succeeded"
        # The other tenant sees only its own subscription and accounts.
        assert [x.name for x in theirs.accounts.list()] == ["theirs"]
        with pytest.raises(HttpResponseError) as refused:
            sdk(other_token, s.creds["subscriptionId"]).deployments.get(s.creds["resourceGroup"], s.creds["account"], "copied")
        assert refused.value.status_code == 403 and refused.value.error.code == "AuthorizationFailed"

        # Each copy answers with its own account's key.
        for client, rg, account, name in [(second, "rg2", "second", "copied"), (theirs, "o-rg", "theirs", "mirror")]:
            key = client.accounts.list_keys(rg, account).key1
            status, body, _ = http.request(
                "POST", f"{s.url}/accounts/{account}/openai/deployments/{name}/chat/completions?api-version=2024-10-21",
                body={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}, headers={"api-key": key}, context=s.ssl,
            )
            assert status == 200 and body["usage"]["completion_tokens"] > 0, body
    finally:
        s.stop()
