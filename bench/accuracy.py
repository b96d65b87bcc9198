#!/usr/bin/env python3
"""Logits of Berth and of llama.cpp against a float64 reference on the same GGUF file.

    python3 bench/accuracy.py MODEL.gguf            -> one JSON record per engine on stdout

The reference is `tests/reference/reference.py` (numpy, float64, on the weights as llama.cpp's own `gguf`
package dequantises them). Per engine the record gives the
mean and largest KL(reference || engine) over positions, the largest |logit error|, and the greedy
answer (up to 12 tokens) next to the reference's. Berth's logits come from `berth debug logits` (the
release binary, with the kernels the CPU picks unless BERTH_ISA says otherwise); llama.cpp's from
`llama-cpp-python` with every position's logits kept, 2 threads. Scored positions: the prompt followed
by the reference's greedy answer.

`engine_vs_llamacpp.py --accuracy-on MODEL` records these next to the speed figures in `engine.md`.
"""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import reference  # noqa: E402

QUESTION = "What is the capital of France?"
PROMPT = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
ANSWER_TOKENS = 12


def log_softmax(rows):
    rows = np.asarray(rows, dtype=np.float64)
    m = rows.max(axis=-1, keepdims=True)
    return rows - (m + np.log(np.exp(rows - m).sum(axis=-1, keepdims=True)))


def compare(ref, got):
    """Mean and max KL(ref || got) over positions, and the largest |logit error|."""
    lp, lq = log_softmax(ref), log_softmax(got)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    return {"mean_kl": float(kl.mean()), "max_kl": float(kl.max()), "max_abs_logit_error": float(np.abs(ref - got).max())}


def berth_logits(model, tokens=None, text=None):
    exe = os.path.join(ROOT, "target", "release", "berth")
    args = [exe, "debug", "logits", "--model", model]
    args += ["--tokens", ",".join(map(str, tokens))] if tokens is not None else ["--text", text]
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return out["tokens"], np.array(out["logits"], dtype=np.float64), out.get("kernels")


class LlamaCppLogits:
    def __init__(self, model):
        import llama_cpp
        self.m = llama_cpp.Llama(model_path=model, n_threads=2, n_threads_batch=2, n_ctx=512, logits_all=True,
                                 verbose=False)

    def __call__(self, tokens):
        self.m.reset()
        self.m.eval(tokens)
        return np.array(self.m.scores[:len(tokens)], dtype=np.float64)


def greedy(next_logits, prompt, eos):
    """Greedy continuation of `prompt`, one full forward pass per token (all three scorers are exact
    recomputations, so the answers differ only where the logits do)."""
    seq = list(prompt)
    for _ in range(ANSWER_TOKENS):
        tok = int(np.argmax(next_logits(seq)[-1]))
        if tok in eos:
            break
        seq.append(tok)
    return seq[len(prompt):]


def measure(model):
    cfg, weights = reference.load(model)
    prompt, _, kernels = berth_logits(model, text=PROMPT)
    llama = LlamaCppLogits(model)
    eos = {llama.m.token_eos(), *llama.m.tokenize(b"<|im_end|>", add_bos=False, special=True)}
    detok = lambda ids: llama.m.detokenize(ids).decode("utf-8", "replace")
    ref_forward = lambda s: reference.forward(cfg, weights, s)
    answers = {
        "reference": greedy(ref_forward, prompt, eos),
        "berth": greedy(lambda s: berth_logits(model, tokens=s)[1], prompt, eos),
        "llama.cpp": greedy(llama, prompt, eos),
    }
    # Scored: every position of the prompt followed by the reference's answer.
    seq = prompt + answers["reference"]
    ref = ref_forward(seq)
    name = os.path.basename(model)
    common = {"model": name, "scenario": "accuracy", "positions": len(seq), "question": QUESTION,
              "reference_answer": detok(answers["reference"])}
    return [
        {"engine": "berth", **common, "kernels": kernels, **compare(ref, berth_logits(model, tokens=seq)[1]),
         "answer": detok(answers["berth"])},
        {"engine": "llama.cpp", **common, **compare(ref, llama(seq)), "answer": detok(answers["llama.cpp"])},
    ]


if __name__ == "__main__":
    for record in measure(sys.argv[1]):
        print(json.dumps(record))
