#!/usr/bin/env bash
# Runs the official OpenAI Node client (npm package `openai`, installed by
# scripts/setup into .cache/node) against a real `crescent serve` on a tiny
# random model with the real Qwen3 tokenizer. Exit 77 (ctest: skipped) with
# a message when node, the package or the tokenizer files are missing.
#   tests/e2e/run_openai_client_test.sh path/to/crescent
set -euo pipefail
CRESCENT=${1:?usage: $0 CRESCENT_BIN}
cd "$(dirname "$0")/../.."
. tests/e2e/openai_prereqs.sh
tmp=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
"$CRESCENT" make-model --shape tiny --out "$tmp/model" --tokenizer-dir .cache/tokenizer-qwen3 >/dev/null
port=$(( 20000 + RANDOM % 20000 ))
"$CRESCENT" serve --model "$tmp/model" --served-model-name tiny --host 127.0.0.1 --port "$port" \
  --threads 2 --kv-cache-memory-bytes 64MiB --max-model-len 2048 >"$tmp/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/serve.log"; exit 1; }
  sleep 0.05
done
if ! NODE_PATH=.cache/node/node_modules BASE_URL="http://127.0.0.1:$port/v1" \
     node tests/e2e/openai_client_test.mjs; then
  echo "--- crescent serve log"; cat "$tmp/serve.log"; exit 1
fi
