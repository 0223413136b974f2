#!/usr/bin/env bash
# Everything the H200 measurements need, in one device call (bench/NOTES.md says how it was run):
#   bench/run_h200.sh OUT_DIR
# Each step has its own time limit, so that one that hangs leaves time for the others. The tile
# sweep goes first: it compiles every kernel the others need, in parallel.
set -u
out=$1
mkdir -p "$out"
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__)"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)"; local t0=$SECONDS; timeout "$limit" "$@"; echo "== rc $? after $((SECONDS - t0))s"; }
step "${TILES_LIMIT:-150}" python3 bench/bench_tiles.py --out "$out/bench_tiles_h200"
step "${TESTS_LIMIT:-150}" python3 -m pytest tests/test_flash_softpick.py -m gpu -n 8 -q -p no:cacheprovider > "$out/gpu_tests_h200.log" 2>&1
tail -3 "$out/gpu_tests_h200.log"
[ -n "${SKIP_ROOFS:-}" ] || step 25 python3 bench/bench_roofs.py --out "$out/bench_roofs_h200"
step 90 python3 bench/bench_attention.py --out "$out/bench_attention_h200"
step 120 python3 bench/bench_train_step.py --out "$out/bench_train_step_h200"
step 20 python3 bench/bench_decode.py --out "$out/bench_decode_h200"
step 40 python3 bench/bench_host.py --out "$out/bench_host_h200"
