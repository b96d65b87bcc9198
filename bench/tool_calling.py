#!/usr/bin/env python3
"""Tool calling learnt by fine-tuning: fine-tunes SmolLM2 through Berth's fine-tuning API on
data/fine-tuning/tools-train.jsonl (two function tools offered in every example), deploys the base model
and the fine-tune, and asks both the 20 held-out requests of tools-heldout.jsonl with the tools and
`tool_choice: auto` (no constrained decoding). A call is correct when it names the expected function
and its arguments parse, match the tool's schema and equal the expected values (cities compared
without case). Appends the raw record to bench/tool-calling-results.jsonl and renders
bench/tool_calling.md.

    cargo build --release && python3 bench/tool_calling.py [--epochs 3]
    python3 bench/tool_calling.py --render-only
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from conftest import Server  # noqa: E402
from openai import AzureOpenAI  # noqa: E402
from tool_calls import ask, heldout  # noqa: E402

DATA = os.path.join(ROOT, "data", "fine-tuning")
RESULTS = os.path.join(ROOT, "bench", "tool-calling-results.jsonl")
REPORT = os.path.join(ROOT, "bench", "tool_calling.md")


def run(args):
    gguf = subprocess.run([os.path.join(ROOT, "scripts", "fetch-model.sh")], check=True, capture_output=True, text=True).stdout.strip()
    os.environ["BERTH_TEST_GGUF"] = gguf
    s = Server(tempfile.mkdtemp(prefix="berth-bench-")).start()
    try:
        s.cli("base-model", "add", "smollm2", "--path", gguf)
        client = AzureOpenAI(azure_endpoint=s.url, api_key=s.keys()["key1"], api_version="2024-10-21", max_retries=0)
        train = client.files.create(file=open(os.path.join(DATA, "tools-train.jsonl"), "rb"), purpose="fine-tune")
        valid = client.files.create(file=open(os.path.join(DATA, "tools-validation.jsonl"), "rb"), purpose="fine-tune")
        started = time.perf_counter()
        job = client.fine_tuning.jobs.create(
            model="smollm2", training_file=train.id, validation_file=valid.id, suffix="tools", seed=7,
            hyperparameters={"n_epochs": args.epochs, "batch_size": 4},
        )
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
            job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", job
        train_s = time.perf_counter() - started
        s.deploy("base", "smollm2")
        s.deploy("tools", job.fine_tuned_model)
        rows = heldout()
        base, tuned = ask(client, "base", rows), ask(client, "tools", rows)
        record = {
            "date": datetime.date.today().isoformat(),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
            "epochs": args.epochs,
            "trained_tokens": job.trained_tokens,
            "train_s": round(train_s, 1),
            "base_correct": sum(a["ok"] for a in base) / len(rows),
            "tuned_correct": sum(a["ok"] for a in tuned) / len(rows),
            "answers": [{"request": r["request"], "base": b, "tuned": t} for r, b, t in zip(rows, base, tuned)],
        }
        with open(RESULTS, "a") as f:
            f.write(json.dumps(record) + "\n")
    finally:
        s.stop()


def render():
    rows = [json.loads(line) for line in open(RESULTS) if line.strip()] if os.path.exists(RESULTS) else []
    out = [
        "# Tool calling learnt by fine-tuning",
        "",
        "Written by `python3 bench/tool_calling.py` (see its docstring) from `tool-calling-results.jsonl`: SmolLM2-135M-Instruct",
        "fine-tuned through Berth's fine-tuning API on `data/fine-tuning/tools-train.jsonl` (48 examples, two function tools),",
        "then the base model and the fine-tune asked the 20 held-out requests of `tools-heldout.jsonl` (cities and numbers",
        "never trained on) with the tools, `tool_choice: auto` and greedy decoding, no constrained decoding.",
        "",
        "| date | commit | epochs | trained tokens | fine-tuning s | base: correct calls | fine-tune: correct calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(f"| {r['date']} | {r['commit']} | {r['epochs']} | {r['trained_tokens']} | {r['train_s']} | {r['base_correct']:.2f} | {r['tuned_correct']:.2f} |")
    if rows:
        out += ["", "The answers of the last run:", "", "| request | base | fine-tune |", "|---|---|---|"]
        for a in rows[-1]["answers"]:
            cell = lambda x: ("ok " if x["ok"] else "wrong ") + x["said"].replace("|", "\\|")  # noqa: E731
            out.append(f"| {a['request']} | {cell(a['base'])} | {cell(a['tuned'])} |")
    out.append("")
    with open(REPORT, "w") as f:
        f.write("\n".join(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args()
    if not args.render_only:
        run(args)
    render()


if __name__ == "__main__":
    main()
