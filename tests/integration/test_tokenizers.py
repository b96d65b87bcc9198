"""Berth's tokenizers against llama.cpp's own test vectors (47 texts each: whitespace runs, digits,
emoji, CJK, Cyrillic, code), for the vocabularies of the architectures Berth runs and their relatives.
Directory in BERTH_TEST_VOCABS (scripts/fetch-vocabs.sh)."""
import json
import os
import subprocess

import pytest
from conftest import berth_bin

VOCABS = ["llama-spm", "llama-bpe", "qwen2", "gpt-2", "phi-3", "refact", "starcoder"]


@pytest.fixture(scope="module")
def vocab_dir():
    d = os.environ.get("BERTH_TEST_VOCABS")
    assert d and os.path.isdir(d), "set BERTH_TEST_VOCABS to the directory scripts/fetch-vocabs.sh prints"
    return d


@pytest.mark.parametrize("vocab", VOCABS)
def test_tokenizer_matches_llama_cpp_vectors(vocab_dir, vocab):
    base = os.path.join(vocab_dir, f"ggml-vocab-{vocab}.gguf")
    out = subprocess.run([berth_bin(), "debug", "tokenize", "--model", base, "--inp", base + ".inp"], check=True, capture_output=True, text=True)
    ours = json.loads(out.stdout)
    texts = open(base + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    expected = [[int(t) for t in line.split()] for line in open(base + ".out", encoding="utf-8").read().split("\n")][: len(ours)]
    assert len(ours) == len(texts) >= 40
    mismatches = [(t, o, e) for t, o, e in zip(texts, ours, expected) if o != e]
    assert not mismatches, mismatches[:3]
