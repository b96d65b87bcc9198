"""Small random models of each architecture and quantisation type, written as GGUF here, checked
against the numpy reference: Llama with Q4_K / Q6_K / Q5_0 / Q4_0 / Q8_0 / F16 tensors, Qwen2 with
Q/K/V biases. Raw K-quant blocks are random bytes with sane scales (the `gguf` package cannot quantise
to K types, but dequantises them as llama.cpp does)."""
import json
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from conftest import berth_bin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import reference  # noqa: E402

Q = gguf.GGMLQuantizationType
HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 256, 4, 2, 512, 2


def copy_tokenizer(writer, source):
    reader = gguf.GGUFReader(source)
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            if field.types[1] == gguf.GGUFValueType.STRING:
                writer.add_array(name, [bytes(field.parts[i]).decode("utf-8", errors="surrogateescape") for i in field.data])
            else:
                writer.add_array(name, [field.parts[i][0].item() for i in field.data])
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(name, bytes(field.parts[field.data[0]]).decode("utf-8"))
        else:
            writer.add_key_value(name, field.parts[field.data[0]][0].item(), kind)
    return len(reader.fields["tokenizer.ggml.tokens"].data)


def f16_bytes(values):
    return np.asarray(values, dtype=np.float16).view(np.uint8).reshape(-1, 2)


def k_quant(rng, rows, cols, qtype):
    """Random blocks of a K-quant type with small, finite scales."""
    blocks = rows * cols // 256
    if qtype == Q.Q4_K:  # d, dmin (f16), scales[12], qs[128]
        raw = rng.integers(0, 256, (blocks, 144), dtype=np.uint8)
        raw[:, 0:2] = f16_bytes(rng.uniform(0.0005, 0.002, blocks))
        raw[:, 2:4] = f16_bytes(rng.uniform(0.0005, 0.002, blocks))
        per_row = 144 * cols // 256
    elif qtype == Q.Q6_K:  # ql[128], qh[64], scales[16] (int8), d (f16)
        raw = rng.integers(0, 256, (blocks, 210), dtype=np.uint8)
        raw[:, 192:208] = rng.integers(-20, 20, (blocks, 16)).astype(np.int8).view(np.uint8)
        raw[:, 208:210] = f16_bytes(rng.uniform(0.0001, 0.0005, blocks))
        per_row = 210 * cols // 256
    else:
        raise ValueError(qtype)
    return raw.reshape(rows, per_row)


def tensor(writer, rng, name, rows, cols, qtype):
    if qtype in (Q.Q4_K, Q.Q6_K):
        writer.add_tensor(name, k_quant(rng, rows, cols, qtype), raw_dtype=qtype)
        return
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    if qtype == Q.F16:
        writer.add_tensor(name, w.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)


def write_model(path, arch, tokenizer_source, mix, seed=3):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1e6)
    w.add_layer_norm_rms_eps(1e-5)
    vocab = copy_tokenizer(w, tokenizer_source)
    hd = HIDDEN // HEADS
    tensor(w, rng, "token_embd.weight", vocab, HIDDEN, mix["embed"])
    for i in range(LAYERS):
        shapes = {"attn_q": (HEADS * hd, HIDDEN), "attn_k": (KV_HEADS * hd, HIDDEN), "attn_v": (KV_HEADS * hd, HIDDEN),
                  "attn_output": (HIDDEN, HEADS * hd), "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN)}
        for module, (rows, cols) in shapes.items():
            tensor(w, rng, f"blk.{i}.{module}.weight", rows, cols, mix[module])
        if arch == "qwen2":
            for module in ("attn_q", "attn_k", "attn_v"):
                w.add_tensor(f"blk.{i}.{module}.bias", (rng.standard_normal(shapes[module][0]) * 0.1).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
    if mix.get("output"):
        tensor(w, rng, "output.weight", vocab, HIDDEN, mix["output"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


MIXES = {
    "llama-kquants": ("llama", {"embed": Q.Q6_K, "attn_q": Q.Q4_K, "attn_k": Q.Q4_K, "attn_v": Q.Q6_K, "attn_output": Q.Q4_K,
                                "ffn_gate": Q.Q4_K, "ffn_up": Q.Q4_K, "ffn_down": Q.Q6_K, "output": Q.Q6_K}),
    "llama-legacy": ("llama", {"embed": Q.Q8_0, "attn_q": Q.Q4_0, "attn_k": Q.Q5_0, "attn_v": Q.Q8_0, "attn_output": Q.F16,
                               "ffn_gate": Q.Q4_1, "ffn_up": Q.Q5_0, "ffn_down": Q.Q4_0, "output": None}),
    "qwen2-bias": ("qwen2", {"embed": Q.F16, "attn_q": Q.Q8_0, "attn_k": Q.Q8_0, "attn_v": Q.Q8_0, "attn_output": Q.Q8_0,
                             "ffn_gate": Q.Q8_0, "ffn_up": Q.Q8_0, "ffn_down": Q.Q8_0, "output": Q.Q8_0}),
}


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_architecture_and_quant_types_match_reference(mix, gguf, tmp_path):
    arch, types = MIXES[mix]
    path = str(tmp_path / f"{mix}.gguf")
    write_model(path, arch, gguf, types)
    cfg, weights = reference.load(path)
    # Up to 16 rows take one pass of the block kernels, up to 48 several passes, more than that
    # dequantise-and-matmul: one input for each path.
    long = "<|im_start|>user\nHello there, how are you today? Tell me about the weather, the sea and the mountains.<|im_end|>\n<|im_start|>assistant\n"
    for text in ("Hello there, how are you?", long, long + "The sea is calm, the mountains are white with snow, and the wind comes from the west today."):
        out = subprocess.run([berth_bin(), "debug", "logits", "--model", path, "--text", text], check=True, capture_output=True, text=True)
        result = json.loads(out.stdout)
        engine = np.array(result["logits"])
        ref = reference.forward(cfg, weights, result["tokens"])
        diff = np.abs(engine - ref).max()
        print(f"{mix}, {len(result['tokens'])} tokens: max |engine - reference| = {diff:.2e} (logits up to {np.abs(ref).max():.1f})")
        assert diff < 2e-3 * max(1.0, np.abs(ref).max() / 10)
        assert (engine.argmax(-1) == ref.argmax(-1)).all()
