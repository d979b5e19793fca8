#!/usr/bin/env bash
# Transfer engine benchmark for docs/benchmarks.md: medians of ROUNDS runs,
# each round measuring its references (iperf3 loopback, one-thread memcpy)
# right before crescent's own figures, on the same machine.
#
#   src/transfer/bench/run.sh [ROUNDS=5] [DURATION=4]
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${CRESCENT_BIN:-build/apps/crescent}
ROUNDS=${1:-5}
DUR=${2:-4}
BATCH=128
THREADS=2
out=$(mktemp -d "${TMPDIR:-/tmp}/crescent-transfer-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_LOGS:-}" ] && cp "$out"/*.log /tmp/ 2>/dev/null; rm -rf "$out"
}
trap cleanup EXIT
trap "exit 1" INT TERM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
meta="http://127.0.0.1:$port/metadata"
"$BIN" metadata-server --host 127.0.0.1 --port "$port" >"$out/meta.log" 2>&1 & pids+=($!)
"$BIN" transfer-bench --mode target --metadata-server "$meta" --segment-id bench-target \
  --buffer-size 512MiB >"$out/target.log" 2>&1 & pids+=($!)
# Wait until the target has published its segment (start-up is slower on a
# loaded host than any fixed sleep).
for _ in $(seq 100); do
  "$BIN" metadata --metadata-server "$meta" get crescent/segments/bench-target >/dev/null 2>&1 && break
  sleep 0.2
done

record() { echo "$1 $2" >>"$out/results"; }
gbps() { sed -n 's/.*gbps=\([0-9.]*\).*/\1/p'; }

for round in $(seq "$ROUNDS"); do
  iperf3 -s -1 >/dev/null 2>&1 &
  iperf_pid=$!
  sleep 0.3
  g=$(iperf3 -c 127.0.0.1 -t "$DUR" -P 1 -f g | awk '/receiver/ {print $(NF-2)}')
  wait "$iperf_pid"
  record iperf3 "$(awk -v g="$g" 'BEGIN {printf "%.3f", g / 8}')"
  for block in 64KiB 1MiB; do
    record "memcpy-$block" "$("$BIN" transfer-bench --mode memcpy --block-size $block \
        --batch-size $BATCH --duration "$DUR" | gbps)"
    for op in write read; do
      for proto in tcp shm; do
        # tcp: Mooncake's bench setting (2 threads); shm: 1 thread, as its
        # memcpy reference.
        threads=$THREADS
        [ $proto = shm ] && threads=1
        r=$("$BIN" transfer-bench --mode initiator --metadata-server "$meta" \
              --segment-id bench-target --protocol $proto --operation $op --block-size $block \
              --batch-size $BATCH --threads $threads --duration "$DUR" | grep '^RESULT')
        record "$proto-$op-$block" "$(echo "$r" | gbps)"
        record "$proto-$op-$block-p50" "$(echo "$r" | sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p')"
        record "$proto-$op-$block-p99" "$(echo "$r" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')"
        record "$proto-$op-$block-cpu" "$(echo "$r" | sed -n 's/.*cpu_s_per_gb=\([0-9.]*\).*/\1/p')"
      done
    done
  done
  echo "round $round done" >&2
done

# name -> median (and all values, sorted)
sort -k1,1 -k2,2g "$out/results" | awk '
  function flush() { if (n) { m = (n % 2) ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2;
      printf "%-22s median %8.3f   runs:", name, m; for (i = 1; i <= n; i++) printf " %s", v[i]; print ""; }
    n = 0 }
  $1 != name { flush(); name = $1 } { v[++n] = $2 } END { flush() }'
