#!/usr/bin/env bash
# Time to first token on a kv_consumer for prompts found in the store versus
# recomputed, and the KV bytes/s into the consumer against transfer-bench
# (same machine, same run). Real processes on loopback: crescent master
# (HTTP metadata), a kv_producer and a kv_consumer `crescent serve`.
#
#   src/kvconnector/bench/ttft.sh [MODEL_DIR] [LENGTHS] [RUNS] [PROTOCOL]
#   src/kvconnector/bench/ttft.sh /tmp/crescent-bench/qwen3-0.6b "1024 4096" 3 shm
#
# MODEL_DIR is made (random qwen3-0.6b-shaped weights) when missing.
# PROTOCOL: shm (default; one host) or tcp. Each run uses fresh random
# prompts: prompt A is new to the consumer (recomputed), prompt B is first
# prefilled by the producer (max_tokens=1, as the proxy does) and then sent
# to the consumer (found in the store). TTFT is the time of a max_tokens=1
# completion as the client sees it. One warm-up run per length is not
# counted (WARMUP=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${CRESCENT_BIN:-build/apps/crescent}
MODEL=${1:-/tmp/crescent-bench/qwen3-0.6b}
LENS=${2:-"1024 4096"}
RUNS=${3:-3}
PROTO=${4:-shm}
THREADS=${THREADS:-2}
[ -d "$MODEL" ] || "$BIN" make-model --shape qwen3-0.6b --out "$MODEL" >/dev/null

