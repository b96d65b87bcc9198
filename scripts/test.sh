#!/usr/bin/env bash
# Every test: the Rust crates' unit and integration tests, then end-to-end tests that start the real
# `berth` binary and drive it with the openai SDK, plain HTTP and the CLI, and check the engine's
# logits against an independent numpy computation. Installs what it needs (pip) first.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
BERTH_TEST_GGUF="$(scripts/fetch-model.sh)"
BERTH_TEST_VOCABS="$(scripts/fetch-vocabs.sh)"
export BERTH_TEST_GGUF BERTH_TEST_VOCABS
cargo build --release --locked
cargo test --release --locked --workspace
python3 -m pytest -q tests/integration
