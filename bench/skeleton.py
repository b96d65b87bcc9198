#!/usr/bin/env python3
"""Walking-skeleton figures on this machine: time from deployment PUT to Succeeded (cold: the base model
is loaded; warm: a second deployment on the loaded base; adapter: a LoRA fine-tune on the loaded base),
and tokens per second of one streamed chat on SmolLM2-135M-Instruct Q4_1.

    python3 bench/skeleton.py            # needs target/release/berth and scripts/fetch-model.sh
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from adapters import make_adapter  # noqa: E402
from conftest import Server  # noqa: E402
from openai import AzureOpenAI  # noqa: E402


def put_to_succeeded(s, name, model):
    t = time.perf_counter()
    s.deploy(name, model, wait=False)
    d = s.wait_deployment(name)
    assert d["properties"]["provisioningState"] == "Succeeded", d
    return time.perf_counter() - t


def main():
    gguf = subprocess.run([os.path.join(ROOT, "scripts", "fetch-model.sh")], check=True, capture_output=True, text=True).stdout.strip()
    os.environ["BERTH_TEST_GGUF"] = gguf
    s = Server(tempfile.mkdtemp(prefix="berth-bench-")).start()
    try:
        s.cli("base-model", "add", "smollm2", "--path", gguf)
        adapter = make_adapter(tempfile.mkdtemp(), gguf, rank=8, alpha=16, targets=["q_proj", "v_proj"], seed=1, scale=0.01)
        ft = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter).stdout)["id"]
        cold = put_to_succeeded(s, "cold", "smollm2")
        warm = put_to_succeeded(s, "warm", "smollm2")
        lora = put_to_succeeded(s, "lora", ft)
        rss = next(int(l.split()[1]) for l in open(f"/proc/{s.proc.pid}/status") if l.startswith("VmRSS:")) / 1024
        print(f"server resident memory with SmolLM2 and one adapter loaded: {rss:.0f} MiB (the GGUF file is {os.path.getsize(gguf) / 2**20:.0f} MiB)")
        print(f"PUT -> Succeeded: cold (loads the base) {cold:.2f} s; second deployment of the base {warm:.3f} s; LoRA fine-tune on the loaded base {lora:.3f} s")
        client = AzureOpenAI(azure_endpoint=s.url, api_key=s.keys()["key1"], api_version="2024-10-21")
        prompt = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
        for deployment in ("cold", "lora"):
            rates, ttfts = [], []
            for _ in range(3):
                t0 = time.perf_counter()
                first = None
                n = 0
                for chunk in client.chat.completions.create(model=deployment, messages=prompt, max_tokens=128, temperature=0, stream=True,
                                                            stream_options={"include_usage": True}):
                    if chunk.choices and chunk.choices[0].delta.content and first is None:
                        first = time.perf_counter()
                    if chunk.usage:
                        n = chunk.usage.completion_tokens
                end = time.perf_counter()
                ttfts.append(first - t0)
                rates.append((n - 1) / (end - first))
            print(f"chat on {deployment}: {n} tokens, time to first token {min(ttfts) * 1000:.0f} ms, decode {max(rates):.1f} tokens/s (best of 3; runs {', '.join(f'{r:.1f}' for r in rates)})")
    finally:
        s.stop()


if __name__ == "__main__":
    main()
