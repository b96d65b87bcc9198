#!/usr/bin/env python3
"""Rate limits and provisioned latency, through the real server:

1. 50 concurrent clients call a Standard deployment of capacity 1 (1,000 tokens and 6 requests per
   minute, at most 1 request in any 10 s) for one minute, each retrying after the `retry-after-ms` a
   429 gives. Recorded: accepted calls and tokens, the most tokens charged (estimates at admission) and
   served in any 60 s and the most calls admitted in any 10 s, and whether every 429 carried a usable
   `retry-after` / `retry-after-ms`.
2. A ProvisionedManaged deployment on the same base model: p50/p99 latency of short chats alone, then
   while 32 clients overload a Standard deployment of large capacity on the same base.

    cargo build --release
    python3 bench/rate_limits.py     # appends bench/rate-limits-results.jsonl, renders bench/rate_limits.md
    python3 bench/rate_limits.py --render-only
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
from conftest import Server  # noqa: E402

RESULTS = os.path.join(HERE, "rate-limits-results.jsonl")
REPORT = os.path.join(HERE, "rate_limits.md")
VERSION = "2024-10-21"
PROMPTS = ["Tell me about the sea.", "Describe a lighthouse.", "Write about a ship.", "What do sailors eat?", "Describe a storm."]


def chat(s, key, deployment, content, max_tokens):
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0.7}
    url = f"{s.url}/openai/deployments/{deployment}/chat/completions?api-version={VERSION}"
    return http.request("POST", url, body=body, headers={"api-key": key}, timeout=300)


def standard_flood(s, key, clients=50, seconds=60, max_tokens=60):
    s.deploy("std1", "smollm2", capacity=1)
    events = []  # (sent, done, status, usage_tokens, prompt_tokens, retry_after, retry_after_ms)
    lock = threading.Lock()
    t0 = time.time()
    stop_at = t0 + seconds

    def client(i):
        n = 0
        while time.time() < stop_at:
            sent = time.time()
            status, body, headers = chat(s, key, "std1", PROMPTS[(i + n) % len(PROMPTS)], max_tokens)
            done = time.time()
            n += 1
            with lock:
                usage = body.get("usage", {}) if isinstance(body, dict) else {}
                events.append((sent - t0, done - t0, status, usage.get("total_tokens", 0), usage.get("prompt_tokens", 0),
                               headers.get("retry-after"), headers.get("retry-after-ms")))
            if status == 429:
                ms = int(headers.get("retry-after-ms", "1000"))
                time.sleep(min(ms / 1000.0, max(0.0, stop_at - time.time())) + 0.01 * (i % 5))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [e for e in events if e[2] == 200]
    refused = [e for e in events if e[2] == 429]
    other = [e for e in events if e[2] not in (200, 429)]
    estimate = max((e[4] + max_tokens for e in ok), default=0)

    def most_in(window, pick, weight):
        times = sorted((pick(e), weight(e)) for e in ok)
        best = 0
        for i, (t, _) in enumerate(times):
            best = max(best, sum(w for u, w in times[i:] if u < t + window))
        return best

    # Admission happens when a call arrives: `sent` bounds it from below, so windows over send times
    # count every call a window of admissions could hold.
    charged = most_in(60, lambda e: e[0], lambda e: e[4] + max_tokens)
    served = most_in(60, lambda e: e[0], lambda e: e[3])
    usable = [e for e in refused if e[5] and e[6] and int(e[5]) >= 1 and int(e[6]) > 0]
    return {
        "clients": clients,
        "seconds": seconds,
        "max_tokens": max_tokens,
        "limit_tokens_per_minute": 1000,
        "limit_requests_per_10s": 1,
        "accepted": len(ok),
        "refused_429": len(refused),
        "other_errors": len(other),
        "accepted_tokens": sum(e[3] for e in ok),
        "max_estimate": estimate,
        "max_tokens_charged_in_60s": charged,
        "max_tokens_served_in_60s": served,
        "max_requests_admitted_in_10s": most_in(10, lambda e: e[0], lambda e: 1),
        "refusals_with_usable_retry_after": len(usable),
        "retry_after_ms_median": sorted(int(e[6]) for e in refused)[len(refused) // 2] if refused else None,
    }


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def provisioned_latency(s, key, seconds=30, overload_clients=32):
    s.deploy("ptu", "smollm2", sku="ProvisionedManaged", capacity=50)
    s.deploy("stdbig", "smollm2", capacity=900)

    def measure():
        lat = []
        end = time.time() + seconds
        while time.time() < end:
            t = time.time()
            status, body, _ = chat(s, key, "ptu", "Name a colour.", 16)
            assert status == 200, body
            lat.append(time.time() - t)
        return lat

    alone = measure()
    stop = threading.Event()
    counts = {"ok": 0, "429": 0}

    def flood(i):
        while not stop.is_set():
            status, _, _ = chat(s, key, "stdbig", PROMPTS[i % len(PROMPTS)], 200)
            counts["ok" if status == 200 else "429"] += 1

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(overload_clients)]
    for t in threads:
        t.start()
    time.sleep(5)
    loaded = measure()
    stop.set()
    for t in threads:
        t.join()
    return {
        "ptu": 50,
        "overload_clients": overload_clients,
        "alone_n": len(alone),
        "alone_p50_s": percentile(alone, 50),
        "alone_p99_s": percentile(alone, 99),
        "loaded_n": len(loaded),
        "loaded_p50_s": percentile(loaded, 50),
        "loaded_p99_s": percentile(loaded, 99),
        "standard_calls_during": counts["ok"],
    }


def run(args):
    gguf = subprocess.run([os.path.join(ROOT, "scripts", "fetch-model.sh")], check=True, capture_output=True, text=True).stdout.strip()
    os.environ["BERTH_TEST_GGUF"] = gguf
    s = Server(tempfile.mkdtemp(prefix="berth-bench-")).start(args=("--reserved-batch", str(args.reserved_batch)))
    try:
        s.cli("base-model", "add", "smollm2", "--path", gguf)
        key = s.keys()["key1"]
        record = {"reserved_batch": args.reserved_batch}
        record["standard"] = standard_flood(s, key, seconds=args.seconds, max_tokens=args.max_tokens)
        record["provisioned"] = provisioned_latency(s, key, seconds=args.latency_seconds)
    finally:
        s.stop()
    record["date"] = datetime.date.today().isoformat()
    record["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with open(RESULTS, "a") as f:
        f.write(json.dumps(record) + "\n")


def render():
    records = [json.loads(l) for l in open(RESULTS) if l.strip()]
    lines = [
        "# Rate limits and provisioned latency",
        "",
        "Written by `bench/rate_limits.py` from `rate-limits-results.jsonl`. SmolLM2-135M-Instruct Q4_1, one server,",
        "2 cores. Token windows are taken over the clients' send times (admission happens on arrival).",
        "",
        "## 50 clients against Standard, capacity 1 (1,000 tokens / minute, 1 request / 10 s), one minute",
        "",
        "| date | commit | max_tokens | accepted | 429 | other errors | accepted tokens | most charged in 60 s | most served in 60 s | limit + one estimate | most admitted in 10 s | 429s with usable retry-after | median retry-after-ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        s = r["standard"]
        lines.append(
            f"| {r['date']} | {r['commit']} | {s['max_tokens']} | {s['accepted']} | {s['refused_429']} | {s['other_errors']} | {s['accepted_tokens']} | "
            f"{s['max_tokens_charged_in_60s']} | {s['max_tokens_served_in_60s']} | {s['limit_tokens_per_minute'] + s['max_estimate']} | "
            f"{s['max_requests_admitted_in_10s']} | {s['refusals_with_usable_retry_after']}/{s['refused_429']} | {s['retry_after_ms_median']} |"
        )
    lines += [
        "",
        "## ProvisionedManaged (50 PTU) latency, alone and while 32 clients overload a Standard deployment on the same base",
        "",
        "Short chats (`max_tokens` 16), one after another for the period. `reserved batch` is the engine's share of",
        "batch slots kept for provisioned requests (`--reserved-batch`).",
        "",
        "| date | commit | reserved batch | alone p50 s | alone p99 s | overloaded p50 s | overloaded p99 s | standard calls served meanwhile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        p = r["provisioned"]
        lines.append(
            f"| {r['date']} | {r['commit']} | {r['reserved_batch']} | {p['alone_p50_s']:.3f} | {p['alone_p99_s']:.3f} | "
            f"{p['loaded_p50_s']:.3f} | {p['loaded_p99_s']:.3f} | {p['standard_calls_during']} |"
        )
    open(REPORT, "w").write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--latency-seconds", type=int, default=30)
    ap.add_argument("--reserved-batch", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=200, help="max_tokens of the flooding clients' calls")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        run(args)
    render()


if __name__ == "__main__":
    main()
