"""`azure-mgmt-cognitiveservices`, unchanged, against Berth over HTTPS (the SDK sends bearer tokens only
over TLS): create, get, list and delete a deployment through its long-running-operation pollers, an
account, keys and quotas."""
import time

import pytest
from azure.core.credentials import AccessToken
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
