"""A full-weights fine-tune in Hugging Face layout (config.json + model.safetensors, no tokenizer: the
base's is used) imported with --weights, deployed, and answering exactly as the GGUF it was exported
from. This exercises the safetensors loader, config.json parsing and the Q/K row order end to end."""
import json
import os
import shutil
import sys

import numpy as np
from openai import AzureOpenAI
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import reference  # noqa: E402

NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
         "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def export_hf(gguf, out):
    cfg, w = reference.load(gguf)
    hd = cfg["hidden"] // cfg["heads"]
    tensors = {}
    for name, t in w.items():
        if name == "token_embd.weight":
            tensors["model.embed_tokens.weight"] = t
        elif name == "output_norm.weight":
            tensors["model.norm.weight"] = t
        elif name == "output.weight":
            tensors["lm_head.weight"] = t
        else:
            _, i, module, kind = name.split(".")
            if module == "attn_q":
                t = reference.unpermute(t, cfg["heads"])
            if module == "attn_k":
                t = reference.unpermute(t, cfg["kv_heads"])
            tensors[f"model.layers.{i}.{NAMES[module]}.{kind}"] = t
    os.makedirs(out, exist_ok=True)
    save_file({k: np.ascontiguousarray(v.astype(np.float32)) for k, v in tensors.items()}, os.path.join(out, "model.safetensors"))
    ffn = tensors["model.layers.0.mlp.gate_proj.weight"].shape[0]
    json.dump({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": cfg["hidden"], "intermediate_size": ffn,
        "num_hidden_layers": cfg["layers"], "num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv_heads"],
        "head_dim": hd, "rms_norm_eps": cfg["eps"], "rope_theta": cfg["theta"], "max_position_embeddings": 8192,
        "vocab_size": tensors["model.embed_tokens.weight"].shape[0], "tie_word_embeddings": "lm_head.weight" not in tensors,
        "torch_dtype": "float32",
    }, open(os.path.join(out, "config.json"), "w"))


def export_tokenizer(gguf_path, out):
    """SmolLM2's tokenizer.json and tokenizer_config.json as Hugging Face ships them, rebuilt from the
    GGUF vocabulary: byte-level BPE, digits split one by one, ChatML specials."""
    r = reference.GGUFReader(gguf_path)
    strings = lambda key: [bytes(r.fields[key].parts[i]).decode("utf-8") for i in r.fields[key].data]
    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    json.dump(tokenizer, open(os.path.join(out, "tokenizer.json"), "w"))
    template = r.fields["tokenizer.chat_template"].contents()
    json.dump({"add_bos_token": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template},
              open(os.path.join(out, "tokenizer_config.json"), "w"))
    json.dump({"bos_token_id": 1, "eos_token_id": 2}, open(os.path.join(out, "generation_config.json"), "w"))


def test_full_weights_fine_tune_answers_like_its_source(fresh_server, gguf, tmp_path):
    """Once with its own tokenizer files, once falling back to the base's tokenizer."""
    s = fresh_server
    export_hf(gguf, str(tmp_path / "bare"))
    shutil.copytree(tmp_path / "bare", tmp_path / "with-tokenizer")
    export_tokenizer(gguf, str(tmp_path / "with-tokenizer"))
    assert s.deploy("base", "smollm2")["properties"]["provisioningState"] == "Succeeded"
    client = AzureOpenAI(azure_endpoint=s.url, api_key=s.keys()["key1"], api_version="2024-10-21", max_retries=0)
    q = [{"role": "user", "content": "Name three planets of the solar system, 1 to 3."}]
    a = client.chat.completions.create(model="base", messages=q, max_tokens=24, temperature=0)
    for variant in ("bare", "with-tokenizer"):
        imported = json.loads(s.cli("model", "import", "--base", "smollm2", "--weights", str(tmp_path / variant)).stdout)
        assert imported["kind"] == "weights"
        d = s.deploy(variant, imported["id"])
        assert d["properties"]["provisioningState"] == "Succeeded", d
        b = client.chat.completions.create(model=variant, messages=q, max_tokens=24, temperature=0)
        assert b.model == imported["id"]
        assert (b.choices[0].message.content, b.usage.prompt_tokens) == (a.choices[0].message.content, a.usage.prompt_tokens), variant


def test_weights_of_another_shape_are_refused(fresh_server, tmp_path):
    s = fresh_server
    d = tmp_path / "other"
    d.mkdir()
    json.dump({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "vocab_size": 100, "max_position_embeddings": 128}, open(d / "config.json", "w"))
    p = s.cli("model", "import", "--base", "smollm2", "--weights", str(d), check=False)
    assert p.returncode != 0 and "InvalidModel" in p.stderr and "2 layers" in p.stderr


def test_lora_on_an_hf_base_answers_like_lora_on_the_gguf_base(fresh_server, gguf, adapter_dir, tmp_path):
    """The same PEFT adapter on the same weights, once from GGUF (Q/K rows permuted by llama.cpp, undone
    at load) and once from safetensors in Hugging Face's order: identical answers."""
    s = fresh_server
    export_hf(gguf, str(tmp_path / "hf"))
    export_tokenizer(gguf, str(tmp_path / "hf"))
    s.cli("base-model", "add", "smollm2-hf", "--path", str(tmp_path / "hf"))
    on_gguf = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter_dir).stdout)["id"]
    on_hf = json.loads(s.cli("model", "import", "--base", "smollm2-hf", "--adapter", adapter_dir).stdout)["id"]
    assert on_hf.startswith("smollm2-hf.ft-")
    for name, model in (("ft-gguf", on_gguf), ("ft-hf", on_hf), ("plain-hf", "smollm2-hf")):
        assert s.deploy(name, model)["properties"]["provisioningState"] == "Succeeded", name
    client = AzureOpenAI(azure_endpoint=s.url, api_key=s.keys()["key1"], api_version="2024-10-21", max_retries=0)
    q = [{"role": "user", "content": "What is the capital of France?"}]
    answer = lambda d: client.chat.completions.create(model=d, messages=q, max_tokens=16, temperature=0).choices[0].message.content
    a, b, plain = answer("ft-gguf"), answer("ft-hf"), answer("plain-hf")
    assert a == b
    assert a != plain, "the adapter must change the answer for this test to mean anything"
