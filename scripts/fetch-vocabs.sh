#!/usr/bin/env bash
# Prints a directory of llama.cpp's vocabulary-only GGUFs with their tokenizer test vectors
# (ggml-vocab-*.gguf, .inp, .out), taken once from the source package of llama-cpp-python on PyPI.
set -euo pipefail
cache="${BERTH_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/models}"
dir="$cache/llama-cpp-vocabs-0.3.36"
if [ ! -s "$dir/ggml-vocab-qwen2.gguf.out" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching llama.cpp's tokenizer test vectors (llama-cpp-python==0.3.36 source package)..." >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$tmp" >&2
  tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp" --wildcards 'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*'
  rm -rf "$dir.partial"
  mv "$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/models" "$dir.partial"
  mv "$dir.partial" "$dir"
fi
echo "$dir"
