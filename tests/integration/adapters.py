"""Writes PEFT LoRA adapters for tests: adapter_config.json + adapter_model.safetensors in PEFT's
naming (`base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight`)."""
import json
import os

import numpy as np
from gguf import GGUFReader
from safetensors.numpy import save_file

PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def shapes(gguf_path):
    r = GGUFReader(gguf_path)
    arch = r.fields["general.architecture"].contents()
    f = lambda k: int(r.fields[f"{arch}.{k}"].contents())
    hidden, heads, kv, ffn, layers = f("embedding_length"), f("attention.head_count"), f("attention.head_count_kv"), f("feed_forward_length"), f("block_count")
    hd = hidden // heads
    return layers, {
        "q_proj": (heads * hd, hidden), "k_proj": (kv * hd, hidden), "v_proj": (kv * hd, hidden), "o_proj": (hidden, heads * hd),
        "gate_proj": (ffn, hidden), "up_proj": (ffn, hidden), "down_proj": (hidden, ffn),
    }


def make_adapter(out_dir, gguf_path, rank, alpha, targets, seed, scale, use_rslora=False):
    layers, dims = shapes(gguf_path)
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(layers):
        for m in targets:
            out, inp = dims[m]
            stem = f"base_model.model.model.layers.{i}.{PARENT[m]}.{m}"
            tensors[f"{stem}.lora_A.weight"] = (rng.standard_normal((rank, inp)) * scale).astype(np.float32)
            tensors[f"{stem}.lora_B.weight"] = (rng.standard_normal((out, rank)) * scale).astype(np.float32)
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": targets, "use_rslora": use_rslora,
              "lora_dropout": 0.0, "bias": "none", "task_type": "CAUSAL_LM", "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    json.dump(config, open(os.path.join(out_dir, "adapter_config.json"), "w"), indent=2)
    return out_dir
