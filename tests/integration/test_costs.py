"""Metering, the cost report and idle deletion, on a server whose clock the test moves
(`--test-clock`): hosting hours of deployed fine-tunes, token charges by kind, Developer deployments'
end after 24 hours, and deletion after 15 idle days, the model kept."""
import json
from datetime import datetime, timedelta, timezone

import pytest
from conftest import Server
from test_capacity import chat

# The built-in price sheet's `local` family.
HOSTING, INPUT, CACHED, OUTPUT = 0.10, 0.05, 0.025, 0.20


@pytest.fixture
def clocked(gguf, tmp_path):
    s = Server(str(tmp_path)).start(args=("--test-clock", "--idle-sweep-seconds", "3600"))
    s.cli("base-model", "add", "smollm2", "--path", gguf)
    yield s
    s.stop()


def advance(s, seconds):
    status, body, _ = s.arm("POST", "/berth/v1/clock", {"advanceSeconds": seconds}, api_version=None)
    assert status == 200, body
    return body


def report(s, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    status, body, _ = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/costs?{q}")
    assert status == 200, body
    return body


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_hosting_hours_and_tokens_are_charged_by_the_price_sheet(clocked, adapter_dir):
    s = clocked
    ft = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter_dir).stdout)["id"]
    start = datetime.now(timezone.utc) - timedelta(minutes=1)
    s.deploy("ft", ft)
    s.deploy("base", "smollm2")
    s.deploy("dev", ft, sku="Developer", capacity=1)
    usages = []
    for _ in range(2):
        status, body, _ = chat(s, "ft", max_tokens=8)
        assert status == 200
        usages.append(body["usage"])
    moved = advance(s, 2 * 3600)
    assert moved["deleted"] == []
    now = datetime.fromisoformat(moved["now"].replace("Z", "+00:00"))
    r = report(s, **{"from": iso(start), "to": iso(now + timedelta(minutes=1))})
    assert r["currency"] == "USD"
    lines = {l["deployment"]: l for l in r["value"]}
    assert set(lines) == {"ft", "base", "dev"}, lines
    ft_line = lines["ft"]
    assert 2.0 <= ft_line["hostingHours"] < 2.05, ft_line
    assert ft_line["hostingCost"] == pytest.approx(ft_line["hostingHours"] * HOSTING)
    prompt = sum(u["prompt_tokens"] for u in usages)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    output = sum(u["completion_tokens"] for u in usages)
    assert (ft_line["requests"], ft_line["inputTokens"], ft_line["cachedInputTokens"], ft_line["outputTokens"]) == (2, prompt, cached, output)
    assert cached > 0, "the second identical prompt reuses the first's prefix"
    expected_tokens = ((prompt - cached) * INPUT + cached * CACHED + output * OUTPUT) / 1e6
    assert ft_line["tokenCost"] == pytest.approx(expected_tokens)
    assert ft_line["totalCost"] == pytest.approx(ft_line["hostingCost"] + expected_tokens)
    # Base models and Developer deployments pay no hosting; they are hosted all the same.
    assert lines["base"]["hostingCost"] == 0 and lines["base"]["hostingHours"] >= 2.0
    assert lines["dev"]["hostingCost"] == 0 and lines["dev"]["sku"] == "Developer"
    assert r["totalCost"] == pytest.approx(sum(l["totalCost"] for l in r["value"]))
    # Scoped to one deployment, through the CLI.
    only = json.loads(s.cli("cost", "show", "--deployment-name", "ft", "--from", iso(start), "--to", iso(now + timedelta(minutes=1))).stdout)
    assert [l["deployment"] for l in only["value"]] == ["ft"]
    # A deleted deployment stops paying; its model stays (storage is free).
    status, _, _ = s.arm("DELETE", f"{s.account_path}/deployments/ft")
    assert status == 200
    later = datetime.fromisoformat(advance(s, 3 * 3600)["now"].replace("Z", "+00:00"))
    r = report(s, **{"from": iso(start), "to": iso(later)})
    ft_after = {l["deployment"]: l for l in r["value"]}["ft"]
    assert ft_after["hostingHours"] == pytest.approx(ft_line["hostingHours"], abs=0.02)
    assert ft in [m["name"] for m in s.arm("GET", s.account_path + "/models")[1]["value"]]
    # Bad periods are refused in the management plane's shape.
    status, body, _ = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/costs?from=yesterday")
    assert (status, body["error"]["code"]) == (400, "InvalidTimeRange"), body


def test_idle_and_developer_deployments_are_deleted_and_the_model_stays(clocked, adapter_dir):
    s = clocked
    ft = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter_dir).stdout)["id"]
    s.deploy("quiet", ft)
    s.deploy("busy", "smollm2")
    s.deploy("dev", ft, sku="Developer", capacity=1)
    assert chat(s, "busy")[0] == 200

    # Each deployment shows when it will go if nothing changes.
    def times(name):
        d = s.arm("GET", f"{s.account_path}/deployments/{name}")[1]
        parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))
        return parse(d["systemData"]["createdAt"]), parse(d["properties"]["scheduledDeletionTime"])

    for name, lifetime in [("dev", timedelta(hours=24)), ("quiet", timedelta(days=15))]:
        created, scheduled = times(name)
        assert abs(scheduled - created - lifetime) < timedelta(seconds=2), (name, created, scheduled)
    assert advance(s, 23 * 3600)["deleted"] == []
    assert advance(s, 3600)["deleted"] == ["dev"]  # 24 hours after it was deployed
    assert advance(s, 9 * 86400)["deleted"] == []  # 10 days
    assert chat(s, "busy")[0] == 200  # a call on day 10
    assert times("busy")[1] - times("quiet")[1] > timedelta(days=9)  # the call moved busy's date
    assert advance(s, 5 * 86400 - 60)["deleted"] == []  # a minute short of 15 days
    assert advance(s, 86400 + 60)["deleted"] == ["quiet"]  # 16 days without a call; busy was called 6 days ago
    status, listed, _ = s.arm("GET", s.account_path + "/deployments")
    assert [d["name"] for d in listed["value"]] == ["busy"]
    status, deletions, _ = s.arm("GET", s.account_path + "/deploymentDeletions")
    assert [(d["name"], d["model"]) for d in deletions["value"]] == [("dev", ft), ("quiet", ft)]
    assert deletions["value"][0]["reason"] == "Developer deployments end 24 hours after they are deployed."
    assert deletions["value"][1]["reason"] == "No completions or chat completions call for 15 consecutive days."
    # The model stays and deploys again.
    assert s.deploy("quiet", ft)["properties"]["provisioningState"] == "Succeeded"
    assert chat(s, "quiet")[0] == 200
    assert advance(s, 16 * 86400)["deleted"] == ["busy", "quiet"]


def test_the_clock_moves_only_on_a_test_server(fresh_server):
    status, body, _ = fresh_server.arm("POST", "/berth/v1/clock", {"advanceSeconds": 60}, api_version=None)
    assert status == 404 and "--test-clock" in body["error"]["message"]
