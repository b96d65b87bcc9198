#!/usr/bin/env python3
"""Berth beyond one machine (issue 14), on this machine:

1. Admission latency: `target/release/admission` times one rate-limit decision (check and charge,
   and the settle of an admitted call) kept in process (SQLite deployments) and in PostgreSQL (a
   fleet), from 1, 8 and 25 threads against one deployment of capacity 300.
2. Throughput of one replica against two on one PostgreSQL database: 16 clients send short chats
   (max_tokens 16) to a Standard deployment of SmolLM2 for 40 s, all to one replica, then spread over
   two (each replica runs its own engine; on a 2-core machine they share the cores).

    cargo build --release
    python3 bench/fleet.py --postgres postgres://USER:PASSWORD@127.0.0.1:5432/postgres
    python3 bench/fleet.py --render-only
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import requests_shim as http  # noqa: E402
from conftest import Server, model_path  # noqa: E402

RESULTS = os.path.join(HERE, "fleet-results.jsonl")
REPORT = os.path.join(HERE, "fleet.md")
VERSION = "2024-10-21"


def admission(url):
    out = []
    for clients in (1, 8, 25):
        p = subprocess.run(
            [os.path.join(ROOT, "target", "release", "admission"), "--postgres", url, "--clients", str(clients), "--calls", "1000"],
            check=True, capture_output=True, text=True,
        )
        out += [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return out


def throughput(servers, key, clients=16, seconds=40):
    done, lock = [], threading.Lock()
    stop = time.time() + seconds

    def client(i):
        s = servers[i % len(servers)]
        url = f"{s.url}/openai/deployments/chat/chat/completions?api-version={VERSION}"
        while time.time() < stop:
            t = time.time()
            status, body, _ = http.request("POST", url, body={"messages": [{"role": "user", "content": f"Tell me about ship {i}."}], "max_tokens": 16}, headers={"api-key": key}, timeout=300)
            if status == 200:
                with lock:
                    done.append((time.time() - t, body["usage"]["completion_tokens"]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies = sorted(d for d, _ in done)
    return {
        "replicas": len(servers),
        "clients": clients,
        "seconds": seconds,
        "calls_per_s": round(len(done) / seconds, 2),
        "completion_tokens_per_s": round(sum(n for _, n in done) / seconds, 1),
        "p50_s": round(latencies[len(latencies) // 2], 2),
        "p99_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
    }


def new_database(admin, name):
    subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True, capture_output=True)
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return admin.rpartition("/")[0] + "/" + name


def measure(admin):
    record = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(), "admission": admission(new_database(admin, "berth_bench_admission"))}
    url = new_database(admin, "berth_bench_fleet")
    base = tempfile.mkdtemp(prefix="berth-fleet-bench-")
    store, key_file = os.path.join(base, "store"), os.path.join(base, "signing.key")
    os.makedirs(store)
    servers = []
    try:
        for name in ("a", "b"):
            os.makedirs(os.path.join(base, name))
            s = Server(os.path.join(base, name))
            servers.append(s.start(args=("--database", url, "--model-store", store, "--signing-key", key_file, "--replica", name)))
        a, b = servers
        a.cli("base-model", "add", "smollm2", "--path", model_path())
        a.deploy("chat", "smollm2", capacity=1000)
        key = a.keys()["key1"]
        # B loads the deployment by itself; wait until it serves.
        deadline = time.time() + 120
        while http.request("POST", f"{b.url}/openai/deployments/chat/chat/completions?api-version={VERSION}", body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}, headers={"api-key": key})[0] != 200:
            assert time.time() < deadline
            time.sleep(0.5)
        record["throughput"] = [throughput([a], key), throughput([a, b], key)]
    finally:
        for s in servers:
            s.stop()
    with open(RESULTS, "a") as f:
        f.write(json.dumps(record) + "\n")


def render():
    records = [json.loads(l) for l in open(RESULTS) if l.strip()]
    r = records[-1]
    lines = [
        "# Berth beyond one machine",
        "",
        f"`python3 bench/fleet.py --postgres URL` on {r['date']}, {r['cpus']} CPUs, PostgreSQL 15 from Debian on the same machine",
        "(raw records: `fleet-results.jsonl`).",
        "",
        "## Admission latency",
        "",
        "One rate-limit decision for one deployment of capacity 300 (check and charge; for an admitted call also the settle",
        "that corrects its charge to what it used), from threads deciding at once. In process: the one-machine limiter.",
        "PostgreSQL: the fleet's, one transaction with the deployment's row locked (two pipelined round trips, commit without",
        "waiting for the disk).",
        "",
        "| store | threads | decisions | admitted | p50 | p99 | decisions/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a in r["admission"]:
        lines.append(f"| {a['store']} | {a['clients']} | {a['decisions']} | {a['admitted']} | {a['p50_us']} µs | {a['p99_us']} µs | {a['decisions_per_s']:.0f} |")
    if len(records) >= 2:
        before = [a for a in records[-2]["admission"] if a["store"].startswith("PostgreSQL")]
        lines += ["", "The record before this one, when the transaction took four round trips instead of two pipelined ones: "
                  + "; ".join(f"{a['clients']} threads p50 {a['p50_us']} µs, p99 {a['p99_us']} µs" for a in before) + "."]
    lines += [
        "",
        "## One replica against two",
        "",
        "16 clients, short chats (`max_tokens` 16) to one Standard deployment of SmolLM2, for 40 s: all to replica A,",
        "then half to A and half to B (B loaded the deployment itself from the shared database). Both replicas run",
        "on this one 2-core machine, so two engines share the cores that one had: the figure to read is what the",
        "second replica costs, not a speed-up.",
        "",
        "| replicas | calls/s | completion tokens/s | p50 | p99 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for t in r.get("throughput", []):
        lines.append(f"| {t['replicas']} | {t['calls_per_s']} | {t['completion_tokens_per_s']} | {t['p50_s']} s | {t['p99_s']} s |")
    t = r.get("throughput", [])
    if len(t) == 2 and t[0]["calls_per_s"]:
        gain = (t[1]["calls_per_s"] / t[0]["calls_per_s"] - 1) * 100
        lines += [
            "",
            f"Two replicas served {gain:.0f} % more calls than one on the same {r['cpus']} cores. Not measured further; the likely reason: each runs its own engine thread and",
            "batch, and one engine alone leaves the cores partly idle between its steps (tokenising, sampling, HTTP).",
        ]
    open(REPORT, "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", help="an admin URL (a role that may create databases)")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        assert args.postgres, "--postgres is required to measure"
        measure(args.postgres)
    render()
