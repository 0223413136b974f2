"""Train a small Llama-style model with a chosen attention normalizer.

    python -m minisoftpick.train --preset cpu --attention softpick          # a few minutes on a laptop
    python -m minisoftpick.train --preset gpu --attention softmax --max-minutes 8
    torchrun --nproc_per_node 2 -m minisoftpick.train --preset gpu          # data parallel (DDP)
    torchrun --nproc_per_node 2 -m minisoftpick.train --preset gpu --parallel fsdp   # sharded (FSDP2)
    python -m minisoftpick.train --preset cpu --out runs/x --resume         # continue runs/x exactly

A preset is a ``TrainConfig``; every field is also a flag (``--max-steps 300``, ``--tokenizer bpe``)
that overrides it. AdamW with linear warmup and cosine decay to ``min_lr``, gradient clipping,
bf16 autocast on a GPU. Every ``eval_interval`` steps the loss on held-out data is measured and
``<out>/log.jsonl`` gets a line (step, loss, lr, val_loss, tokens, elapsed) every ``log_interval``;
``<out>/checkpoint.pt`` holds the model config and weights, the optimizer, the step and the RNG.

The global batch of step s is drawn from a generator seeded with (seed, s) alone, so a resumed run
sees the same batches as an uninterrupted one, and N data-parallel processes (each taking 1/N of
that batch, gradients averaged by DDP) compute the same update as one process.

With several processes ``--parallel ddp`` (the default) replicates the model (DistributedDataParallel);
``--parallel fsdp`` shards parameters, gradients and optimizer state over the processes (FSDP2:
``fully_shard`` on every block, then on the whole model; bf16 compute with fp32 gradient reduction on
a GPU). Either way the checkpoint holds the full, unsharded state gathered on rank 0, so a run resumes
on any number of processes, and a finished run resumed is a no-op that says so.

``--task passkey`` trains on the synthetic passkey-retrieval task of ``minisoftpick.synthetic``
instead of Shakespeare. Shakespeare windows start with the tokenizer's BOS token (``--no-bos``: they do
not; ``data.random_batch`` says why) and the model records its id (``ModelConfig.bos_id``), so evaluation,
``generate`` and ``analyze`` read text the same way. ``--probe-interval N`` adds a "probe" to the log line
of every N-th step: sinks and activations of the model at that step (``probe``).
``--preset backcopy`` trains on the synthetic Bigram-Backcopy task instead, where a softmax model
grows an attention sink within minutes on a CPU; its probe is ``metrics.backcopy_report``.
The CPU recipe and the losses it reaches are in README.md, "Train one yourself on a laptop".
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from tqdm.auto import tqdm

from . import synthetic
from .cli import python_command, usage_errors
from .data import DATA_DIR, TOKENIZERS, bos_id, evenly_spaced_batches, load_tokens, random_batch, read_meta
from .files import atomic_path, write_text
from .metrics import analyze, backcopy_report
from .model import IGNORE_INDEX, ModelConfig, Transformer, attention_names, evaluating, lm_loss
from .settings import progress_disabled

TASKS = ("shakespeare", "passkey", "backcopy")
DEVICES = ("auto", "cpu", "cuda")
PARALLEL = ("ddp", "fsdp")
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
PASSKEY_VAL_SEED = 0  # synthetic tasks; training batches use seeds >= 2**32, so never a validation batch
STUDY_STEPS = 8000  # the study presets' cosine length; their --max-minutes may stop them first
PROBE_WINDOWS = 8  # validation windows the probe of ``probe_interval`` measures
PROBE_BATCH = 64  # backcopy: validation sequences its probe measures
Batch = tuple[Tensor, Tensor]


@dataclass
class TrainConfig:
    preset: str = "cpu"
    task: str = "shakespeare"  # or "passkey", "backcopy"
    tokenizer: str = "char"  # Shakespeare only: "char" or "bpe"
    bos: bool = True  # Shakespeare only: every window starts with the tokenizer's BOS id (data.random_batch)
    data_dir: str = str(DATA_DIR)
    attention: str = "softpick"
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_model: int = 128
    seq_len: int = 128
    batch_size: int = 32  # global: split evenly over data-parallel processes
    max_steps: int = 600
    max_minutes: float | None = None  # stop (and checkpoint) once training has run this long
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_batches: int = 20
    log_interval: int = 10
    checkpoint_interval: int = 200
    probe_interval: int = 0  # > 0: log sinks and activations every that many steps (``probe``)
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    parallel: str = "ddp"  # with several processes (torchrun): "ddp" replicates, "fsdp" shards (FSDP2)
    out: str = ""  # "": runs/<preset>-<attention>-s<seed>
    resume: bool = False


PRESETS = {
    # CI: a couple of seconds on a CPU.
    "smoke": TrainConfig(
        preset="smoke",
        n_layers=2,
        n_heads=2,
        d_model=32,
        seq_len=32,
        batch_size=8,
        max_steps=20,
        warmup_steps=4,
        eval_interval=10,
        eval_batches=2,
        log_interval=5,
        checkpoint_interval=10,
    ),
    # A few minutes on a 2-core laptop (about 0.8M parameters, char-level).
    "cpu": TrainConfig(preset="cpu"),
    # An H100: 4.9M parameters char-level (head_dim 64), 16k tokens per step, 1500 steps (about 5
    # epochs of the training plays). Smaller than a typical "small" model on purpose: its bf16
    # weights (9.3 MiB) can be committed and analysed on a laptop.
    "gpu": TrainConfig(
        preset="gpu",
        n_layers=6,
        n_heads=4,
        d_model=256,
        seq_len=512,
        batch_size=32,
        max_steps=1500,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=100,
        eval_interval=250,
        eval_batches=40,
        checkpoint_interval=500,
    ),
    # Passkey retrieval (minisoftpick.synthetic) at 256 tokens, for the long-context notebook; tested
    # on longer contexts. (1500 steps of 32 x 512 tokens left all three normalizers at chance.)
    "passkey": TrainConfig(
        preset="passkey",
        task="passkey",
        n_layers=4,
        n_heads=4,
        d_model=128,
        seq_len=256,
        batch_size=64,
        max_steps=6000,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=200,
        eval_interval=500,
        eval_batches=8,
        checkpoint_interval=1000,
    ),
    # Bigram-Backcopy (minisoftpick.synthetic): 1 layer, 1 head, 62k parameters. Softmax puts over 0.3
    # of a dormant query's weight on BOS (a sink) within a few thousand steps on a CPU; measured in
    # results/backcopy/README.md. The learning rate is constant after the warm-up (min_lr = lr), so a
    # run stopped early, or resumed with a larger --max-steps, is the same run as a shorter or longer one.
    "backcopy": TrainConfig(
        preset="backcopy",
        task="backcopy",
        n_layers=1,
        n_heads=1,
        d_model=64,
        seq_len=64,
        batch_size=64,
        max_steps=3000,
        lr=3e-4,
        min_lr=3e-4,
        warmup_steps=200,
        weight_decay=1e-4,
        eval_interval=100,
        eval_batches=4,
        log_interval=50,
        checkpoint_interval=500,
        probe_interval=100,
    ),
}
# The GPU study of sinks and massive activations (experiments/study.sh, results/study/): the gpu
# preset trained longer, logging sinks and activations every probe_interval steps; and its larger
# size, 8 layers x d_model 512 (25.7M parameters, head_dim 64), 5x the compute per step, so half the steps.
PRESETS["study"] = dataclasses.replace(
    PRESETS["gpu"], preset="study", max_steps=STUDY_STEPS, probe_interval=250
)
PRESETS["study_large"] = dataclasses.replace(
    PRESETS["study"], preset="study_large", n_layers=8, n_heads=8, d_model=512, max_steps=STUDY_STEPS // 2
)


def preset(name: str, **overrides) -> TrainConfig:
    """The preset ``name`` with some fields replaced, e.g. ``preset("smoke", attention="softmax")``."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return dataclasses.replace(PRESETS[name], **overrides)


