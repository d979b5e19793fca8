#!/usr/bin/env bash
# CUDA backend benchmark (docs/benchmarks.md, "CUDA backend"): decode at
# batch 1, 8, 64, 256 against the HBM limit and prefill of 2,048 tokens
# against cuBLAS, on random-weight Qwen3-0.6B- and Llama-3.2-1B-shaped
# models, ROUNDS rounds each (every round prints medians of its own steps).
#
#   src/model/cuda/bench/run.sh [ROUNDS]
#
# BENCH names the cuda_model_bench binary (default: build/src/model/cuda/
# cuda_model_bench, built with `cmake --build build --target
# cuda_model_bench`); MODELS_DIR where the random checkpoints are written
# (default /tmp/crescent-bench-models, about 3.7 GB).
set -euo pipefail
ROUNDS=${1:-3}
BENCH=${BENCH:-build/src/model/cuda/cuda_model_bench}
MODELS_DIR=${MODELS_DIR:-/tmp/crescent-bench-models}
mkdir -p "$MODELS_DIR"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
for shape in qwen3-0.6b llama3.2-1b; do
  dir=$MODELS_DIR/$shape
  make_flag=()
  [ -f "$dir/model.safetensors" ] || make_flag=(--make "$shape")
  for round in $(seq "$ROUNDS"); do
    echo "=== $shape round $round"
    "$BENCH" --model "$dir" "${make_flag[@]}" --runs 5 --steps 32 --context 512 \
      --batches 1,8,64,256 --prompt 2048
    make_flag=()
  done
done
