#!/usr/bin/env python3
"""Berth's engine side by side with llama.cpp on the same GGUF files, in the same run.

    python3 bench/engine_vs_llamacpp.py --model SmolLM2-135M-Instruct.Q4_1.gguf --model smollm2-q8_0.gguf \
        --adapters-on SmolLM2-135M-Instruct.Q4_1.gguf --out bench/engine.md

Berth is timed by `target/release/berth-bench` (build it with `cargo build --release -p berth-bench`);
llama.cpp through `llama-cpp-python` (built from source with the CMAKE_ARGS in bench/README.md), timing
only its `llama_decode` calls, so Python never counts against it. Both use 2 threads.

Figures per model: prefill of a 512-token prompt, decode of 128 tokens after it (one stream), and the
aggregate decode rate of 4 and 16 concurrent streams (32-token prompts, 128 tokens each). On the
`--adapters-on` models also: 16 streams over 8 LoRA adapters (rank 8 on all seven projections; llama.cpp
cannot mix adapters in one batch, so it serves each adapter's two streams as one batch, adapter after
adapter, which is the best it can do), the resident memory each extra adapter adds to Berth, and
Berth's time to first token of a 1,500-token prompt whose first 1,400 tokens an earlier request had,
with and without its prefix cache. On the `--accuracy-on` models: both engines' logits against a float64
reference (`bench/accuracy.py`).
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import adapters as peft  # noqa: E402  (writes PEFT adapters from a GGUF's shapes)
import accuracy  # noqa: E402  (bench/accuracy.py, beside this file)

THREADS = 2
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GGUF_MODULES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def berth(model, scenario, *args):
    exe = os.path.join(ROOT, "target", "release", "berth-bench")
    out = subprocess.run([exe, "--model", model, "--scenario", scenario, *map(str, args)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def random_tokens(vocab, n, seed):
    rng = np.random.default_rng(seed)
    lo, hi = min(vocab, 1000) // 2 + 256, max(vocab * 3 // 4, 600)
    return [int(t) for t in rng.integers(lo, hi, n)]


class LlamaCpp:
    """One model and context of llama.cpp through its C API."""

    def __init__(self, path, n_seq, n_ctx):
        import llama_cpp as lc
        self.lc = lc
        # llama.cpp logs every tensor it loads; keep the callback alive as long as the process.
        global _QUIET
        _QUIET = lc.llama_log_callback(lambda level, text, data: None)
        lc.llama_log_set(_QUIET, ctypes.c_void_p(0))
        lc.llama_backend_init()
        mp = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(path.encode(), mp)
        cp = lc.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, 512, 512, n_seq
        cp.n_threads = cp.n_threads_batch = THREADS
        self.ctx = lc.llama_init_from_model(self.model, cp)
        self.vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.batch = lc.llama_batch_init(512, 0, n_seq)

    def decode(self, items):
        """items: (token, pos, seq, wants_logits). Returns the seconds llama_decode took."""
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        t = time.perf_counter()
        rc = self.lc.llama_decode(self.ctx, b)
        dt = time.perf_counter() - t
        assert rc == 0, f"llama_decode returned {rc}"
        return dt

    def argmax(self, i):
        ptr = self.lc.llama_get_logits_ith(self.ctx, i)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(self.vocab,))))

    def clear(self):
        self.lc.llama_memory_clear(self.lc.llama_get_memory(self.ctx), True)

    def prefill(self, seqs_tokens):
        """Prompts in chunks of at most 512 tokens; returns the seconds spent and each sequence's first
        greedy token."""
        items = [(t, p, s, p == len(toks) - 1) for s, toks in enumerate(seqs_tokens) for p, t in enumerate(toks)]
        spent, firsts = 0.0, {}
        for start in range(0, len(items), 512):
            chunk = items[start:start + 512]
            spent += self.decode(chunk)
            for j, (_, _, seq, out) in enumerate(chunk):
                if out:
                    firsts[seq] = self.argmax(j)
        return spent, [firsts[s] for s in range(len(seqs_tokens))]

    def generate(self, firsts, start_pos, n):
        """Greedy decode of `n` tokens for each sequence, batched; returns the seconds in llama_decode."""
        toks, spent = list(firsts), 0.0
        for step in range(n):
            spent += self.decode([(t, start_pos[s] + step, s, True) for s, t in enumerate(toks)])
            toks = [self.argmax(i) for i in range(len(toks))]
        return spent

    def set_adapter(self, adapter):
        lc = self.lc
        arr = (lc.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(1.0)
        rc = lc.llama_set_adapters_lora(self.ctx, arr, 1, scales)
        assert rc == 0, "llama_set_adapters_lora failed"


def llama_single(path, prompt_tokens=512, gen=128, repeat=3):
    m = LlamaCpp(path, 1, 2048)
    prompt = random_tokens(m.vocab, prompt_tokens, 1)
    m.prefill([prompt[:16]]); m.clear()  # warm-up
    best_pp, best_tg = 0.0, 0.0
    for _ in range(repeat):
        m.clear()
        spent, firsts = m.prefill([prompt])
        pp = prompt_tokens / spent
        tg = gen / m.generate(firsts, [prompt_tokens], gen)
        best_pp, best_tg = max(best_pp, pp), max(best_tg, tg)
    return {"prefill_tok_s": best_pp, "decode_tok_s": best_tg}


def llama_parallel(path, streams, prompt_tokens=32, gen=128, repeat=2, lora_paths=()):
    m = LlamaCpp(path, streams, max(2048, streams * (prompt_tokens + gen + 16)))
    loras = [m.lc.llama_adapter_lora_init(m.model, p.encode()) for p in lora_paths]
    assert all(loras), "llama.cpp could not load an adapter"
    prompts = [random_tokens(m.vocab, prompt_tokens, 100 + i) for i in range(streams)]
    best = 0.0
    for _ in range(repeat):
        spent = 0.0
        # Without adapters: one batch of all streams. With: each adapter's streams as one batch, in turn.
        groups = [(None, list(range(streams)))] if not loras else \
            [(a, [i for i in range(streams) if i % len(loras) == k]) for k, a in enumerate(loras)]
        for adapter, members in groups:
            m.clear()
            if adapter is not None:
                m.set_adapter(adapter)
            _, firsts = m.prefill([prompts[i] for i in members])
            spent += m.generate(firsts, [prompt_tokens] * len(members), gen)
        best = max(best, streams * gen / spent)
    return {"aggregate_decode_tok_s": best}


def write_gguf_lora(peft_dir, model_path, out_path):
    """The PEFT adapter as a GGUF LoRA for llama.cpp (same random factors; only speed is compared)."""
    import gguf
    from safetensors.numpy import load_file
    arch = gguf.GGUFReader(model_path).fields["general.architecture"].contents()
    cfg = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    w = gguf.GGUFWriter(out_path, arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(cfg["lora_alpha"]))
    for name, t in sorted(load_file(os.path.join(peft_dir, "adapter_model.safetensors")).items()):
        parts = name.split(".")
        layer, module = int(parts[parts.index("layers") + 1]), parts[-3]
        kind = "lora_a" if ".lora_A." in name else "lora_b"
        w.add_tensor(f"blk.{layer}.{GGUF_MODULES[module]}.weight.{kind}", np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def render(jsonl, out):
    """engine.md from every record in `jsonl`: for each model and scenario the latest record wins."""
    latest, models = {}, []
    for line in open(jsonl):
        d = json.loads(line)
        key = (d["engine"], d["model"], d["scenario"], d.get("streams"), d.get("adapters") if isinstance(d.get("adapters"), int) else None)
        latest[key] = d
        if d["model"] not in models:
            models.append(d["model"])
    get = lambda engine, model, scenario, streams=None, adapters=None: latest.get((engine, model, scenario, streams, adapters))
    cell = lambda b, l, k: f"{b[k]:.1f} vs {l[k]:.1f} (**{b[k] / l[k]:.2f}x**)" if b and l else "-"
    with open(out, "w") as f:
        f.write("# Engine against llama.cpp\n\n")
        f.write("Written by `bench/engine_vs_llamacpp.py` from `bench/engine-results.jsonl` (the latest record of each "
                "figure; each record carries its time). 2 threads each, same GGUF files; Berth and llama.cpp figures of one "
                "row come from the same run. Ratio = Berth / llama.cpp.\n\n")
        f.write("| model | measured | prefill 512 (tok/s) | decode 128 after 512 (tok/s) | 4 streams (aggregate tok/s) | 16 streams (aggregate tok/s) |\n")
        f.write("|---|---|---|---|---|---|\n")
        for m in models:
            b1, l1 = get("berth", m, "single"), get("llama.cpp", m, "single")
            if not b1:
                continue
            par = {n: (get("berth", m, "parallel", n, 0), get("llama.cpp", m, "parallel", n)) for n in (4, 16)}
            f.write(f"| {m} | {b1['at']} | {cell(b1, l1, 'prefill_tok_s')} | {cell(b1, l1, 'decode_tok_s')} | "
                    f"{cell(*par[4], 'aggregate_decode_tok_s')} | {cell(*par[16], 'aggregate_decode_tok_s')} |\n")
        accuracy = [(m, get("berth", m, "accuracy"), get("llama.cpp", m, "accuracy")) for m in models]
        accuracy = [a for a in accuracy if a[1] and a[2]]
        if accuracy:
            f.write("\n## Accuracy against a float64 reference\n\n"
                    "Written from `bench/accuracy.py` records: every position of a chat prompt followed by the reference's "
                    "greedy answer, against numpy in float64 on the same dequantised weights. KL(reference || engine).\n\n")
            f.write("| model | measured | engine | mean KL | max KL | max abs logit error | greedy answer to \"What is the capital of France?\" |\n")
            f.write("|---|---|---|---|---|---|---|\n")
            for m, b, l in accuracy:
                for e in (b, l):
                    kernels = f" ({e['kernels']} kernels)" if e.get("kernels") else ""
                    same = "same as the reference" if e["answer"] == e["reference_answer"] else "differs from the reference"
                    f.write(f"| {m} | {e['at']} | {e['engine']}{kernels} | {e['mean_kl']:.1e} | {e['max_kl']:.1e} | "
                            f"{e['max_abs_logit_error']:.2e} | {json.dumps(e['answer'])} ({same}) |\n")
        for m in models:
            ba, la = get("berth", m, "parallel", 16, 8), get("llama.cpp", m, "parallel", 16, 8)
            mem, pre = get("berth", m, "adapter-memory"), get("berth", m, "prefix")
            if not (ba or mem or pre):
                continue
            f.write(f"\n## {m}: adapters and prefix cache\n\n")
            if ba:
                f.write(f"- 16 streams over 8 LoRA adapters (rank 8, all seven projections), aggregate decode: "
                        f"{cell(ba, la, 'aggregate_decode_tok_s')} ({ba['at']}).\n")
            if pre:
                f.write(f"- Time to first token, 1,500-token prompt of which 1,400 tokens were in an earlier request: "
                        f"{pre['ttft_cached_s'] * 1000:.0f} ms with the prefix cache, {pre['ttft_uncached_s'] * 1000:.0f} ms "
                        f"without (**{pre['ratio']:.3f}x**) ({pre['at']}).\n")
            if mem:
                f.write(f"- Resident memory each adapter added ({mem['at']}), against the bytes of its factors in memory (f32):\n\n")
                f.write("| adapter | factors (bytes) | safetensors file (bytes) | RSS added (bytes) |\n|---|---|---|---|\n")
                for a in mem["adapters"]:
                    f.write(f"| {os.path.basename(a['adapter'])} | {a['weights_bytes']} | {a['file_bytes']} | {a['rss_added_bytes']} |\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--adapters-on", action="append", default=[])
    ap.add_argument("--accuracy-on", action="append", default=[],
                    help="also score both engines against the float64 reference (bench/accuracy.py) on this model")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "engine.md"))
    ap.add_argument("--jsonl", default=os.path.join(ROOT, "bench", "engine-results.jsonl"))
    ap.add_argument("--render-only", action="store_true", help="rewrite --out from --jsonl without measuring")
    args = ap.parse_args()
    if args.render_only:
        render(args.jsonl, args.out)
        return
    log = open(args.jsonl, "a")

    def record(d):
        d["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        log.write(json.dumps(d) + "\n"); log.flush()
        print(json.dumps(d), flush=True)
        return d

    for path in args.model:
        name = os.path.basename(path)
        record(berth(path, "single"))
        record({"engine": "llama.cpp", "model": name, "scenario": "single", **llama_single(path)})
        for n in (4, 16):
            record(berth(path, "parallel", "--streams", n, "--prompt-tokens", 32))
            record({"engine": "llama.cpp", "model": name, "scenario": "parallel", "streams": n, **llama_parallel(path, n)})
        if path in args.accuracy_on:
            for d in accuracy.measure(path):
                record(d)
        if path in args.adapters_on:
            tmp = tempfile.mkdtemp(prefix="berth-bench-adapters-")
            dirs, ggufs = [], []
            for k in range(8):
                d = peft.make_adapter(os.path.join(tmp, f"a{k}"), path, rank=8, alpha=16, targets=ALL_TARGETS,
                                      seed=k, scale=0.02)
                g = os.path.join(tmp, f"a{k}.gguf")
                write_gguf_lora(d, path, g)
                dirs.append(d); ggufs.append(g)
            adapter_args = [x for d in dirs for x in ("--adapter", d)]
            record(berth(path, "parallel", "--streams", 16, "--prompt-tokens", 32, *adapter_args))
            record({"engine": "llama.cpp", "model": name, "scenario": "parallel", "streams": 16, "adapters": 8,
                    **llama_parallel(path, 16, lora_paths=ggufs)})
            record(berth(path, "adapter-memory", *adapter_args))
            record(berth(path, "prefix"))

    render(args.jsonl, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
