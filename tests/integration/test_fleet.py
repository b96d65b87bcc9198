"""Two replicas of Berth on one PostgreSQL database (issue 14): what one is told, the other serves;
fine-tuning survives the replica that ran it; rate limits hold across the fleet.

Each replica has a data directory of its own and shares the database (BERTH_DATABASE_URL), the model
store (--model-store) and the token-signing key (--signing-key), as docs/scale-out.md runs them."""
import json
import os
import subprocess
import threading
import time

import pytest
import requests_shim as http
from conftest import OPENAI_VERSION, ROOT, Server, new_database
from openai import AzureOpenAI

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def replica(base, name, url, store, key, *args):
    data = base / name
    data.mkdir(exist_ok=True)
    s = Server(str(data))
    s.fleet_args = ("--database", url, "--model-store", str(store), "--signing-key", str(key), "--replica", name, *args)
    return s.start(args=s.fleet_args)


@pytest.fixture(scope="module")
def fleet(gguf, tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    url = new_database(f"berth_fleet_{os.getpid()}")
    store, key = base / "model-store", base / "signing.key"
    store.mkdir()
    a = replica(base, "a", url, store, key)
    b = replica(base, "b", url, store, key)
    a.cli("base-model", "add", "smollm2", "--path", gguf)
    a.fleet = (base, url, store, key)
    yield a, b
    for s in (a, b):
        s.stop()


def chat(s, deployment, key, max_tokens=10):
    url = f"{s.url}/openai/deployments/{deployment}/chat/completions?api-version={OPENAI_VERSION}"
    return http.request("POST", url, body={"messages": QUESTION, "max_tokens": max_tokens, "temperature": 0}, headers={"api-key": key})


def until(check, timeout=60, every=0.2):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, "timed out"
        time.sleep(every)


def test_what_one_replica_is_told_the_other_serves(fleet):
    a, b = fleet
    assert a.creds["subscriptionId"] == b.creds["subscriptionId"] and a.creds["account"] == b.creds["account"]
    key = a.keys()["key1"]
    assert b.keys()["key1"] == key, "keys are sealed under the shared signing key"
    # A token minted by one replica is valid on the other.
    assert b.arm("GET", a.account_path, token=a.token)[0] == 200

    # Created through A: B answers 503 with retry-after while it loads, then serves it.
    assert a.deploy("chat", "smollm2", capacity=10)["properties"]["provisioningState"] == "Succeeded"
    seen = []

    def served_by_b():
        status, body, headers = chat(b, "chat", key)
        seen.append(status)
        if status == 503:
            assert headers.get("retry-after") and body["error"]["code"] == "ServiceUnavailable", (headers, body)
        return status == 200 and (body, headers)

    body, headers = until(served_by_b)
    assert set(seen) <= {200, 503}, seen
    assert headers["x-berth-replica"] == "b" and "Paris" in body["choices"][0]["message"]["content"]
    status, body_a, headers_a = chat(a, "chat", key)
    assert status == 200 and headers_a["x-berth-replica"] == "a"
    assert body_a["choices"][0]["message"]["content"] == body["choices"][0]["message"]["content"]

    # Scaled through B: the limits change on A (both replicas count against the one deployment).
    status, scaled, _ = b.arm("PUT", f"{b.account_path}/deployments/chat", {"sku": {"name": "Standard", "capacity": 3}, "properties": {"model": {"format": "OpenAI", "name": "smollm2", "version": "1"}}})
    assert status == 200 and scaled["sku"]["capacity"] == 3, scaled
    time.sleep(10)  # let the earlier calls leave the 10-second window
    remaining = []
    for s in (a, b, a):
        status, _, h = chat(s, "chat", key)
        assert status == 200
        remaining.append(int(h["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0], remaining
    status, body, h = chat(b, "chat", key)
    assert status == 429 and int(h["retry-after"]) >= 1, (status, body)

    # The last hour, minute by minute, counts both replicas' calls and refusals.
    status, hour, _ = a.arm("GET", f"{a.account_path}/deployments/chat/lastHour")
    assert status == 200 and len(hour["value"]) == 60, hour
    assert sum(p["requests"] for p in hour["value"]) == 5 and sum(p["rateLimited"] for p in hour["value"]) == 1, hour
    assert hour["value"][-1]["timeToFirstTokenP50Ms"] or hour["value"][-2]["timeToFirstTokenP50Ms"], hour

    # Keys regenerated on B fail on A at once.
    status, fresh, _ = b.arm("POST", b.account_path + "/regenerateKey", {"keyName": "Key1"})
    assert status == 200
    models = f"/openai/models?api-version={OPENAI_VERSION}"
    assert http.request("GET", a.url + models, headers={"api-key": key})[0] == 401
    assert http.request("GET", a.url + models, headers={"api-key": fresh["key1"]})[0] == 200

    # Deleted through A: B answers DeploymentNotFound.
    assert a.arm("DELETE", f"{a.account_path}/deployments/chat")[0] in (200, 204)
    status, body, _ = chat(b, "chat", fresh["key1"])
    assert status == 404 and body["error"]["code"] == "DeploymentNotFound", body
    # ... and B unloads it within a few seconds (the engine goes when no deployment uses it).
    until(lambda: "berth_engine_running_sequences{" not in metrics(b), timeout=20)


def metrics(s):
    status, body, _ = http.request("GET", s.url + "/metrics", headers={"Authorization": f"Bearer {s.token}"})
    assert status == 200
    return body if isinstance(body, str) else json.dumps(body)


def lease_holder(url, name):
    out = subprocess.run(["psql", url, "-Atc", f"SELECT holder FROM leases WHERE name = '{name}'"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_job_whose_replica_dies_finishes_on_the_other(fleet):
    a, b = fleet
    base, url, store, key = a.fleet
    client = AzureOpenAI(azure_endpoint=a.url, api_key=a.keys()["key1"], api_version=OPENAI_VERSION, max_retries=0)
    lines = (ROOT / "data" / "fine-tuning" / "pirate-train.jsonl").read_text().splitlines(keepends=True)[:8]
    small = base / "eight.jsonl"
    small.write_text("".join(lines))
    with open(small, "rb") as f:
        file = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="smollm2", training_file=file.id, hyperparameters={"n_epochs": 2, "batch_size": 4})
    # Whichever replica claimed it: kill that one once the job has a checkpoint.
    runner = until(lambda: lease_holder(url, f"job:{job.id}"), timeout=60)
    until(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, timeout=300, every=0.5)
    dying, other = (a, b) if runner == "a" else (b, a)
    dying.proc.kill()
    dying.proc.wait()
    survivor = AzureOpenAI(azure_endpoint=other.url, api_key=other.keys()["key1"], api_version=OPENAI_VERSION, max_retries=0)
    done = until(lambda: (j := survivor.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j, timeout=400, every=1)
    assert done.status == "succeeded", done.error
    assert lease_holder(url, f"job:{job.id}") == "", "a finished job's lease is given up"
    messages = [e.message for e in survivor.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("replica running the job stopped" in m for m in messages), messages
    assert [cp.step_number for cp in survivor.fine_tuning.jobs.checkpoints.list(job.id).data] == [4, 2]
    # The killed replica comes back, in the fleet again.
    dying.start(args=dying.fleet_args)
    assert dying.keys()["key1"] == other.keys()["key1"]


def test_a_provisioning_whose_replica_freezes_is_finished_by_the_other(fleet):
    """A PUT through A, and A frozen (SIGSTOP) before it finished loading: B takes the operation over
    once A's lease lapses, and the deployment ends Succeeded and serves."""
    import signal

    a, b = fleet
    key = a.keys()["key1"]
    for attempt in range(5):
        name = f"frozen{attempt}"
        body = {"sku": {"name": "Standard", "capacity": 5}, "properties": {"model": {"format": "OpenAI", "name": "smollm2", "version": "1"}}}
        status, created, _ = a.arm("PUT", f"{a.account_path}/deployments/{name}", body)
        assert status == 201, created
        a.proc.send_signal(signal.SIGSTOP)
        try:
            state = b.arm("GET", f"{b.account_path}/deployments/{name}")[1]["properties"]["provisioningState"]
            if state == "Succeeded":
                continue  # A finished before it froze: try again
            started = time.time()
            done = b.wait_deployment_at(b.account_path, name, timeout=120)
            took = time.time() - started
        finally:
            a.proc.send_signal(signal.SIGCONT)
        assert done["properties"]["provisioningState"] == "Succeeded", done
        assert took > 10, f"B took over after {took:.0f} s: before A's lease could lapse"
        status, _, headers = chat(b, name, key)
        assert status == 200 and headers["x-berth-replica"] == "b"
        assert a.arm("DELETE", f"{a.account_path}/deployments/{name}")[0] in (200, 204)
        return
    pytest.fail("A finished provisioning before it could be frozen, five times")


def test_a_rate_limit_holds_across_the_fleet(fleet):
    """2 replicas x 25 clients for 30 s against capacity 1 (1 request per 10 s): at most one call is
    admitted in any 10 seconds, summed over both replicas."""
    a, b = fleet
    key = a.keys()["key1"]
    assert a.deploy("limited", "smollm2", capacity=1)["properties"]["provisioningState"] == "Succeeded"
    until(lambda: chat(b, "limited", key, max_tokens=1)[0] in (200, 429))
    time.sleep(10.5)  # the probe's admission leaves the window
    admitted, refused, lock = [], [], threading.Lock()
    stop = time.time() + 30

    def client(s):
        while time.time() < stop:
            sent = time.time()
            status, _, headers = chat(s, "limited", key, max_tokens=1)
            with lock:
                if status == 200:
                    admitted.append((sent, time.time(), headers["x-berth-replica"]))
                else:
                    assert status == 429, status
                    refused.append(float(headers["retry-after-ms"]))
            if status == 429:
                time.sleep(min(float(headers["retry-after-ms"]) / 1000, 0.5))

    threads = [threading.Thread(target=client, args=(s,)) for s in (a, b) for _ in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted.sort()
    # An admission happens between a call's send and its answer: two admissions less than 10 s apart
    # would show as answers less than 10 s after the other's send.
    for first, second in zip(admitted, admitted[1:]):
        assert second[1] - first[0] >= 10.0, (first, second)
    assert 3 <= len(admitted) <= 4, admitted
    assert len(refused) > 100 and all(ms > 0 for ms in refused)
    print(f"admitted {len(admitted)} of {len(admitted) + len(refused)} calls; by replica {[r for _, _, r in admitted]}")


def test_a_sqlite_data_directory_moves_into_postgres_losing_nothing(gguf, tmp_path):
    """`berth db migrate-to`: deployments, keys, tokens, files, jobs and metering of a one-machine Berth
    are all there when it serves again from PostgreSQL."""
    (tmp_path / "data").mkdir()
    s = Server(str(tmp_path / "data")).start()
    try:
        s.cli("base-model", "add", "smollm2", "--path", gguf)
        s.deploy("chat", "smollm2", capacity=5)
        keys = s.keys()
        status, first, _ = chat(s, "chat", keys["key1"])
        assert status == 200
        client = AzureOpenAI(azure_endpoint=s.url, api_key=keys["key1"], api_version=OPENAI_VERSION, max_retries=0)
        lines = (ROOT / "data" / "fine-tuning" / "pirate-train.jsonl").read_text().splitlines(keepends=True)[:8]
        (tmp_path / "eight.jsonl").write_text("".join(lines))
        with open(tmp_path / "eight.jsonl", "rb") as f:
            file = client.files.create(file=f, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="smollm2", training_file=file.id, hyperparameters={"n_epochs": 1, "batch_size": 8})
        client.fine_tuning.jobs.cancel(job.id)
        before = {
            "deployment": s.arm("GET", f"{s.account_path}/deployments/chat")[1],
            "usage": s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/locations/local/usages")[1],
            "events": [e.message for e in client.fine_tuning.jobs.list_events(job.id).data],
        }
    finally:
        s.stop()
    url = new_database(f"berth_migrate_{os.getpid()}")
    out = s.cli("db", "migrate-to", url)
    copied = json.loads(out.stdout)["copied"]
    assert copied["deployments"] == 1 and copied["files"] == 1 and copied["fine_tuning_jobs"] == 1 and copied["usage_hourly"] == 1, copied
    # A second copy is refused: the database is no longer empty.
    again = s.cli("db", "migrate-to", url, check=False)
    assert again.returncode != 0 and "not empty" in again.stderr
    s.start(args=("--database", url))
    try:
        assert s.keys() == keys, "sealed keys read back under the same signing key"
        assert s.arm("GET", f"{s.account_path}/deployments/chat")[1] == before["deployment"]
        status, body, _ = chat(s, "chat", keys["key1"])
        assert status == 200 and body["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
        client = AzureOpenAI(azure_endpoint=s.url, api_key=keys["key1"], api_version=OPENAI_VERSION, max_retries=0)
        assert client.files.retrieve(file.id).filename == "eight.jsonl"
        assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
        # (The runner may have written one more event between the snapshot and the stop.)
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
        assert "Job cancelled." in events and set(before["events"]) <= set(events), (before["events"], events)
        usage = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/locations/local/usages")[1]
        assert usage == before["usage"]
        start = "2020-01-01T00:00:00Z"
        status, report, _ = s.arm("GET", f"/subscriptions/{s.creds['subscriptionId']}/providers/Microsoft.CognitiveServices/costs?from={start}&to=2100-01-01T00:00:00Z")
        assert status == 200 and [l["requests"] for l in report["value"] if l["deployment"] == "chat"] == [2], report
        # The admin token minted on SQLite is valid on PostgreSQL.
        assert s.arm("GET", s.account_path)[0] == 200
    finally:
        s.stop()
