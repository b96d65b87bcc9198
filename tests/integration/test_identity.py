"""Identity and access: signed tokens per principal, role assignments at subscription, resource group
and account scope, and the denial rules of both planes (who, what, expected code)."""
import json
import uuid

import pytest
import requests_shim as http

VERSION = "2024-10-21"
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def token_for(s, tenant, principal):
    status, body, _ = s.arm("POST", "/berth/v1/token", {"tenant": tenant, "principal": principal}, api_version=None)
    assert status == 200, body
    return body["accessToken"]


def principal(s, name, tenant=None, token=None):
    body = {"displayName": name} | ({"tenantId": tenant} if tenant else {})
    status, p, _ = s.arm("POST", "/berth/v1/principals", body, api_version=None, token=token)
    assert status == 201, p
    return p["objectId"]


def assign(s, scope, role, who, token=None):
    path = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
    return s.arm("PUT", path, {"properties": {"roleDefinitionId": role, "principalId": who}}, api_version="2022-04-01", token=token)


@pytest.fixture
def world(fresh_server):
    s = fresh_server
    tenant = s.creds["tenantId"]
    acct = s.account_path
    sub = f"/subscriptions/{s.creds['subscriptionId']}"
    rg = f"{sub}/resourceGroups/{s.creds['resourceGroup']}"
    s.deploy("chat", "smollm2", capacity=20)
    people = {name: principal(s, name) for name in ["nobody", "reader", "contributor", "openai-user", "openai-contributor", "rg-owner"]}
    grants = [
        (acct, "Reader", "reader"),
        (rg, "Contributor", "contributor"),
        (acct, "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/5e0bd9bd-7b93-4f28-af87-19fc36ad61bd", "openai-user"),
        (acct, "Cognitive Services OpenAI Contributor", "openai-contributor"),
        (rg, "Owner", "rg-owner"),
    ]
    for scope, role, who in grants:
        status, body, _ = assign(s, scope, role, people[who])
        assert status == 201, body
    tokens = {name: token_for(s, tenant, oid) for name, oid in people.items()}
    status, other, _ = s.arm("POST", "/berth/v1/tenants", {"displayName": "Other"}, api_version=None)
    assert status == 201, other
    tokens["other-tenant-admin"] = token_for(s, other["tenantId"], other["admin"]["objectId"])
    return s, tokens, people, other


def call(s, who_token, method, path, body=None, plane="arm"):
    if plane == "arm":
        return s.arm(method, path, body, token=who_token)
    url = f"{s.url}/accounts/{s.creds['account']}/openai{path}?api-version={VERSION}"
    return http.request(method, url, body=body, headers={"Authorization": f"Bearer {who_token}"})


