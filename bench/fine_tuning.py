"""Fine-tuning benchmark: runs `berth-bench --scenario train` (LoRA on the pirate dataset, then the
held-out prompts answered greedily by the base model and by the adapter), appends the raw record to
bench/fine-tuning-results.jsonl and renders bench/fine_tuning.md from every record there.

    cargo build --release -p berth-bench
    python3 bench/fine_tuning.py --model SmolLM2-135M-Instruct.Q4_1.gguf [--epochs 2 --batch-size 4]
    python3 bench/fine_tuning.py --render-only
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "fine-tuning-results.jsonl")
REPORT = os.path.join(HERE, "fine_tuning.md")
DATA = os.path.join(ROOT, "data", "fine-tuning")


def run(args):
    cmd = [
        os.path.join(ROOT, "target", "release", "berth-bench"), "--model", args.model, "--scenario", "train",
        "--train-file", os.path.join(DATA, "pirate-train.jsonl"),
        "--validation-file", os.path.join(DATA, "pirate-validation.jsonl"),
        "--heldout", os.path.join(DATA, "pirate-heldout.txt"), "--expect", "arr",
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr-multiplier", str(args.lr_multiplier),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["date"] = datetime.date.today().isoformat()
    record["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record["cpu"] = cpu_name()
    with open(RESULTS, "a") as f:
        f.write(json.dumps(record) + "\n")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def render():
    records = [json.loads(l) for l in open(RESULTS) if l.strip()]
    lines = [
        "# Fine-tuning: throughput, memory and effect",
        "",
        "Written by `bench/fine_tuning.py` from `fine-tuning-results.jsonl` (one row per run). LoRA rank 8",
        "on all seven linear modules of every layer, AdamW, sequences packed into passes of up to 128 tokens,",
        "gradients accumulated over the batch. Tokens/s counts every training token passed forward and backward",
        "over the whole run, whose time also includes scoring two validation examples after each step and the",
        "validation file after each epoch. Peak memory is",
        "the process's high-water resident set (VmHWM) at the end of training: the f32 base weights, the",
        "factors, AdamW moments and activations. The held-out rate is the share of answers to",
        "`data/fine-tuning/pirate-heldout.txt` (prompts the job never saw) containing \"arr\", greedy, 40 tokens.",
        "",
        "| date | commit | model | examples x epochs | steps | tokens | train s | tokens/s | peak RSS MiB | loss first -> last step | held-out rate base -> tuned |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['date']} | {r['commit']} | {r['model']} | {r['examples']} x {r['epochs']} | {r['steps']} | {r['tokens']} | "
            f"{r['train_s']:.0f} | {r['train_tok_s']:.1f} | {r['peak_rss_bytes'] / 2**20:.0f} | "
            f"{r['first_step_loss']:.2f} -> {r['last_step_loss']:.2f} | "
            f"{r.get('base_rate', 0):.2f} -> {r.get('tuned_rate', 0):.2f} ({r.get('heldout_prompts', 0)} prompts) |"
        )
    # The answers of the last run whose model can speak (random-weight shapes answer nothing).
    shown = [r for r in records if r.get("tuned_rate", 0) > r.get("base_rate", 0)]
    last = shown[-1] if shown else records[-1]
    if "tuned_answers" in last:
        lines += ["", f"Answers of the last run ({last['model']}, greedy):", "", "| prompt | base | fine-tuned |", "|---|---|---|"]
        prompts = [l for l in open(os.path.join(DATA, "pirate-heldout.txt")).read().splitlines() if l.strip()]
        for p, b, t in zip(prompts, last["base_answers"], last["tuned_answers"]):
            cell = lambda s: s.replace("|", "\\|").replace("\n", " ").strip()  # noqa: E731
            lines.append(f"| {cell(p)} | {cell(b)} | {cell(t)} |")
    lines += ["", f"Machine: {last.get('cpu', '?')}, {last.get('threads', '?')} threads."]
    open(REPORT, "w").write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr-multiplier", type=float, default=1.0)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        if not args.model:
            sys.exit("--model is required")
        run(args)
    render()


if __name__ == "__main__":
    main()