_FIELD_TYPES = {  # TrainConfig's annotations -> the Python types each accepts
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
}
_COUNTS = (  # fields that must be >= 1
    "n_layers",
    "n_heads",
    "d_model",
    "max_steps",
    "batch_size",
    "seq_len",
    "eval_interval",
    "eval_batches",
    "log_interval",
    "checkpoint_interval",
)
MAX_SEED = 2**31 - 1  # step_generator seeds with (seed + 1) * 2**32 + step, which must fit in 64 bits


def check_config(cfg: TrainConfig, world_size: int = 1) -> None:
    """Raise TypeError (wrong type) or ValueError (bad value) naming the field when ``cfg`` cannot be
    trained: every field is checked, and the model shape by ``ModelConfig`` itself."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    for f in dataclasses.fields(cfg):
        value, accepted = getattr(cfg, f.name), _FIELD_TYPES[f.type]
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            raise TypeError(f"{f.name} must be {f.type}, got {value!r}")
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if cfg.tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {cfg.tokenizer!r}")
    if cfg.attention not in attention_names():
        raise ValueError(f"attention must be one of {attention_names()}, got {cfg.attention!r}")
    if cfg.device not in DEVICES or (cfg.device == "cuda" and not torch.cuda.is_available()):
        raise ValueError(f"device must be one of {DEVICES} (cuda only with a GPU), got {cfg.device!r}")
    if cfg.parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {PARALLEL}, got {cfg.parallel!r}")
    for name in _COUNTS:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.n_kv_heads is not None and cfg.n_kv_heads < 1:
        raise ValueError(f"n_kv_heads must be None or >= 1, got {cfg.n_kv_heads}")
    if cfg.warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {cfg.warmup_steps}")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {cfg.seed}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {cfg.lr}")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {cfg.weight_decay}")
    if not cfg.grad_clip > 0:  # also refuses NaN; inf means no clipping
        raise ValueError(
            f"grad_clip must be > 0 (the largest gradient norm; inf: no clipping), got {cfg.grad_clip}"
        )
    if cfg.max_minutes is not None and not cfg.max_minutes >= 0:  # 0: stop after the first step
        raise ValueError(f"max_minutes must be None or >= 0, got {cfg.max_minutes}")
    if not cfg.data_dir:
        raise ValueError("data_dir must name a folder, got ''")
    model_config(cfg, vocab_size=1)  # ModelConfig names the field when heads and widths do not fit
    if cfg.batch_size % world_size != 0:
        raise ValueError(
            f"batch_size ({cfg.batch_size}) must be a multiple of the number of processes ({world_size})"
        )
    if cfg.probe_interval < 0:
        raise ValueError(f"probe_interval must be >= 0 (0: no probe), got {cfg.probe_interval}")
    if not 0 <= cfg.min_lr <= cfg.lr:
        raise ValueError(f"min_lr must be in [0, lr={cfg.lr}], got {cfg.min_lr}")


def run_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out or f"runs/{cfg.preset}-{cfg.attention}-s{cfg.seed}")


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay from ``lr`` to ``min_lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator that draws the global batch of ``step``: a function of (seed, step) only."""
    return torch.Generator().manual_seed((seed + 1) * 2**32 + step)


