#!/usr/bin/env bash
# The GPU experiments whose results the notebooks show (run on one H100 through the device tool).
#   bash experiments/gpu_runs.sh OUT_DIR lm        # five language models, one per normalizer
#   bash experiments/gpu_runs.sh OUT_DIR passkey   # three passkey models, then long_context.py
# Trains the models of a stage side by side on one GPU (such small models leave it mostly idle
# when run one at a time), each with its preset's settings, then writes compact bf16 weights,
# logs and results to OUT_DIR (files of 16 MiB at most: what the device tool brings back).
set -euo pipefail
out=${1:?usage: gpu_runs.sh OUT_DIR lm|passkey}
stage=${2:?usage: gpu_runs.sh OUT_DIR lm|passkey}
runs=${RUNS_DIR:-runs/gpu}
case "$stage" in
  lm) attentions="softmax softpick softmax1 sink scaled_softpick"; preset=gpu ;;
  passkey) attentions="softmax softpick scaled_softpick"; preset=passkey ;;
  *) echo "stage must be lm or passkey, got $stage"; exit 2 ;;
esac
mkdir -p "$out" "$runs"
export PYTHONUNBUFFERED=1
pids=()
for attention in $attentions; do
  python -m minisoftpick.train --preset "$preset" --attention "$attention" \
    --out "$runs/$stage-$attention" > "$runs/$stage-$attention.txt" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 2 "$runs/$stage"-*.txt
[ "$status" = 0 ] || { echo "a training run failed"; exit 1; }
for attention in $attentions; do
  run="$runs/$stage-$attention"
  python -c "import sys; from minisoftpick.train import save_weights; save_weights(sys.argv[1], sys.argv[2])" \
    "$run" "$out/$stage-$attention.pt"
  cp "$run/log.jsonl" "$out/$stage-$attention.jsonl"
done
if [ "$stage" = passkey ]; then
  python experiments/long_context.py "$out"/passkey-*.pt --out "$out/long_context.json"
fi
ls -la "$out"
