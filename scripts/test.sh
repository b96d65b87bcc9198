#!/usr/bin/env bash
# Every test: the Rust crates' unit and integration tests, then end-to-end tests that start the real
# `berth` binary and drive it with the openai SDK, plain HTTP and the CLI, and check the engine's
# logits against an independent numpy computation; the end-to-end suite runs on SQLite and again on
# PostgreSQL. Installs what it needs (pip, apt) first.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
BERTH_TEST_GGUF="$(scripts/fetch-model.sh)"
BERTH_TEST_VOCABS="$(scripts/fetch-vocabs.sh)"
export BERTH_TEST_GGUF BERTH_TEST_VOCABS
# A snapshot that differs fails the test; it is never written into the tree.
export INSTA_UPDATE=no
# The Azure CLI is large and pins its own SDKs: it gets a virtual environment of its own, kept under
# target/ between runs.
AZ_VENV="${BERTH_AZ_VENV:-$PWD/target/azure-cli}"
if [ ! -x "$AZ_VENV/bin/az" ]; then
    python3 -m venv "$AZ_VENV"
    "$AZ_VENV/bin/pip" install --quiet --disable-pip-version-check azure-cli==2.91.0
fi
export BERTH_TEST_AZ="$AZ_VENV/bin/az"
# vLLM's CPU build for the engine-pool tests, in a venv of its own under target/ too (3 GB, once).
BERTH_TEST_VLLM="${BERTH_TEST_VLLM:-$PWD/target/vllm-venv}"
scripts/vllm/install.sh "$BERTH_TEST_VLLM"
export BERTH_TEST_VLLM
# Debian's packages: chromium for the portal's browser test (driven by playwright-core from npm),
# strace for the durability test (it watches the server's fsyncs and renames).
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v strace >/dev/null || need+=(strace)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
npm ci --prefix tests/portal --no-audit --no-fund --silent
# PostgreSQL 15 from Debian, for the store's tests, the fleet's, and the suite's second pass.
BERTH_TEST_POSTGRES="$(scripts/start-postgres.sh | tail -1)"
export BERTH_TEST_POSTGRES
cargo build --release --locked
cargo test --release --locked --workspace
python3 -m pytest -q tests/integration
# The fleet's tests run on PostgreSQL already; the pool's test what vLLM does, whatever the store; the
# tool-calling fine-tune (ten minutes of training) tests the trainer and the engine, not the store.
BERTH_TEST_DATABASE=postgres python3 -m pytest -q tests/integration --ignore tests/integration/test_fleet.py \
    --ignore tests/integration/test_pool.py \
    --deselect tests/integration/test_fine_tuning.py::test_a_tool_calling_fine_tune_calls_right_on_held_out_requests
