"""The engine's logits against an independent numpy computation on the dequantised GGUF weights,
without and with a LoRA adapter. Tolerance: 2e-3 absolute on logits of magnitude ~30 (f32 vs f64)."""
import json
import os
import subprocess
import sys

import numpy as np
from conftest import berth_bin

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
