"""An independent reference forward pass of a Llama-family GGUF model in numpy (float64), with an
optional PEFT LoRA adapter. It shares no code with Berth: weights are dequantised by the `gguf`
package (llama.cpp's own Python reader), RoPE and attention are written out here.

    python reference.py MODEL.gguf TOKENS [--adapter DIR]   -> JSON {"logits": [[...], ...]}
"""
import argparse
import json
import os

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def load(path):
    reader = GGUFReader(path)
    arch = field(reader, "general.architecture")
    cfg = {
        "arch": arch,
        "layers": int(field(reader, f"{arch}.block_count")),
        "hidden": int(field(reader, f"{arch}.embedding_length")),
        "heads": int(field(reader, f"{arch}.attention.head_count")),
        "kv_heads": int(field(reader, f"{arch}.attention.head_count_kv")),
        "eps": float(field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "theta": float(field(reader, f"{arch}.rope.freq_base")),
    }
    weights = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float64)
        weights[t.name] = w.reshape([int(d) for d in reversed(t.shape)]) if w.ndim == 1 and len(t.shape) > 1 else w
    return cfg, weights


def unpermute(w, heads):
    # llama.cpp stores Q/K rows as (head, pair-index, 2); Hugging Face as (head, 2, pair-index).
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def load_adapter(adapter_dir):
    from safetensors.numpy import load_file

    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    tensors = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / np.sqrt(r) if cfg.get("use_rslora") else alpha / r
    deltas = {}
    for name, a in tensors.items():
        if ".lora_A." not in name:
            continue
        b = tensors[name.replace(".lora_A.", ".lora_B.")]
        # ...model.layers.{i}.self_attn.q_proj.lora_A.weight
        parts = name.split(".")
        i = int(parts[parts.index("layers") + 1])
        module = parts[parts.index("lora_A") - 1]
        deltas[(i, module)] = scale * (b.astype(np.float64) @ a.astype(np.float64))
    return deltas


GGUF_NAMES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}


def forward(cfg, w, tokens, deltas=None):
    deltas = deltas or {}
    heads, kv_heads, hidden = cfg["heads"], cfg["kv_heads"], cfg["hidden"]
    hd = hidden // heads
    permuted = cfg["arch"] in ("llama", "mistral")

    def weight(i, module):
        m = w[f"blk.{i}.{GGUF_NAMES[module]}.weight"]
        if permuted and module == "q_proj":
            m = unpermute(m, heads)
        if permuted and module == "k_proj":
            m = unpermute(m, kv_heads)
        if (i, module) in deltas:
            m = m + deltas[(i, module)]
        return m

    def bias(i, module):
        return w.get(f"blk.{i}.{GGUF_NAMES[module]}.bias", 0.0)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg["eps"]) * g

    n = len(tokens)
    x = w["token_embd.weight"][tokens]
    inv = 1.0 / cfg["theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(t):
        a, b = t[..., : hd // 2], t[..., hd // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["layers"]):
        h = rms(x, w[f"blk.{i}.attn_norm.weight"])
        q = (h @ weight(i, "q_proj").T + bias(i, "q_proj")).reshape(n, heads, hd)
        k = (h @ weight(i, "k_proj").T + bias(i, "k_proj")).reshape(n, kv_heads, hd)
        v = (h @ weight(i, "v_proj").T + bias(i, "v_proj")).reshape(n, kv_heads, hd)
        q, k = rope(q), rope(k)
        group = heads // kv_heads
        out = np.empty((n, heads, hd))
        for hh in range(heads):
            kk, vv = k[:, hh // group], v[:, hh // group]
            s = q[:, hh] @ kk.T / np.sqrt(hd) + mask
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, hh] = p @ vv
        x = x + out.reshape(n, hidden) @ weight(i, "o_proj").T
        h = rms(x, w[f"blk.{i}.ffn_norm.weight"])
        g = h @ weight(i, "gate_proj").T
        act = g / (1 + np.exp(-g)) * (h @ weight(i, "up_proj").T)
        x = x + act @ weight(i, "down_proj").T
    x = rms(x, w["output_norm.weight"])
    head = w.get("output.weight", w["token_embd.weight"])
    return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tokens", help="comma-separated token ids")
    ap.add_argument("--adapter")
    args = ap.parse_args()
    cfg, w = load(args.model)
    deltas = load_adapter(args.adapter) if args.adapter else None
    tokens = [int(t) for t in args.tokens.split(",")]
    logits = forward(cfg, w, tokens, deltas)
    print(json.dumps({"logits": logits.tolist()}))


if __name__ == "__main__":
    main()