def load_task(
    cfg: TrainConfig,
) -> tuple[int, int | None, Callable[[torch.Generator], Batch], np.ndarray | list[Batch]]:
    """(vocab size, BOS id or None, sample(generator) -> a global training batch, validation data for
    ``evaluate``). A synthetic task's vocabulary has its own BOS (backcopy) or none (passkey): ``ModelConfig.bos_id`` stays None."""
    if cfg.task != "shakespeare":
        make_batch, vocab_size = synthetic.SYNTHETIC_TASKS[cfg.task]

        def sample(generator: torch.Generator) -> Batch:
            return make_batch(cfg.batch_size, cfg.seq_len, generator=generator)

        val_generator = torch.Generator().manual_seed(PASSKEY_VAL_SEED)
        return vocab_size, None, sample, [sample(val_generator) for _ in range(cfg.eval_batches)]
    train_tokens = load_tokens("train", cfg.tokenizer, cfg.data_dir)
    vocab_size = read_meta(cfg.data_dir)["tokenizers"][cfg.tokenizer]["vocab_size"]
    bos = bos_id(cfg.tokenizer, cfg.data_dir) if cfg.bos else None
    return (
        vocab_size,
        bos,
        lambda generator: random_batch(train_tokens, cfg.batch_size, cfg.seq_len, generator, bos),
        load_tokens("val", cfg.tokenizer, cfg.data_dir),
    )