def test_every_denial_rule(world):
    s, tokens, people, other = world
    acct = s.account_path
    deployment = {"sku": {"name": "Standard", "capacity": 1}, "properties": {"model": {"format": "OpenAI", "name": "smollm2", "version": "1"}}}
    rules = [
        # (who, method, path, body, plane, expected status, expected code or None)
        ("nobody", "GET", acct, None, "arm", 403, "AuthorizationFailed"),
        ("nobody", "POST", "/deployments/chat/chat/completions", CHAT, "data", 401, "PermissionDenied"),
        ("reader", "GET", acct, None, "arm", 200, None),
        ("reader", "GET", acct + "/deployments", None, "arm", 200, None),
        ("reader", "PUT", acct + "/deployments/by-reader", deployment, "arm", 403, "AuthorizationFailed"),
        ("reader", "POST", acct + "/listKeys", None, "arm", 403, "AuthorizationFailed"),
        ("reader", "POST", "/deployments/chat/chat/completions", CHAT, "data", 401, "PermissionDenied"),
        ("contributor", "PUT", acct + "/deployments/by-contributor", deployment, "arm", 201, None),
        ("contributor", "POST", acct + "/listKeys", None, "arm", 200, None),
        ("contributor", "POST", "/deployments/chat/chat/completions", CHAT, "data", 401, "PermissionDenied"),
        ("contributor", "PUT", f"{acct}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
         {"properties": {"roleDefinitionId": "Reader", "principalId": people["nobody"]}}, "arm", 403, "AuthorizationFailed"),
        ("openai-user", "POST", "/deployments/chat/chat/completions", CHAT, "data", 200, None),
        ("openai-user", "GET", "/models", None, "data", 200, None),
        ("openai-user", "GET", "/files", None, "data", 401, "PermissionDenied"),
        ("openai-user", "PUT", acct + "/deployments/by-user", deployment, "arm", 403, "AuthorizationFailed"),
        ("openai-contributor", "GET", "/files", None, "data", 200, None),
        ("openai-contributor", "GET", "/fine_tuning/jobs", None, "data", 200, None),
        ("openai-contributor", "POST", "/deployments/chat/chat/completions", CHAT, "data", 200, None),
        ("openai-contributor", "DELETE", acct + "/deployments/chat", None, "arm", 403, "AuthorizationFailed"),
        ("rg-owner", "PUT", f"{acct}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
         {"properties": {"roleDefinitionId": "Reader", "principalId": people["nobody"]}}, "arm", 201, None),
        ("rg-owner", "PUT", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
         {"properties": {"roleDefinitionId": "Reader", "principalId": people["nobody"]}}, "arm", 403, "AuthorizationFailed"),
        ("other-tenant-admin", "GET", acct, None, "arm", 403, "AuthorizationFailed"),
        ("other-tenant-admin", "POST", "/deployments/chat/chat/completions", CHAT, "data", 401, "401"),
        ("openai-user", "POST", "/berth/v1/base-models", {"name": "x", "path": "/nonexistent"}, "arm", 403, "AuthorizationFailed"),
        ("openai-user", "POST", "/berth/v1/tenants", {"displayName": "Mine"}, "arm", 403, "AuthorizationFailed"),
    ]
    table = []
    for who, method, path, body, plane, status, code in rules:
        if path.startswith("/berth/"):
            got, resp, _ = http.request(method, s.url + path, body=body, headers={"Authorization": f"Bearer {tokens[who]}"})
        else:
            got, resp, _ = call(s, tokens[who], method, path, body, plane)
        got_code = resp["error"]["code"] if isinstance(resp, dict) and "error" in resp else None
        table.append((who, method, path.replace(acct, "{account}"), status, got, got_code))
        assert got == status and (code is None or got_code == code), (who, method, path, resp)
    print("\n".join(f"{w:20} {m:6} {p:70} expected {e} got {g} {c or ''}" for w, m, p, e, g, c in table))


def test_tokens_are_signed_and_expire(world):
    s, tokens, people, other = world
    good = tokens["reader"]
    assert good.count(".") == 2
    header, payload, sig = good.split(".")
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    for bad in [f"{header}.{forged_payload}.{sig}", f"{header}.{payload}.{sig[:-2]}xx", "not-a-token"]:
        status, body, _ = s.arm("GET", s.account_path, token=bad)
        assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationToken"), body
    # Only the operator mints tokens for others.
    status, body, _ = http.request("POST", s.url + "/berth/v1/token", body={"principal": people["contributor"]}, headers={"Authorization": f"Bearer {good}"})
    assert (status, body["error"]["code"]) == (403, "AuthorizationFailed"), body
    status, mine, _ = http.request("POST", s.url + "/berth/v1/token", headers={"Authorization": f"Bearer {good}"})
    assert status == 200 and mine["accessToken"].count(".") == 2


def test_subscriptions_and_listings_show_only_what_a_caller_may_read(world):
    s, tokens, people, other = world
    subs = lambda who: [x["subscriptionId"] for x in s.arm("GET", "/subscriptions", token=tokens[who])[1]["value"]]  # noqa: E731
    assert subs("nobody") == []
    assert subs("reader") == [s.creds["subscriptionId"]]
    assert subs("other-tenant-admin") == [other["subscriptionId"]]
    listing = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/accounts", token=tokens["nobody"])
    assert listing[0] == 200 and listing[1]["value"] == []
    listing = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/accounts", token=tokens["reader"])
    assert [a["name"] for a in listing[1]["value"]] == [s.creds["account"]]
    # Assignments name a principal of the tenant and a known role.
    status, body, _ = assign(s, s.account_path, "Reader", str(uuid.uuid4()))
    assert (status, body["error"]["code"]) == (400, "PrincipalNotFound"), body
    status, body, _ = assign(s, s.account_path, "Wizard", people["nobody"])
    assert (status, body["error"]["code"]) == (400, "RoleDefinitionDoesNotExist"), body
    status, listed, _ = s.arm("GET", f"{s.account_path}/providers/Microsoft.Authorization/roleAssignments", api_version="2022-04-01")
    assert status == 200 and {a["properties"]["roleDefinitionName"] for a in listed["value"]} >= {"Reader", "Cognitive Services OpenAI User", "Owner"}
