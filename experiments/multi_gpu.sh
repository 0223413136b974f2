#!/usr/bin/env bash
# One GPU against two (DDP and FSDP2), for the course's `gpu` preset and a model of about 100M
# parameters (102,258,432: 14 layers, d_model 768, 12 heads, BPE, 1024 tokens, 32 sequences a step).
#   bash experiments/multi_gpu.sh OUT_DIR          # on a host with 2 GPUs (written for 2 x H200)
#   NPROC=1 bash experiments/multi_gpu.sh OUT_DIR  # the single-GPU baseline: DDP and FSDP2 at world size 1
# Writes OUT_DIR/<model>-<mode>.jsonl (the logs), OUT_DIR/summary.json and OUT_DIR/summary.md:
# tokens per second (after the first logged step), the largest relative difference of each logged
# training loss from the 1-GPU run's, and 2-GPU throughput over 1-GPU throughput (target >= 1.8x on
# the 100M model). Every run has the same global batch, so the loss curves should agree.
set -euo pipefail
out=${1:?usage: multi_gpu.sh OUT_DIR}
runs=${RUNS_DIR:-runs/multi_gpu}
steps=${STEPS:-300}
nproc=${NPROC:-2}
extra=${EXTRA_FLAGS:-}  # appended to every run; a CPU rehearsal of this script:
# STEPS=20 EXTRA_FLAGS="--device cpu --n-layers 1 --d-model 32 --n-heads 2 --seq-len 32 --batch-size 4" ...
# NVLink SHARP / multicast stay off on the lent machines; torchrun's workers inherit these.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python=${PYTHON:-python}
mkdir -p "$out" "$runs"
$python -m minisoftpick.data check || $python -m minisoftpick.data prepare
declare -A model_flags=(
  [gpu]="--preset gpu"
  [100m]="--preset gpu --tokenizer bpe --n-layers 14 --d-model 768 --n-heads 12 --seq-len 1024 --lr 6e-4 --min-lr 6e-5"
)
common="--max-steps $steps --log-interval 10 --eval-interval $steps --checkpoint-interval $steps $extra"
for model in gpu 100m; do
  flags="${model_flags[$model]} $common"
  # shellcheck disable=SC2086  # the flags are meant to split
  $python -m minisoftpick.train $flags --out "$runs/$model-1gpu"
  for mode in ddp fsdp; do
    $python -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m minisoftpick.train $flags \
      --parallel "$mode" --out "$runs/$model-${nproc}gpu-$mode"
  done
  for run in 1gpu ${nproc}gpu-ddp ${nproc}gpu-fsdp; do cp "$runs/$model-$run/log.jsonl" "$out/$model-$run.jsonl"; done
done
$python - "$out" "$nproc" <<'PY'
import json, platform, shutil, subprocess, sys
from pathlib import Path

out, nproc = Path(sys.argv[1]), int(sys.argv[2])
runs = ("1gpu", f"{nproc}gpu-ddp", f"{nproc}gpu-fsdp")
query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
gpus = subprocess.run(query, capture_output=True, text=True).stdout.split("\n") if shutil.which("nvidia-smi") else []
machine = [name for name in gpus if name] or [f"CPU only ({platform.machine()})"]
summary = {"machine": machine, "command": f"NPROC={nproc} bash experiments/multi_gpu.sh {out}", "runs": {}}
rows = ["| model | run | tokens/s | x 1 GPU | max rel. loss diff vs 1 GPU |", "|---|---|---|---|---|"]
for model in ("gpu", "100m"):
    logs = {run: [json.loads(line) for line in (out / f"{model}-{run}.jsonl").read_text().splitlines()]
            for run in runs}
    def speed(log):
        return (log[-1]["tokens"] - log[0]["tokens"]) / (log[-1]["elapsed"] - log[0]["elapsed"])
    base = speed(logs["1gpu"])
    for run, log in logs.items():
        diff = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(log, logs["1gpu"], strict=True))
        summary["runs"][f"{model}-{run}"] = {"tokens_per_s": speed(log), "speedup": speed(log) / base,
                                            "max_rel_loss_diff": diff, "final_val_loss": log[-1]["val_loss"]}
        rows.append(f"| {model} | {run} | {speed(log):,.0f} | {speed(log) / base:.2f} | {diff:.2e} |")
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
(out / "summary.md").write_text("\n".join([f"Machine: {', '.join(summary['machine'])}", "", *rows]) + "\n")
print("\n".join(rows))
PY
