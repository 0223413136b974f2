#!/usr/bin/env bash
# The GPU study of sinks, massive activations and quantization (results/study/), on one H200:
#   bash experiments/study.sh OUT [MAX_MINUTES]
# Trains eleven char-level Shakespeare models side by side on one GPU, every window starting with BOS:
#   --preset study (6 layers x d_model 256): softmax, softpick, softmax1, sink, scaled_softpick (seed 0)
#                                            and softmax, softpick (seed 1);
#   --preset study_large (8 layers x d_model 512): softmax, softpick (seeds 0 and 1).
# Each run stops at its preset's max_steps or after MAX_MINUTES (default 5.5) of training, logging
# sinks and activations every probe_interval steps. Then, on the same machine, every run is analysed
# (python -m minisoftpick.analyze) and swept over quant.SETTINGS on the whole validation split
# (experiments/quantize_checkpoints.py, per-window losses for the bootstrap). OUT gets study.tar.gz
# (logs, analyses, quantization results: what experiments/study_summary.py reads) and the bf16
# weights of the seed-0 runs a notebook loads (study-<attention>.pt).
# STUDY_FLAGS adds flags to every training run, QUANT_FLAGS to every quantization sweep (a CPU rehearsal:
# STUDY_FLAGS="--max-steps 4 --device cpu --d-model 32" QUANT_FLAGS="--max-tokens 20000").
set -euo pipefail
out=${1:?usage: study.sh OUT [MAX_MINUTES]}
minutes=${2:-5.5}
runs=${RUNS_DIR:-runs/study}
weights="softmax softpick sink scaled_softpick"  # the seed-0 small runs whose weights come back
python=${PYTHON:-python3}
mkdir -p "$out" "$runs"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
names=()
pids=()
launch() {  # preset attention seed
  local name="$1-$2-s$3"
  # shellcheck disable=SC2086  # STUDY_FLAGS is a list of flags
  "$python" -m minisoftpick.train --preset "$1" --attention "$2" --seed "$3" --max-minutes "$minutes" \
    --out "$runs/$name" ${STUDY_FLAGS:-} > "$runs/$name.txt" 2>&1 &
  names+=("$name")
  pids+=($!)
}
for attention in softmax softpick softmax1 sink scaled_softpick; do launch study "$attention" 0; done
launch study softmax 1
launch study softpick 1
for seed in 0 1; do
  launch study_large softmax "$seed"
  launch study_large softpick "$seed"
done
status=0
done_names=()
for i in "${!pids[@]}"; do  # a failed run is reported and left out; the others go on
  if wait "${pids[$i]}"; then done_names+=("${names[$i]}"); else status=1; tail -n 20 "$runs/${names[$i]}.txt"; fi
done
names=("${done_names[@]}")
tail -q -n 1 "$runs"/*.txt

mkdir -p "$out/study/logs" "$out/study/analysis" "$out/study/quantization"
for name in "${names[@]}"; do
  cp "$runs/$name/log.jsonl" "$out/study/logs/$name.jsonl"
  cp "$runs/$name.txt" "$out/study/logs/$name.txt"
done
for attention in $weights; do
  [ -f "$runs/study-$attention-s0/checkpoint.pt" ] || continue
  "$python" -c "import sys; from minisoftpick.train import save_weights; save_weights(sys.argv[1], sys.argv[2])" \
    "$runs/study-$attention-s0" "$out/study-$attention.pt"
done
tar -czf "$out/logs.tar.gz" -C "$out" study/logs  # in case the analysis below runs out of time
pids=()
for name in "${names[@]}"; do
  # shellcheck disable=SC2086  # QUANT_FLAGS is a list of flags
  (timeout "${POST_SECONDS:-150}" "$python" -m minisoftpick.analyze "$runs/$name" --split val --batch-size 16 --out "$out/study/analysis/$name" &&
    timeout "${POST_SECONDS:-150}" "$python" experiments/quantize_checkpoints.py "$runs/$name" --out "$out/study/quantization" ${QUANT_FLAGS:-}) \
    > "$out/study/logs/$name.post.txt" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -q -n 1 "$out"/study/logs/*.post.txt
"$python" -c "import json, torch, triton; print(json.dumps({'device': torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', 'torch': torch.__version__, 'triton': triton.__version__}))" \
  > "$out/study/machine.json"
tar -czf "$out/study.tar.gz" -C "$out" study
rm -rf "$out/study" "$out/logs.tar.gz"
ls -la "$out"
exit "$status"
