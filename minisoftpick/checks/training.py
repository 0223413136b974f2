"""Notebook 07's exercises: the parameter count of a ModelConfig, the learning-rate schedule, gradient clipping."""

from __future__ import annotations

import torch

from .. import tolerances
from .core import Exercise, Mismatch, Property, call

DESCRIBED = "lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110"


def schedule(fn, cfg, steps: range) -> torch.Tensor:
    """``fn(cfg, step)`` at every step, as a float64 tensor."""
    values = []
    for step in steps:
        value = fn(cfg, step)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Mismatch(f"step {step} returned {type(value).__name__}, expected a Python float")
        values.append(float(value))
    return torch.tensor(values, dtype=torch.float64)


def trainer_learning_rate():
    from .. import train  # the trainer loads when the check runs, not with the course

    return train.learning_rate


def trainer_schedule(cfg, steps: range) -> torch.Tensor:
    return schedule(trainer_learning_rate(), cfg, steps)


def small_config(steps: range):
    def inputs(g: torch.Generator):
        from .. import train

        return call(train.preset("cpu", lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110), steps)

    return inputs


def every_preset(g: torch.Generator):
    from .. import train

    return call(list(train.PRESETS.values()))


def every_step(fn, configs) -> torch.Tensor:
    """``fn``'s schedule at every step of every config, one after the other."""
    return torch.cat([schedule(fn, cfg, range(cfg.max_steps + 1)) for cfg in configs])


learning_rate = Exercise(
    name="learning_rate",
    contract="fn(cfg, step) -> float: linear warmup to cfg.lr, then cosine decay to cfg.min_lr",
    reference=trainer_schedule,
    observe=schedule,
    seed=0,
    tolerance=tolerances.SCHEDULE,
    properties=[
        Property(
            "warmup rises linearly from lr / warmup_steps",
            f"{DESCRIBED}, steps 0..9",
            small_config(range(0, 10)),
            "at step s < warmup_steps return lr * (s + 1) / warmup_steps: step 0 already trains",
        ),
        Property(
            "cosine decay from lr",
            f"{DESCRIBED}, steps 10..109",
            small_config(range(10, 110)),
            "after warmup, progress = (step - warmup_steps) / (max_steps - warmup_steps) and lr_t = min_lr + "
            "(lr - min_lr) * (1 + cos(pi * progress)) / 2, a cosine rather than a straight line",
        ),
        Property(
            "ends at min_lr and stays there",
            f"{DESCRIBED}, steps 110..129",
            small_config(range(110, 130)),
            "at and after max_steps return min_lr, not 0 (clamp progress at 1)",
        ),
        Property(
            "every preset's schedule",
            "every preset of the trainer, every step",
            every_preset,
            "read every number from cfg: nothing hard-coded",
            observe=every_step,
            expected=lambda configs: every_step(trainer_learning_rate(), configs),
        ),
    ],
)


# ---- count_params: fn(c) -> int --------------------------------------------------------------------

CHAR_VOCAB, BPE_VOCAB = 85, 2049  # the two tokenizers' vocabularies, BOS included


def count(fn, c) -> torch.Tensor:
    """``fn(c)``, which must be a Python int, as a float64 tensor."""
    value = fn(c)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Mismatch(f"your function returned {type(value).__name__}, expected a Python int")
    return torch.tensor(float(value), dtype=torch.float64)


def built_params(c) -> torch.Tensor:
    """How many parameters ``Transformer(c)`` has, built on the meta device (no memory, no initialisation)."""
    from ..model import Transformer

    with torch.device("meta"):
        n = Transformer(c).num_params()
    return torch.tensor(float(n), dtype=torch.float64)


def a_config(**fields):
    def inputs(g: torch.Generator):
        from ..model import ModelConfig

        return call(ModelConfig(**{"vocab_size": CHAR_VOCAB, **fields}))

    return inputs


def every_config(g: torch.Generator):
    from .. import model, train

    return call(
        [
            train.model_config(train.preset(name, attention=attention), vocab)
            for name in train.PRESETS
            for attention in model.attention_names()
            for vocab in (CHAR_VOCAB, BPE_VOCAB)
        ]
    )


def counts(fn, configs) -> torch.Tensor:
    return torch.stack([count(fn, c) for c in configs])