def run_config(state: dict) -> TrainConfig:
    """The ``TrainConfig`` of a checkpoint's run; a ``data_dir`` missing here (the run was trained on
    another machine) becomes this checkout's ``DATA_DIR`` (``load_tokens`` checks the files' sha256s).
    A run saved before windows started with BOS has no ``bos`` field: it was trained without one."""
    cfg = TrainConfig(**{"bos": False, **state["train_config"]})
    if not Path(cfg.data_dir).is_dir():
        cfg = dataclasses.replace(cfg, data_dir=str(DATA_DIR))
    return cfg


def analysis_batch(cfg: TrainConfig, split: str, batch_size: int, bos: int | None = None) -> Batch:
    """``batch_size`` windows of ``cfg.seq_len`` tokens spread evenly over ``split`` (synthetic tasks: samples),
    each starting with ``bos`` when given (the model's ``config.bos_id``: read text as it was trained)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if cfg.task in synthetic.SYNTHETIC_TASKS:
        generator = (
            torch.Generator().manual_seed(PASSKEY_VAL_SEED) if split == "val" else step_generator(cfg.seed, 0)
        )
        make_batch, _ = synthetic.SYNTHETIC_TASKS[cfg.task]
        return make_batch(batch_size, cfg.seq_len, generator=generator)
    tokens = load_tokens(split, cfg.tokenizer, cfg.data_dir)
    return next(evenly_spaced_batches(tokens, batch_size, cfg.seq_len, 1, bos))


def model_config(cfg: TrainConfig, vocab_size: int, bos: int | None = None) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab_size,
        seq_len=cfg.seq_len,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_kv_heads,
        d_model=cfg.d_model,
        attention=cfg.attention,
        bos_id=bos,
    )


def backward(loss: Tensor) -> None:
    """loss.backward() on the calling thread. By default autograd hands a CUDA backward to a thread
    of its own; on the H200's host that handover cost one forward+backward of the Triton kernel
    802 against 277 us, and of SDPA's cuDNN attention 252 against 129 us (bench/bench_host.py). In
    whole training steps softmax was faster this way in every same-process comparison and softpick
    sometimes faster, sometimes slower (bench/NOTES.md). The gradients are the same either way."""
    with torch.autograd.set_multithreading_enabled(False):
        loss.backward()


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    tokens_or_batches: np.ndarray | Tensor | Iterable[Batch],
    *,
    batch_size: int = 16,
    seq_len: int | None = None,
    max_batches: int = 20,
) -> float:
    """Mean loss per scored token on held-out data.

    ``tokens_or_batches`` is a 1-D array of token ids (``load_tokens("val")``; read as
    ``max_batches`` batches of ``batch_size`` windows of ``seq_len`` tokens, default the model's
    ``seq_len``, spread evenly over it, the same windows every time, each starting with the model's
    BOS when it was trained with one: ``model.config.bos_id``) or an iterable of (x, y) batches (at
    most ``max_batches`` of them are used).
    """
    if isinstance(tokens_or_batches, Tensor | np.ndarray):
        tokens = (
            tokens_or_batches.cpu().numpy() if isinstance(tokens_or_batches, Tensor) else tokens_or_batches
        )
        if tokens.ndim != 1:
            raise ValueError(f"tokens must be 1-D token ids, got shape {tokens.shape}")
        batches = evenly_spaced_batches(
            tokens, batch_size, seq_len or model.config.seq_len, max_batches, model.config.bos_id
        )
    else:
        batches = itertools.islice(tokens_or_batches, max_batches)
    total, scored = 0.0, 0
    with evaluating(model) as device, _autocast(device):
        for x, y in batches:
            y = y.to(device)
            total += lm_loss(model(x.to(device)), y, reduction="sum").item()
            scored += int((y != IGNORE_INDEX).sum())
    if scored == 0:
        raise ValueError("tokens_or_batches holds no scored target (every y is -100 or there is no batch)")
    return total / scored


CHECKPOINT_KEYS = ("model_config", "train_config", "model", "step", "elapsed")  # save_weights keeps these
RESUME_KEYS = ("optimizer", "rng")  # what only a run's own checkpoint.pt has


def _train_one() -> str:
    return f"train one with `{python_command('minisoftpick.train', '--out', 'DIR')}`"


def read_checkpoint(path: str | Path) -> dict:
    """The dict ``train`` saves (a run folder or its checkpoint.pt), loaded on the CPU.

    Anything else (an empty or truncated file, a bare state_dict, a tensor, a token file) is a
    ValueError naming the file and what to do instead.
    """
    path = Path(path)
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: {_train_one()}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty, not a checkpoint: {_train_one()}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds for a damaged or foreign file
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"{path} is not a checkpoint written by minisoftpick.train (torch.load: {first_line}): {_train_one()}"
        ) from None
    if isinstance(state, dict) and all(key in state for key in CHECKPOINT_KEYS):
        return state
    if isinstance(state, dict) and state and all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{path} holds a bare state_dict (weights without the model config): load it with "
            f"Transformer(ModelConfig(...)).load_state_dict(...), or {_train_one()}"
        )
    if isinstance(state, dict):
        what = f"a dict without {[key for key in CHECKPOINT_KEYS if key not in state]}"
    else:
        what = f"a {type(state).__name__}"
    raise ValueError(f"{path} holds {what}, not a checkpoint written by minisoftpick.train: {_train_one()}")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """The trained model saved at ``path`` (a run folder or its checkpoint.pt), in eval mode."""
    state = read_checkpoint(path)
    model = Transformer(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def save_weights(path: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A shareable copy of the checkpoint at ``path``: configs, step and weights in ``dtype``, no optimizer.

    ``load_checkpoint`` reads it like a full checkpoint (the weights come back in float32).
    """
    state = read_checkpoint(path)
    weights = {name: t.to(dtype) if t.is_floating_point() else t for name, t in state["model"].items()}
    compact = {key: state[key] for key in CHECKPOINT_KEYS if key != "model"}
    with atomic_path(out) as tmp:
        torch.save({**compact, "model": weights}, tmp)
    return Path(out)


