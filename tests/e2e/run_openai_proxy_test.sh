#!/usr/bin/env bash
# Runs the official OpenAI Node client (tests/e2e/openai_client_test.mjs:
# completions, chat, streaming with usage, errors) through the proxy of a
# disaggregated cluster started by `crescent up` (master, 1 prefill + 1
# decode instance with the KV connector, proxy) on a tiny random model with
# the real Qwen3 tokenizer. A client must see what one instance returns.
# Exit 77 (ctest: skipped) with a message when node, the npm package or the
# tokenizer files are missing.
#   tests/e2e/run_openai_proxy_test.sh path/to/crescent
set -euo pipefail
CRESCENT=${1:?usage: $0 CRESCENT_BIN}
cd "$(dirname "$0")/../.."
. tests/e2e/openai_prereqs.sh
tmp=$(mktemp -d)
up_pid=""
cleanup() {
  if [ -n "$up_pid" ]; then kill -INT "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
# The model directory's name is the served model name the test expects.
"$CRESCENT" make-model --shape tiny --out "$tmp/tiny" --tokenizer-dir .cache/tokenizer-qwen3 >/dev/null 2>&1
# Below the ephemeral range (32768+), where the cluster's own free ports come from.
port=$(( 10000 + RANDOM % 20000 ))
"$CRESCENT" up --model "$tmp/tiny" --port "$port" --max-model-len 2048 \
  --kv-cache-memory-bytes 64MiB --global-segment-size 64MB --local-buffer-size 16MB \
  --work-dir "$tmp/work" >"$tmp/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 600); do
  grep -q "Ctrl-C stops everything" "$tmp/up.log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$tmp/up.log"; exit 1; }
  sleep 0.1
done
grep -q "Ctrl-C stops everything" "$tmp/up.log" || { echo "crescent up not ready"; cat "$tmp/up.log"; exit 1; }
if ! NODE_PATH=.cache/node/node_modules BASE_URL="http://127.0.0.1:$port/v1" \
     node tests/e2e/openai_client_test.mjs; then
  echo "--- crescent up"; cat "$tmp/up.log"
  for f in "$tmp"/work/*.log; do echo "--- $f"; tail -n 30 "$f"; done
  exit 1
fi
kill -INT "$up_pid"
wait "$up_pid"
up_pid=""
echo "openai node client through the proxy of crescent up: OK"
