"""The cost of constrained decoding: runs `berth-bench --scenario constrained` (the same streams free and
held to a JSON Schema of at least 200 objects, so that no row ends early) for 1 and 16 streams, appends
the raw records to bench/constrained-results.jsonl and renders bench/constrained.md from every record.

    cargo build --release -p berth-bench
    python3 bench/constrained.py --model SmolLM2-135M-Instruct.Q4_1.gguf
    python3 bench/constrained.py --render-only
"""
import argparse
import datetime
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "constrained-results.jsonl")
REPORT = os.path.join(HERE, "constrained.md")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def run(args):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for streams in args.streams:
        cmd = [
            os.path.join(ROOT, "target", "release", "berth-bench"), "--model", args.model, "--scenario", "constrained",
            "--streams", str(streams), "--prompt-tokens", str(args.prompt_tokens), "--gen", str(args.gen), "--repeat", str(args.repeat),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        record = json.loads(out.stdout.strip().splitlines()[-1])
        record.update(date=datetime.date.today().isoformat(), commit=commit, cpu=cpu_name())
        with open(RESULTS, "a") as f:
            f.write(json.dumps(record) + "\n")


def render():
    rows = [json.loads(line) for line in open(RESULTS) if line.strip()] if os.path.exists(RESULTS) else []
    lines = [
        "# Constrained decoding: its cost",
        "",
        "Written by `python3 bench/constrained.py` from `constrained-results.jsonl`; see that script for the command.",
        "The same streams decode freely and held to a JSON Schema (an array of at least 200 `{name: string <= 12, n: integer}`",
        "objects, so no row can end early); the decode rate is the difference of two runs that differ only in the",
        "number of generated tokens, as in `engine.md`. The grammar is compiled before submission; the engine thread",
        "computes each constrained row's token mask (llguidance) and applies it before sampling, every step.",
        "",
        "| date | commit | model | streams | prompt | gen | free tok/s | json_schema tok/s | slowdown | compile ms (first / later) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['date']} | {r['commit']} | {r['model']} | {r['streams']} | {r['prompt_tokens']} | {r['gen']} | "
            f"{r['free_decode_tok_s']:.1f} | {r['json_schema_decode_tok_s']:.1f} | {100 * r['slowdown']:.1f} % | "
            f"{r['first_compile_ms']:.0f} / {r['compile_ms']:.1f} |"
        )
    lines += ["", f"CPU: {rows[-1]['cpu'] if rows else 'n/a'}, {rows[-1]['threads'] if rows else 'n/a'} threads.", ""]
    with open(REPORT, "w") as f:
        f.write("\n".join(lines))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model")
    p.add_argument("--streams", type=int, nargs="*", default=[1, 16])
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--gen", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args()
    if not args.render_only:
        if not args.model:
            p.error("--model is required")
        run(args)
    render()


if __name__ == "__main__":
    main()
