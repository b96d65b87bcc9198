#!/usr/bin/env bash
# One vLLM server as an engine pool's endpoint: OpenAI-compatible API, runtime LoRA loading (Berth
# places adapters with POST /v1/load_lora_adapter), cached-token counts in usage, structured outputs
# through llguidance (as Berth's engine), float32 on the CPU.
# On GPUs drop --dtype and the VLLM_CPU_* settings; keep the rest (docs/scale-out.md).
# usage: scripts/vllm/serve.sh VENV_DIR HF_MODEL_DIR PORT SERVED_NAME [more vLLM flags]
set -euo pipefail
VENV=${1:?}; MODEL=${2:?}; PORT=${3:?}; NAME=${4:?}; shift 4
export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} \
       VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-auto} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
# The vllm-cpu package's `vllm` command does not start the server: run the module.
exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name "$NAME" \
  --host 127.0.0.1 --port "$PORT" --dtype float32 --max-model-len 2048 \
  --enable-lora --max-lora-rank 8 --max-loras 8 --enable-prompt-tokens-details \
  --structured-outputs-config '{"backend": "guidance"}' "$@"