# The full (unsharded) state, gathered on rank 0 and kept on the CPU; parameters named by their
# path in the model (also in the optimizer state), so any number of processes can load it.
_FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _save_checkpoint(
    path: Path, model: Transformer, optimizer, cfg: TrainConfig, step: int, elapsed: float, main: bool
):
    """Gather the full state (a collective: every process calls this) and write it atomically on rank 0."""
    weights = get_model_state_dict(model, options=_FULL_STATE)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=_FULL_STATE)
    if not main:
        return
    state = {
        "model_config": asdict(model.config),
        "train_config": asdict(cfg),
        "model": weights,
        "optimizer": optimizer_state,
        "step": step,
        "elapsed": elapsed,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(out: Path, model: Transformer, optimizer, sharded: bool) -> tuple[int, float]:
    """Load ``out``'s checkpoint into the (possibly sharded) model and optimizer; (step, elapsed)."""
    state = read_checkpoint(out)
    if not all(key in state for key in RESUME_KEYS):
        raise ValueError(
            f"--resume: {out} holds a weights-only copy (no optimizer or RNG state); resume needs the "
            f"{CHECKPOINT} a run writes, or start a new run without --resume"
        )
    if state["model_config"] != asdict(model.config):
        raise ValueError(
            f"--resume: the model in {out} is {state['model_config']}, not {asdict(model.config)}"
        )
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state["model"], options=full)
    by_position = all(isinstance(key, int) for key in state["optimizer"]["state"])  # before --parallel
    if by_position and sharded:
        raise ValueError(
            f"--resume: {out} was written by an older minisoftpick (optimizer state by position, not by "
            "name): resume it once without --parallel fsdp, after which it is saved by name"
        )
    if by_position:
        optimizer.load_state_dict(state["optimizer"])
    else:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=full)
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["step"], state["elapsed"]


