"""Resource groups and accounts through the management plane: create, read, list, keys and their
regeneration, the checks on names, regions and moves, and deletion that refuses to lose anything."""
import hashlib
import os

import requests_shim as http

VERSION = "2024-10-21"


def test_accounts_are_created_read_listed_rekeyed_and_deleted(fresh_server, gguf):
    s = fresh_server
    sub = s.creds["subscriptionId"]
    rg_path = f"/subscriptions/{sub}/resourcegroups/team-rg"
    status, body, _ = s.arm("PUT", rg_path, {"location": "local"}, api_version="2021-04-01")
    assert status == 201 and body["id"] == f"/subscriptions/{sub}/resourceGroups/team-rg", body
    assert s.arm("PUT", rg_path, {"location": "local"}, api_version="2021-04-01")[0] == 200
    acct = f"/subscriptions/{sub}/resourceGroups/team-rg/providers/Microsoft.CognitiveServices/accounts/team"
    status, body, _ = s.arm("PUT", acct, {"location": "Local", "kind": "OpenAI", "sku": {"name": "S0"}})
    assert status == 201, body
    assert (body["name"], body["location"], body["kind"], body["properties"]["provisioningState"]) == ("team", "local", "OpenAI", "Succeeded")
    assert body["properties"]["endpoint"].endswith("/accounts/team/")
    assert s.arm("PUT", acct, {"location": "local", "kind": "OpenAI", "sku": {"name": "S0"}})[0] == 200
    assert s.arm("GET", acct)[1]["id"] == acct
    listed = s.arm("GET", f"/subscriptions/{sub}/resourceGroups/team-rg/providers/Microsoft.CognitiveServices/accounts")[1]["value"]
    assert [a["name"] for a in listed] == ["team"]
    in_sub = s.arm("GET", f"/subscriptions/{sub}/providers/Microsoft.CognitiveServices/accounts")[1]["value"]
    assert {a["name"] for a in in_sub} == {s.creds["account"], "team"}

    # Its keys work on its own endpoint, not on another account's; a regenerated key replaces the old one.
    keys = s.arm("POST", acct + "/listKeys")[1]
    models = f"{s.url}/accounts/team/openai/models?api-version={VERSION}"
    assert http.request("GET", models, headers={"api-key": keys["key1"]})[0] == 200
    assert http.request("GET", f"{s.url}/accounts/{s.creds['account']}/openai/models?api-version={VERSION}", headers={"api-key": keys["key1"]})[0] == 401
    status, fresh, _ = s.arm("POST", acct + "/regenerateKey", {"keyName": "Key1"})
    assert status == 200 and fresh["key1"] != keys["key1"] and fresh["key2"] == keys["key2"], fresh
    assert http.request("GET", models, headers={"api-key": keys["key1"]})[0] == 401
    assert http.request("GET", models, headers={"api-key": fresh["key1"]})[0] == 200
    status, body, _ = s.arm("POST", acct + "/regenerateKey", {"keyName": "Key3"})
    assert (status, body["error"]["code"]) == (400, "InvalidKeyName")

    # At rest the database holds digests and sealed copies, never a key or the admin token itself.
    at_rest = s.database_bytes()
    for secret in (fresh["key1"], fresh["key2"], s.creds["adminToken"]):
        assert secret.encode() not in at_rest
    assert hashlib.sha256(fresh["key1"].encode()).hexdigest().encode() in at_rest

    # Deployments live in the account; deleting it is refused while it has any.
    status, body, _ = s.arm("PUT", acct + "/deployments/chat", {"sku": {"name": "Standard", "capacity": 5}, "properties": {"model": {"format": "OpenAI", "name": "smollm2", "version": "1"}}})
    assert status == 201, body
    status, body, _ = s.arm("DELETE", acct)
    assert (status, body["error"]["code"]) == (409, "Conflict") and "chat" in body["error"]["message"], body
    status, body, _ = s.arm("DELETE", rg_path, api_version="2021-04-01")
    assert (status, body["error"]["code"]) == (409, "Conflict") and "team" in body["error"]["message"], body
    assert s.arm("DELETE", acct + "/deployments/chat")[0] == 200
    assert s.arm("DELETE", acct)[0] == 200
    assert s.arm("GET", acct)[0] == 404
    assert s.arm("DELETE", acct)[0] == 204
    assert http.request("GET", models, headers={"api-key": fresh["key1"]})[0] == 401
    assert s.arm("DELETE", rg_path, api_version="2021-04-01")[0] == 200
    assert s.arm("GET", rg_path, api_version="2021-04-01")[0] == 404


def test_account_requests_are_checked(fresh_server):
    s = fresh_server
    sub = s.creds["subscriptionId"]
    base = f"/subscriptions/{sub}/resourceGroups/{s.creds['resourceGroup']}/providers/Microsoft.CognitiveServices/accounts"
    cases = [
        (f"{base}/x", {"location": "local"}, 400, "InvalidResourceName"),
        (f"{base}/ok-name", {}, 400, "LocationRequired"),
        (f"{base}/ok-name", {"location": "atlantis"}, 400, "LocationNotAvailableForResourceType"),
        (f"{base}/ok-name", {"location": "local", "kind": "Speech"}, 400, "InvalidKind"),
        (f"/subscriptions/{sub}/resourceGroups/nope/providers/Microsoft.CognitiveServices/accounts/ok-name", {"location": "local"}, 404, "ResourceGroupNotFound"),
        (f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/ok-name", {"location": "local"}, 404, "SubscriptionNotFound"),
        (f"{base}/{s.creds['account']}", {"location": "swedencentral"}, 400, "InvalidResourceLocation"),
    ]
    for path, body, status, code in cases:
        got, resp, _ = s.arm("PUT", path, body)
        assert (got, resp["error"]["code"]) == (status, code), (path, body, resp)
    status, resp, _ = s.arm("PUT", f"{base}/ok-name", raw=b"{nope")
    assert (status, resp["error"]["code"]) == (400, "InvalidRequestContent")
    status, resp, _ = s.arm("GET", f"{base}/ok-name")
    assert (status, resp["error"]["code"]) == (404, "ResourceNotFound")