count_params = Exercise(
    name="count_params",
    contract="fn(c) -> int: the number of parameters of Transformer(c), from the ModelConfig c alone",
    reference=built_params,
    observe=count,
    seed=12,
    tolerance=tolerances.EXACT,
    properties=[
        Property(
            "returns an int",
            "ModelConfig(vocab_size=85), softpick",
            a_config(),
            "return a Python int (int(...) around a tensor or a float)",
            layout=True,
        ),
        Property(
            "a dense softmax model: embedding, blocks, final norm, head",
            "ModelConfig(vocab_size=85, n_layers=2, d_model=64, n_heads=4, attention='softmax')",
            a_config(n_layers=2, d_model=64, n_heads=4, attention="softmax"),
            "V d for the embedding and again for the untied head, per layer 2 H D d + 2 H_kv D d, 3 d F for "
            "SwiGLU's three matrices (F = c.ffn_hidden) and 2 d for the two RMSNorm gains, plus d for the final norm",
        ),
        Property(
            "grouped-query attention: W_k and W_v have n_kv_heads heads",
            "ModelConfig(vocab_size=85, n_layers=3, d_model=128, n_heads=8, n_kv_heads=2, attention='softmax')",
            a_config(n_layers=3, d_model=128, n_heads=8, n_kv_heads=2, attention="softmax"),
            "W_q and W_o are H D x d, W_k and W_v only H_kv D x d: use c.n_kv_heads for them",
        ),
        *(
            Property(
                "per-head scalars of sink and scaled_softpick",
                f"ModelConfig(vocab_size=85, n_layers=2, d_model=64, n_heads=4, attention={attention!r})",
                a_config(n_layers=2, d_model=64, n_heads=4, attention=attention),
                "the learnable sink logit and the scaled-softpick query scale are one number per head and "
                "layer: p = n_heads for the attentions in model.PARAMETRIC_ATTENTIONS, 0 for the others",
            )
            for attention in ("sink", "scaled_softpick")
        ),
        Property(
            "every preset and attention",
            "the model of every trainer preset with every attention, both vocabularies (85 and 2049)",
            every_config,
            "read every size from c (c.vocab_size, c.ffn_hidden, c.head_dim, c.n_kv_heads): nothing hard-coded",
            observe=counts,
            expected=lambda configs: torch.stack([built_params(c) for c in configs]),
        ),
    ],
)

# ---- clip_grad_norm: fn(params, max_norm) -> total norm --------------------------------------------


def with_grads(grads: list[torch.Tensor]) -> list[torch.nn.Parameter]:
    """Parameters (values zero) holding copies of ``grads`` as their .grad."""
    params = []
    for grad in grads:
        p = torch.nn.Parameter(torch.zeros_like(grad))
        p.grad = grad.clone()
        params.append(p)
    return params


def clipped(fn, grads, max_norm) -> torch.Tensor:
    """What the check compares: fn's returned norm, then every .grad after ``fn(params, max_norm)``, flat."""
    params = with_grads(grads)
    total = fn(params, max_norm)
    if isinstance(total, bool) or not isinstance(total, torch.Tensor | float | int):
        raise Mismatch(
            f"your function returned {type(total).__name__}, expected the total norm (a tensor or float)"
        )
    total = torch.as_tensor(total, dtype=torch.float64).detach().reshape(-1)
    if total.numel() != 1:
        raise Mismatch(f"your function returned {total.numel()} numbers, expected one total norm")
    return torch.cat([total, *(p.grad.detach().double().flatten() for p in params)])


def torch_clipped(grads, max_norm) -> torch.Tensor:
    return clipped(lambda params, m: torch.nn.utils.clip_grad_norm_(params, m), grads, max_norm)


def norm_only(fn, grads, max_norm) -> torch.Tensor:
    """Only the norm ``fn`` returns (the first entry of ``clipped``)."""
    return clipped(fn, grads, max_norm)[:1]


def torch_norm(grads, max_norm) -> torch.Tensor:
    return torch_clipped(grads, max_norm)[:1]


def gradients(*values: list[float]):
    return lambda g: call([torch.tensor(v, dtype=torch.float64) for v in values], 1.0)


def random_gradients(g: torch.Generator):
    shapes = [(16, 8), (8,), (3, 4, 5), (1,)]
    return call([torch.randn(s, generator=g, dtype=torch.float64) for s in shapes], 1.0)


clip_grad_norm = Exercise(
    name="clip_grad_norm",
    contract="fn(params, max_norm) -> total: the L2 norm of all gradients together; if above max_norm, scale "
    "every p.grad in place by max_norm / (total + 1e-6)",
    reference=torch_clipped,
    observe=clipped,
    seed=13,
    properties=[
        Property(
            "returns the norm before clipping",
            "one gradient [5.0], max_norm=1: the norm is 5 before clipping, 1 after",
            gradients([5.0]),
            "compute the total norm first and return it, the norm the gradients had before you scaled them",
            observe=norm_only,
            expected=torch_norm,
        ),
        Property(
            "one L2 norm over every gradient",
            "gradients [3.0] and [4.0], max_norm=1: together their norm is 5",
            gradients([3.0], [4.0]),
            "total = sqrt of the sum of every squared entry of every gradient: not the sum of the gradients' "
            "norms, not a sum of absolute values",
            observe=norm_only,
            expected=torch_norm,
        ),
        Property(
            "small gradients are left alone",
            "gradients [0.3, 0.0] and [0.0, 0.4] (norm 0.5), max_norm=1",
            gradients([0.3, 0.0], [0.0, 0.4]),
            "clip only when total > max_norm: the factor is min(1, max_norm / (total + 1e-6)), never above 1",
        ),
        Property(
            "scales p.grad in place",
            "one gradient [6.0, 8.0], max_norm=1",
            gradients([6.0, 8.0]),
            "change each p.grad itself (p.grad.mul_(factor)); `grad = grad * factor` in a loop only rebinds a "
            "name and leaves the gradients as they were",
        ),
        Property(
            "one factor for every gradient",
            "gradients [3.0, 0.0] and [0.0, 40.0], max_norm=1",
            gradients([3.0, 0.0], [0.0, 40.0]),
            "scale every gradient by the same max_norm / (total + 1e-6): clipping each parameter to max_norm "
            "on its own changes the direction of the update",
        ),
        Property(
            "random gradients",
            "4 gradients of shapes [16, 8], [8], [3, 4, 5], [1], max_norm=1",
            random_gradients,
            "total over all entries of all gradients; one factor min(1, max_norm / (total + 1e-6)) for all",
        ),
    ],
)