def _keep_log_until(path: Path, step: int) -> None:
    """Keep the log's records up to ``step`` (the checkpoint's): the resumed run writes the later
    ones again, and a line cut short by a crash is dropped. Rewritten atomically."""
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if record["step"] > step:
            break
        kept.append(line + "\n")
    write_text(path, "".join(kept))


def _optimizer(model: Transformer, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, sink logits or query scales)."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


@dataclass
class _Processes:
    rank: int
    world_size: int
    device: torch.device
    joined: bool = False  # this call started the process group (and so ends it)


def _start_processes(device: str) -> _Processes:
    """This process's rank and device; joins the process group when torchrun started several
    (or uses the one the caller already started, e.g. to train several runs in one launch)."""
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return _Processes(0, 1, torch.device("cuda" if cuda else "cpu"))
    if cuda:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if cuda else "gloo")
    return _Processes(dist.get_rank(), world_size, device, joined)


def train(cfg: TrainConfig) -> Transformer:
    """Train (or with ``cfg.resume`` continue) the model ``cfg`` describes; return it (rank 0 saves it)."""
    check_config(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    procs = _start_processes(cfg.device)
    try:
        return _train(cfg, procs)
    finally:
        if procs.joined:
            dist.destroy_process_group()


def _distribute(model: Transformer, cfg: TrainConfig, procs: _Processes) -> torch.nn.Module:
    """The module to train: ``model`` itself for one process, DDP around it, or ``model`` sharded in
    place by FSDP2 (every block, then the root; bf16 parameters and fp32 reductions on a GPU)."""
    if procs.world_size == 1:
        return model
    if cfg.parallel == "ddp":
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[procs.device.index] if procs.device.type == "cuda" else None
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(procs.device.type, (procs.world_size,))
    cuda = procs.device.type == "cuda"
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if cuda
        else MixedPrecisionPolicy()
    )
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    return fully_shard(model, mesh=mesh, mp_policy=policy)


