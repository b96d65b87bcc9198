"""The exact CLI commands of the walking skeleton, against a real server."""
import json


def test_cli_account_keys_models_and_deployments(fresh_server, adapter_dir):
    s = fresh_server
    account = json.loads(s.cli("account", "show").stdout)
    for field in ("name", "resourceGroup", "subscriptionId", "tenantId", "location", "endpoint"):
        assert account[field], field
    rg, name = account["resourceGroup"], account["name"]
    keys = json.loads(s.cli("account", "keys", "list").stdout)
    assert set(keys) == {"key1", "key2"} and keys["key1"] != keys["key2"]
    bases = json.loads(s.cli("base-model", "list").stdout)
    assert [b["name"] for b in bases] == ["smollm2"] and bases[0]["architecture"] == "llama"
    imported = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter_dir, "-g", rg, "-n", name).stdout)
    assert imported["id"].startswith("smollm2.ft-") and len(imported["id"].split(".ft-")[1]) == 32
    listed = json.loads(s.cli("model", "list", "-g", rg, "-n", name).stdout)
    assert imported["id"] in [m["name"] for m in listed]
    p = s.cli("deployment", "create", "-g", rg, "-n", name, "--deployment-name", "ft", "--model-name", imported["id"],
              "--model-version", "1", "--model-format", "OpenAI", "--sku-name", "Standard", "--sku-capacity", "1")
    assert json.loads(p.stdout)["properties"]["provisioningState"] == "Succeeded"
    assert "provisioning Succeeded" in p.stderr
    shown = json.loads(s.cli("deployment", "show", "-g", rg, "-n", name, "--deployment-name", "ft").stdout)
    assert shown["properties"]["model"]["name"] == imported["id"]
    assert [d["name"] for d in json.loads(s.cli("deployment", "list", "-g", rg, "-n", name).stdout)] == ["ft"]
    chat = s.cli("chat", "--deployment", "ft", "--temperature", "0", "--max-tokens", "8", "Hello!")
    assert chat.stdout.strip() and "completion tokens" in chat.stderr
    s.cli("deployment", "delete", "-g", rg, "-n", name, "--deployment-name", "ft")
    assert json.loads(s.cli("deployment", "list", "-g", rg, "-n", name).stdout) == []


def test_cli_reports_errors(fresh_server, tmp_path):
    s = fresh_server
    p = s.cli("deployment", "create", "--deployment-name", "xy", "--model-name", "nope", check=False)
    assert p.returncode != 0 and "DeploymentModelNotSupported" in p.stderr
    (tmp_path / "adapter_config.json").write_text("{}")
    p = s.cli("model", "import", "--base", "smollm2", "--adapter", str(tmp_path), check=False)
    assert p.returncode != 0 and "InvalidAdapter" in p.stderr
