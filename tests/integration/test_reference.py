"""The engine's logits against an independent numpy computation on the dequantised GGUF weights,
without and with a LoRA adapter. Tolerance: 2e-3 absolute on logits of magnitude ~30 (f32 vs f64)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import berth_bin, SHARED_SERVER_RETRIES

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import reference  # noqa: E402

TOLERANCE = 2e-3
# 19 tokens: several passes of the block kernels; the test below also sends 6 (one pass) and 60
# (dequantise and matmul).
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital"


def engine_logits(gguf, adapter=None):
    args = [berth_bin(), "debug", "logits", "--model", gguf, "--text", PROMPT]
    if adapter:
        args += ["--adapter", adapter]
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return out["tokens"], np.array(out["logits"])


def test_logits_match_numpy_reference_with_and_without_lora(gguf, adapter_dir):
    cfg, weights = reference.load(gguf)
    tokens, base = engine_logits(gguf)
    ref_base = reference.forward(cfg, weights, tokens)
    tokens2, adapted = engine_logits(gguf, adapter_dir)
    assert tokens2 == tokens
    ref_adapted = reference.forward(cfg, weights, tokens, reference.load_adapter(adapter_dir))
    base_diff = np.abs(base - ref_base).max()
    lora_diff = np.abs(adapted - ref_adapted).max()
    effect = np.abs(ref_adapted - ref_base).max()
    print(f"max |engine - reference| base {base_diff:.2e}, with LoRA {lora_diff:.2e}; LoRA moves logits by up to {effect:.2f}")
    assert base_diff < TOLERANCE
    assert lora_diff < TOLERANCE
    assert effect > 100 * TOLERANCE, "the adapter must change the logits for this test to mean anything"
    assert (base.argmax(-1) == ref_base.argmax(-1)).all()
    assert (adapted.argmax(-1) == ref_adapted.argmax(-1)).all()


def test_every_matmul_path_matches(gguf, adapter_dir):
    """Up to 16 rows the quantised weights are multiplied block by block in one pass (the decode path),
    up to 48 in several passes, beyond that they are dequantised first. All must agree with the reference."""
    cfg, weights = reference.load(gguf)
    long = ",".join(str(t) for t in ([1, 9690, 198] + [19556, 30, 314, 253, 1345, 28] * 10 + [2]))
    for adapter, tokens in ((None, "1,9690,198,19556,30,2"), (adapter_dir, "1,9690,198,19556,30,2"), (None, long), (adapter_dir, long)):
        args = [berth_bin(), "debug", "logits", "--model", gguf, "--tokens", tokens]
        if adapter:
            args += ["--adapter", adapter]
        out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        ref = reference.forward(cfg, weights, out["tokens"], reference.load_adapter(adapter) if adapter else None)
        diff = np.abs(np.array(out["logits"]) - ref).max()
        print(f"{len(out['tokens'])}-token batch, adapter={bool(adapter)}: max |engine - reference| {diff:.2e}")
        assert diff < TOLERANCE


def cpu_kernel_sets():
    """The kernel sets this CPU can run (the engine's `Isa::available`), from /proc/cpuinfo."""
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    sets = []
    if {"avx512f", "avx512bw", "fma", "f16c"} <= flags:
        sets.append("avx512")
    if {"avx2", "fma", "f16c"} <= flags:
        sets.append("avx2")
    return sets + ["portable"]


@pytest.mark.parametrize("kernels", ["avx512", "avx2", "portable"])
def test_each_kernel_set_forced_matches_the_reference(gguf, adapter_dir, kernels):
    """BERTH_ISA forces each kernel set the CPU has; every one must match the f64 reference on a batch
    that takes the one-pass kernels (6 tokens, with an adapter) and one that takes several (60)."""
    if kernels not in cpu_kernel_sets():
        pytest.skip(f"this CPU cannot run the {kernels} kernels")
    cfg, weights = reference.load(gguf)
    long = ",".join(str(t) for t in ([1, 9690, 198] + [19556, 30, 314, 253, 1345, 28] * 5 + [2]))
    for adapter, tokens in ((adapter_dir, "1,9690,198,19556,30,2"), (None, long)):
        args = [berth_bin(), "debug", "logits", "--model", gguf, "--tokens", tokens]
        if adapter:
            args += ["--adapter", adapter]
        run = subprocess.run(args, check=True, capture_output=True, text=True, env={**os.environ, "BERTH_ISA": kernels})
        out = json.loads(run.stdout)
        assert out["kernels"] == kernels
        ref = reference.forward(cfg, weights, out["tokens"], reference.load_adapter(adapter) if adapter else None)
        diff = np.abs(np.array(out["logits"]) - ref).max()
        print(f"{kernels}, {len(out['tokens'])} tokens, adapter={bool(adapter)}: max |engine - reference| {diff:.2e}")
        assert diff < TOLERANCE


def log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


def test_logprobs_equal_the_reference_log_softmax_at_every_position(server, gguf):
    """Issue 13's logprobs: each generated token's log-probability and its top 5 alternatives, taken
    from the logits the sampler used, equal the numpy reference's log-softmax at every position."""
    import requests_shim as http

    cfg, weights = reference.load(gguf)
    prompt, _ = engine_logits(gguf)
    key = server.keys()["key1"]
    url = server.url + "/openai/deployments/smol/completions?api-version=2024-10-21"
    status, body, _ = http.request("POST", url, body={"prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 5}, headers={"api-key": key})
    assert status == 200, body
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == body["usage"]["completion_tokens"]
    assert "".join(lp["tokens"]) == body["choices"][0]["text"]
    seq, worst = list(prompt), 0.0
    for i, chosen in enumerate(lp["token_logprobs"]):
        ref = log_softmax(reference.forward(cfg, weights, seq)[-1])
        order = np.argsort(-ref)[:5]
        top = sorted(lp["top_logprobs"][i].values(), reverse=True)
        assert len(top) == 5
        worst = max(worst, abs(chosen - ref[order[0]]), np.abs(np.array(top) - ref[order]).max())
        seq.append(int(order[0]))
    print(f"logprobs: max |engine - reference| {worst:.2e} over {len(lp['token_logprobs'])} positions")
    assert worst < TOLERANCE


def test_chat_logprobs_stream_in_openai_s_shape(server):
    import openai

    client = openai.AzureOpenAI(azure_endpoint=server.url, api_key=server.keys()["key1"], api_version="2024-10-21", max_retries=SHARED_SERVER_RETRIES)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model="smol", messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    content = whole.choices[0].logprobs.content
    # Every generated token but the end-of-turn one (counted in usage, not part of the answer).
    ended = whole.choices[0].finish_reason == "stop"
    assert len(content) == whole.usage.completion_tokens - ended and all(len(t.top_logprobs) == 3 for t in content)
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    assert all(t.top_logprobs[0].logprob >= t.logprob - 1e-6 and t.logprob <= 0 for t in content)
    assert all(bytes(t.bytes).decode() == t.token for t in content)
    streamed = [t for c in client.chat.completions.create(model="smol", messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3, stream=True)
                if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in content]
    plain = client.chat.completions.create(model="smol", messages=messages, max_tokens=4, temperature=0)
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smol", messages=messages, max_tokens=4, top_logprobs=3)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smol", messages=messages, max_tokens=4, logprobs=True, top_logprobs=21)