WORK=$(mktemp -d /tmp/kvbench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "logs in $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not open" >&2; return 1; }
wait_http() { for _ in $(seq 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not up: $1" >&2; return 1; }

MAX_LEN=0; for l in $LENS; do [ "$l" -gt "$MAX_LEN" ] && MAX_LEN=$l; done
# KV bytes per token of this model (fp32 K and V of every layer).
KV_PER_TOKEN=$(python3 -c "
import json; c=json.load(open('$MODEL/config.json'))
hd=c.get('head_dim') or c['hidden_size']//c['num_attention_heads']
print(c['num_hidden_layers']*2*c['num_key_value_heads']*hd*4)")
# Each instance's KV pool holds one prompt and a bit: blocks are reused from
# request to request (as in a long-running server) rather than touched for
# the first time; first touches of fresh memory are very slow in some VMs.
POOL=$(( (MAX_LEN + 2048) * KV_PER_TOKEN ))
# The producer's share of the store: a prompt and a quarter (older prompts
# are evicted).
SEGMENT=$(( (MAX_LEN + 4096) * 5 / 4 * KV_PER_TOKEN ))
WARMUP=${WARMUP:-1}

MP=$(port); HP=$(port); PP=$(port); CP=$(port)
"$BIN" master --host 127.0.0.1 --port "$MP" --enable-http-metadata-server \
  --http-metadata-server-port "$HP" --metrics-port "$(port)" >"$WORK/master.log" 2>&1 &
PIDS+=($!)
wait_port "$MP"; wait_port "$HP"
cfg() {  # segment size -> mooncake.json
  cat <<JSON
{"local_hostname": "127.0.0.1", "metadata_server": "http://127.0.0.1:$HP/metadata",
 "protocol": "tcp", "device_name": "", "master_server_address": "127.0.0.1:$MP",
 "global_segment_size": $1, "local_buffer_size": "1GB"}
JSON
}
cfg "$SEGMENT" >"$WORK/producer.json"
cfg 0 >"$WORK/consumer.json"
EXTRA="{\"tcp_only\": $([ "$PROTO" = tcp ] && echo true || echo false)}"
serve() {  # role port config
  MOONCAKE_CONFIG_PATH=$3 "$BIN" serve --model "$MODEL" --host 127.0.0.1 --port "$2" \
    --threads "$THREADS" --max-model-len $((MAX_LEN + 64)) --kv-cache-memory-bytes "$POOL" \
    --max-num-batched-tokens 2048 \
    --kv-transfer-config "{\"kv_connector\":\"MooncakeStoreConnector\",\"kv_role\":\"$1\",\"kv_connector_extra_config\":$EXTRA}" \
    >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
}
serve kv_producer "$PP" "$WORK/producer.json"
serve kv_consumer "$CP" "$WORK/consumer.json"
wait_http "http://127.0.0.1:$PP/health"
wait_http "http://127.0.0.1:$CP/health"

VOCAB=$(python3 -c "import json; print(json.load(open('$MODEL/config.json'))['vocab_size'])")
prompt() { python3 -c "
import json, random; r=random.Random($2); print(json.dumps({'prompt':[r.randrange(3,$VOCAB-1) for _ in range($1)],'max_tokens':1,'temperature':0}))"; }
ttft() {  # port body-file -> seconds (fails unless HTTP 200)
  local out
  out=$(curl -s -o "$WORK/resp" -w '%{http_code} %{time_total}' -H 'Content-Type: application/json' \
    --data-binary @"$2" "http://127.0.0.1:$1/v1/completions")
  [ "${out%% *}" = 200 ] || { echo "request failed: $out $(head -c 300 "$WORK/resp")" >&2; exit 1; }
  echo "${out#* }"
}
metric() {  # port name -> summed value
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n || index($1, n"{")==1 {s+=$2} END {print s+0}'
}
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

echo "model $MODEL, KV $KV_PER_TOKEN bytes/token, protocol $PROTO, $RUNS runs, load $(cut -d' ' -f1 /proc/loadavg)"
printf '%8s %14s %14s %10s %14s %12s\n' tokens recompute_s store_hit_s speedup producer_s load_GB/s
for len in $LENS; do
  rec=(); hit=(); prod=()
  for run in $(seq $((1 - WARMUP)) "$RUNS"); do
    prompt "$len" $((run * 1000 + len)) >"$WORK/a.json"
    prompt "$len" $((run * 1000 + len + 7)) >"$WORK/b.json"
    if [ "$run" = 1 ]; then  # what the warm-up run loaded is not counted
      LB0=$(metric "$CP" 'crescent:kv_connector_bytes_total')
      LS0=$(metric "$CP" 'crescent:kv_connector_load_seconds_sum')
    fi
    r=$(ttft "$CP" "$WORK/a.json"); p=$(ttft "$PP" "$WORK/b.json"); h=$(ttft "$CP" "$WORK/b.json")
    [ "$run" = 0 ] && continue  # warm-up: touches the pools and buffers once
    rec+=("$r"); prod+=("$p"); hit+=("$h")
  done
  r=$(median "${rec[@]}"); h=$(median "${hit[@]}"); p=$(median "${prod[@]}")
  LB=$(metric "$CP" 'crescent:kv_connector_bytes_total')
  LS=$(metric "$CP" 'crescent:kv_connector_load_seconds_sum')
  printf '%8d %14.3f %14.3f %9.1fx %14.3f %12.2f   (runs: recompute %s; hit %s)\n' "$len" "$r" "$h" \
    "$(python3 -c "print($r/$h)")" "$p" "$(python3 -c "print(($LB-$LB0)/($LS-$LS0)/1e9)")" \
    "${rec[*]}" "${hit[*]}"
done
LT=$(metric "$CP" 'crescent:kv_connector_loaded_tokens_total')
FAIL=$(metric "$CP" 'crescent:kv_connector_failures_total')
echo "consumer loaded $LT tokens in all (warm-ups included), failures: $FAIL"

# Reference: transfer-bench reads of 16 MiB blocks from a target on this host.
TP=$(port)
"$BIN" transfer-bench --mode target --metadata-server "http://127.0.0.1:$HP/metadata" \
  --segment-id kvbench-target --local-hostname 127.0.0.1 --buffer-size 1GiB --protocol "$PROTO" \
  >"$WORK/target.log" 2>&1 &
PIDS+=($!)
sleep 1
"$BIN" transfer-bench --mode initiator --metadata-server "http://127.0.0.1:$HP/metadata" \
  --segment-id kvbench-target --local-server-name kvbench-init --local-hostname 127.0.0.1 \
  --operation read --block-size 16MiB --batch-size 4 --threads 1 --duration 3 \
  --protocol "$PROTO" 2>&1 | grep -iE "GB/s|throughput" | tail -1