def _train(cfg: TrainConfig, procs: _Processes) -> Transformer:
    main = procs.rank == 0
    out = run_dir(cfg)
    device = procs.device
    vocab_size, bos, sample, val_data = load_task(cfg)
    torch.manual_seed(cfg.seed)
    model = Transformer(model_config(cfg, vocab_size, bos)).to(device)
    n_params = model.num_params()
    ddp_model = _distribute(model, cfg, procs)
    optimizer = _optimizer(model, cfg, device)  # after sharding: FSDP2 replaces the parameters
    sharded = procs.world_size > 1 and cfg.parallel == "fsdp"
    step, elapsed = _resume(out, model, optimizer, sharded) if cfg.resume else (0, 0.0)
    if step >= cfg.max_steps:
        if main:
            print(
                f"{out} already finished at step {step} (max_steps {cfg.max_steps}): nothing to do; "
                "give a larger --max-steps to train further"
            )
        return model
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            _keep_log_until(out / LOG, step)
        log = open(out / LOG, "a" if cfg.resume else "w")
        print(
            f"{cfg.preset} preset, {cfg.attention} attention, {n_params:,} parameters, "
            f"{procs.world_size} process(es) ({cfg.parallel if procs.world_size > 1 else 'single'}) "
            f"on {device.type}, writing {out}"
        )
    local = cfg.batch_size // procs.world_size
    rows = slice(procs.rank * local, (procs.rank + 1) * local)
    in_notebook = "ipykernel" in sys.modules
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        desc=cfg.attention,
        dynamic_ncols=True,
        disable=not main or progress_disabled() or not (sys.stderr.isatty() or in_notebook),
    )
    started = time.perf_counter() - elapsed
    losses, val_loss = [], None
    while step < cfg.max_steps:
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = sample(step_generator(cfg.seed, step))
        with _autocast(device):
            logits = ddp_model(x[rows].to(device))
        loss = lm_loss(logits, y[rows].to(device))
        optimizer.zero_grad(set_to_none=True)
        backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        bar.update()
        losses.append(loss.detach())
        elapsed = time.perf_counter() - started
        out_of_time = cfg.max_minutes is not None and _agree(elapsed > 60 * cfg.max_minutes, procs)
        last = step == cfg.max_steps or out_of_time
        probing = cfg.probe_interval > 0 and (step % cfg.probe_interval == 0 or last)
        if step % cfg.log_interval == 0 or step % cfg.eval_interval == 0 or probing or last:
            mean_loss = torch.stack(losses).mean()
            losses = []
            if procs.world_size > 1:
                dist.all_reduce(mean_loss)  # a sum (gloo has no average)
                mean_loss /= procs.world_size
            if not math.isfinite(mean_loss.item()):
                raise FloatingPointError(f"training loss is {mean_loss.item()} at step {step}")
            record = {
                "step": step,
                "loss": mean_loss.item(),
                "lr": lr,
                "val_loss": None,
                "tokens": step * cfg.batch_size * cfg.seq_len,
                "elapsed": round(elapsed, 3),
            }
            if step % cfg.eval_interval == 0 or last:  # every process: FSDP gathers weights to run
                record["val_loss"] = evaluate(
                    model,
                    val_data,
                    batch_size=cfg.batch_size,
                    seq_len=cfg.seq_len,
                    max_batches=cfg.eval_batches,
                )
                val_loss = record["val_loss"]
            if main and probing:
                record["probe"] = probe(model, cfg)
            if main:
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}", val_loss=f"{val_loss:.3f}" if val_loss else "-")
        if step % cfg.checkpoint_interval == 0 or last:
            _save_checkpoint(out / CHECKPOINT, model, optimizer, cfg, step, elapsed, main)
        if out_of_time:
            break
    bar.close()
    if main:
        log.close()
        print(f"step {step}: val_loss {val_loss:.4f}, {elapsed / 60:.1f} min; checkpoint {out / CHECKPOINT}")
    return model


def probe(model: Transformer, cfg: TrainConfig) -> dict:
    """Sinks and activations now: ``metrics.analyze`` on ``PROBE_WINDOWS`` validation windows, per
    layer without the per-head zero fractions (one log line stays small). A backcopy run's probe is
    ``metrics.backcopy_report`` on ``PROBE_BATCH`` validation sequences: the sink, copy, drain and peak."""
    if cfg.task == "backcopy":
        return backcopy_report(model, analysis_batch(cfg, "val", PROBE_BATCH)[0])
    x, y = analysis_batch(cfg, "val", PROBE_WINDOWS, model.config.bos_id)
    report, _ = analyze(model, x, y)
    for layer in report["layers"]:
        del layer["zero_fraction"]
    return report


def _agree(flag: bool, procs: _Processes) -> bool:
    """Rank 0's ``flag`` on every process (time budgets must stop every process at the same step)."""
    if procs.world_size == 1:
        return flag
    decision = torch.tensor([flag], dtype=torch.int32, device=procs.device)
    dist.broadcast(decision, src=0)
    return bool(decision.item())


PROG = "python -m minisoftpick.train"
_FLAG_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float}
_CHOICES = {
    "task": TASKS,
    "tokenizer": TOKENIZERS,
    "attention": attention_names(),
    "device": DEVICES,
    "parallel": PARALLEL,
}


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """A ``TrainConfig``: ``--preset`` (default "cpu"), then any field given as a flag replaces it."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(PRESETS["cpu"], f.name)
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(
                flag,
                type=_FLAG_TYPES[f.type],
                choices=_CHOICES.get(f.name),
                default=None,
                help=f"(cpu preset: {default})",
            )
    args = vars(parser.parse_args(argv))
    name = args.pop("preset")
    return preset(name, **{k: v for k, v in args.items() if v is not None})


@usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> None:
    """The command line: bad flags, configs, data or checkpoints end as one line and exit code 2."""
    train(parse_args(argv))


if __name__ == "__main__":
    main()
