"""Notebook 10's exercises: the passkey exact-match metric, scaled softpick's log-position query scale, and a
learnable-sink normalizer registered through the public registry and trained in a smoke model."""

from __future__ import annotations

import contextlib
import math

import torch

from .. import normalizers, synthetic, tolerances
from .core import Exercise, Mismatch, Property, call, number

# ---- passkey_exact_match: fn(logits, y) -> the fraction of sequences retrieved --------------------------

EXACT_HINT = (
    "scored = y != -100; right = (logits.argmax(-1) == y) | ~scored; the answer is right.all(-1) averaged "
    "over the batch"
)
PASSKEY_LEN, PASSKEY_SEQ = 5, 24


def passkey_logits(g: torch.Generator, batch: int, wrong_digits: list[int]):
    """(logits, y) of ``batch`` passkey sequences: the argmax is right at every scored position except
    ``wrong_digits[b]`` digits of sequence b, and a filler word (never the target) everywhere else."""
    x, y = synthetic.passkey_batch(batch, PASSKEY_SEQ, generator=g, passkey_len=PASSKEY_LEN)
    scored = y != synthetic.IGNORE_INDEX
    guess = torch.where(scored, y, torch.full_like(y, synthetic.FILLERS[0]))
    for b, wrong in enumerate(wrong_digits):
        positions = scored[b].nonzero()[:, 0][:wrong]
        guess[b, positions] = (y[b, positions] + 1) % 10  # another digit
    logits = torch.randn(batch, PASSKEY_SEQ, synthetic.VOCAB_SIZE, generator=g)
    logits.scatter_(-1, guess[..., None], 10.0)
    return call(logits, y)


def model_logits(g: torch.Generator):
    """Logits of a small random Transformer on passkey sequences, made right at some answer positions."""
    from ..model import ModelConfig, Transformer  # the model loads when the check runs, not with the course

    with torch.random.fork_rng():  # seeded initial weights; the learner's global RNG is left as it was
        torch.manual_seed(int(torch.randint(2**31, (), generator=g)))
        model = Transformer(ModelConfig(vocab_size=synthetic.VOCAB_SIZE, n_layers=1, n_heads=2, d_model=32))
    x, y = synthetic.passkey_batch(32, 40, generator=g)
    with torch.no_grad():
        logits = model(x)
    lucky = (torch.rand(y.shape, generator=g) < 0.8) & (y != synthetic.IGNORE_INDEX)
    logits[lucky] = logits[lucky].scatter(-1, y[lucky][:, None], 1e3)
    return call(logits, y)


def reference_exact_match(logits, y) -> torch.Tensor:
    return synthetic.exact_match(logits, y).double().mean()


def fraction(value: float):
    return lambda *args, **kwargs: torch.tensor(value, dtype=torch.float64)


passkey_exact_match = Exercise(
    name="passkey_exact_match",
    contract="fn(logits, y) -> float: the fraction of sequences whose greedy prediction logits.argmax(-1) "
    "equals y at every position y scores (y != -100)",
    reference=reference_exact_match,
    observe=number,
    seed=12,
    tolerance=tolerances.FLOAT64,
    properties=[
        Property(
            "returns a number",
            "one passkey sequence, every digit right",
            lambda g: passkey_logits(g, 1, [0]),
            "return a float (or a 0-dim tensor), the fraction of the batch",
            expected=fraction(1.0),
            layout=True,
        ),
        Property(
            "scores the answer positions only, y as given",
            "one passkey sequence, every digit right, a filler word predicted everywhere else",
            lambda g: passkey_logits(g, 1, [0]),
            "only positions with y != -100 count (the filler before the query is not scored), and logits[:, t] "
            "already predicts y[:, t] (y is x shifted by one): compare logits.argmax(-1) with y, no extra shift",
            expected=fraction(1.0),
        ),
        Property(
            "a sequence counts only when every digit is right",
            "one passkey sequence, 4 of its 5 digits right",
            lambda g: passkey_logits(g, 1, [1]),
            "exact match: a passkey with one wrong digit is not retrieved; .all(-1) over the scored positions, "
            "not the mean (per-digit accuracy) nor .any(-1)",
            expected=fraction(0.0),
        ),
        Property(
            "a fraction of the batch",
            "4 sequences, only the first with every digit right",
            lambda g: passkey_logits(g, 4, [0, 1, 3, 5]),
            "divide the number of sequences retrieved by the batch size",
            expected=fraction(0.25),
        ),
        Property(
            "matches synthetic.exact_match on a model's logits",
            "a random 1-layer Transformer on 32 passkey sequences of 40 tokens, 80% of answer positions made right",
            model_logits,
            EXACT_HINT,
        ),
    ],
)

# ---- log_position_scale: fn(query_scale, tq, tk=None) -> s_h * log(position + 2) [H, tq, 1] -------------

SCALE_HINT = "query i sits at position p = i + tk - tq (tk = tq when None); return query_scale[:, None, None] * log(p + 2)"


def scale_gradient(fn, query_scale, tq, tk=None):
    """d(sum(fn(...) * w)) / d query_scale for a fixed random w: the learned s_h must get a gradient."""
    leaf = query_scale.detach().clone().requires_grad_(True)
    out = fn(leaf, tq, tk)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise Mismatch("your output is not connected to query_scale by autograd (no .item(), no .detach())")
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    (grad,) = torch.autograd.grad((out * w).sum(), leaf, allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad


log_position_scale = Exercise(
    name="log_position_scale",
    contract="fn(query_scale, tq, tk=None) -> [H, tq, 1]: s_h * log(p + 2) for query i at position "
    "p = i + tk - tq (tk = tq when None), the factor scaled softpick multiplies q by",
    reference=normalizers.log_position_scale,
    reference_in_float64=False,  # the positions are float32 either way
    seed=13,
    tolerance=tolerances.FLOAT32,
    properties=[
        Property(
            "shape [H, tq, 1], query_scale's dtype",
            "query_scale = 0.3 * ones(4) float32, tq = 6",
            lambda g: call(torch.full((4,), 0.3), 6),
            "return query_scale[:, None, None] * log(p + 2)[:, None]: one row per head, one entry per query, a "
            "last axis of 1 so that it multiplies q [B, H, tq, D]",
            layout=True,
        ),
        Property(
            "s_h * log(i + 2), natural log, from query 0",
            "query_scale = [1.0], tq = 8",
            lambda g: call(torch.ones(1), 8),
            "the first query (position 0) is scaled by s_h * log 2, not log 1 = 0 (which would erase its "
            "scores): torch.log(positions + 2), the natural log",
        ),
        Property(
            "one scale per head",
            "query_scale = [0.3, 1.0, 2.5], tq = 5",
            lambda g: call(torch.tensor([0.3, 1.0, 2.5]), 5),
            "head h uses its own s_h: query_scale[:, None, None], not one number for every head",
        ),
        *(
            Property(
                "bottom-right aligned: query i sits at position i + tk - tq",
                case,
                inputs,
                "with tq < tk (decoding with a cache) the queries are the last tq positions: position "
                "i + tk - tq, as the causal mask aligns them; tk = None means tk = tq",
            )
            for case, inputs in (
                (
                    "query_scale = [0.5, 1.0], tq = 1, tk = 100 (one new token after 99)",
                    lambda g: call(torch.tensor([0.5, 1.0]), 1, 100),
                ),
                (
                    "query_scale = randn(3), tq = 4, tk = 10",
                    lambda g: call(torch.randn(3, generator=g), 4, 10),
                ),
            )
        ),
        Property(
            "the gradient reaches query_scale",
            "query_scale = randn(3) float32, tq = 7, tk = 9",
            lambda g: call(torch.randn(3, generator=g), 7, 9),
            "s_h is learned: keep query_scale in the graph (no .item(), .detach() or float())",
            observe=scale_gradient,
            expected=lambda query_scale, tq, tk=None: scale_gradient(
                normalizers.log_position_scale, query_scale, tq, tk
            ),
        ),
    ],
)

# ---- learnable_sink: fn(scores, mask, sink) -> weights, registered and trained -------------------------

SINK_HINT = (
    "shift by c = max(m, s_h) (m the max over visible keys), e = exp(x - c) with hidden keys 0, "
    "weights = e / (sum(e) + exp(s_h - c))"
)
CHECK_NAME = "learnable_sink (check)"  # the name the check registers fn under while it trains a model
SMOKE_STEPS, SMOKE_LR = 20, 1e-2


@contextlib.contextmanager
def registered_for_the_check(fn):
    """``fn`` registered as ``CHECK_NAME`` with one sink logit per head (init 0) while the block runs,
    then removed, so a check leaves the registry as it found it."""
    normalizers.register_normalizer(CHECK_NAME, head_parameters={"sink": 0.0})(fn)
    try:
        yield CHECK_NAME
    finally:
        del normalizers.NORMALIZERS[CHECK_NAME]


def sink_case(sinks: list[float], tq: int = 5, tk: int = 7, scale: float = 1.0, causal: bool = True):
    def inputs(g: torch.Generator):
        scores = scale * torch.randn(2, len(sinks), tq, tk, generator=g, dtype=torch.float64)
        mask = torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq) if causal else None
        return call(scores, mask, torch.tensor(sinks, dtype=torch.float64)[:, None, None])

    return inputs


def large_scores(g: torch.Generator):
    scores = torch.tensor([[300.0, 250.0, -5.0, 299.5], [1.0, 0.5, 400.0, 2.0]])[None, :, None, :]
    mask = torch.tensor([True, True, True, True])
    return call(scores.float(), mask, torch.tensor([1.0, 0.0])[:, None, None])


def no_visible_key(g: torch.Generator):
    scores = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False], [True, True, True, True]])
    return call(scores, mask, torch.tensor([0.5, -1.0], dtype=torch.float64)[:, None, None])


def sink_gradients(fn, scores, mask, sink):
    """d(sum(fn(scores, mask, sink) * w)) / d(scores, sink) in float64 for a fixed random w."""
    leaves = [scores.detach().double().requires_grad_(True), sink.detach().double().requires_grad_(True)]
    out = fn(leaves[0], mask, leaves[1])
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise Mismatch("your output is not connected to the scores and the sink by autograd")
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grads = torch.autograd.grad((out * w.to(out.dtype)).sum(), leaves, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True))


def smoke_batch(g: torch.Generator):
    x, _ = synthetic.passkey_batch(8, 24, generator=g)
    return call(x)


def trains_in_a_model(fn, idx):
    """Register fn, build a tiny Transformer with it and one with the package's "sink" from the same
    weights: their logits must agree; then train fn's model a few steps: the loss must fall and every
    layer's sink logits must move. Returns 0 when all holds, else a Mismatch saying what did not."""
    from ..model import ModelConfig, Transformer  # the model loads when the check runs, not with the course

    def build(attention: str):
        with torch.random.fork_rng():  # seeded initial weights; the learner's global RNG is left as it was
            torch.manual_seed(0)
            return Transformer(
                ModelConfig(
                    vocab_size=synthetic.VOCAB_SIZE, n_layers=1, n_heads=2, d_model=32, attention=attention
                )
            )

    with registered_for_the_check(fn) as name:
        yours, package = build(name), build("sink")
        with torch.no_grad():
            for block in package.blocks:  # a sink that is not 0 everywhere, as after training
                block.attn.sink.copy_(torch.tensor([-1.0, 1.5]))
        yours.load_state_dict(package.state_dict())
        try:
            with torch.no_grad():
                difference = (yours(idx) - package(idx)).abs().max().item()
        except TypeError as error:
            raise Mismatch(
                f"the model calls fn(scores, mask, sink=...) with the sink by keyword and got {error}"
            ) from None
        if not difference <= 1e-4:
            raise Mismatch(
                f"the model's logits with your normalizer differ from the package's by {difference:.3g}"
            )
        optimizer = torch.optim.AdamW(yours.parameters(), lr=SMOKE_LR)
        losses = []
        for _ in range(SMOKE_STEPS):
            logits = yours(idx[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    if not (math.isfinite(losses[-1]) and losses[-1] < losses[0] - 0.1):
        raise Mismatch(
            f"{SMOKE_STEPS} AdamW steps took the loss from {losses[0]:.3f} to {losses[-1]:.3f}: it must fall"
        )
    still = [
        i
        for i, block in enumerate(yours.blocks)
        if torch.equal(block.attn.sink.detach(), package.blocks[i].attn.sink.detach())
    ]
    if still:
        raise Mismatch(
            f"the sink logits of layer(s) {still} did not move in training: no gradient reaches them"
        )
    return torch.zeros(())


learnable_sink = Exercise(
    name="learnable_sink",
    contract="fn(scores, mask, sink) -> weights: exp(x_i) / (exp(s_h) + sum_j exp(x_j)) over the keys mask "
    "keeps (mask None: all), sink [H, 1, 1] one logit per head; registered, it trains in a Transformer",
    reference=lambda scores, mask, sink: normalizers.sink_softmax(scores, sink, mask=mask),
    seed=14,
    properties=[
        Property(
            "shape and dtype",
            "scores randn(2, 3, 5, 7) float32, causal mask [5, 7], sink zeros(3, 1, 1)",
            lambda g: call(
                torch.randn(2, 3, 5, 7, generator=g),
                torch.ones(5, 7, dtype=torch.bool).tril(2),
                torch.zeros(3, 1, 1),
            ),
            "return weights shaped like scores, in their dtype",
            layout=True,
        ),
        Property(
            "sink 0 is softmax1: the sink takes its share of every row",
            "scores randn(2, 3, 5, 7), no mask, sink = 0 for every head",
            sink_case([0.0, 0.0, 0.0], causal=False),
            "the denominator is exp(s_h) + sum_j exp(x_j): with s_h = 0 that is 1 + sum_j exp(x_j), and rows "
            "sum to less than 1 (plain softmax's rows sum to 1)",
        ),
        Property(
            "one sink logit per head",
            "scores randn(2, 3, 5, 7), no mask, sink = [-2, 0, 3]",
            sink_case([-2.0, 0.0, 3.0], causal=False),
            "use each head's sink: exp(sink) with sink [H, 1, 1] broadcasts over batch, queries and keys (a "
            "fixed 1 is softmax1, the case s_h = 0 only)",
        ),
        Property(
            "masked keys get 0 and stay out of the denominator",
            "scores randn(2, 3, 5, 7), causal mask (bottom-right), sink = [-1, 0.5, 2]",
            sink_case([-1.0, 0.5, 2.0]),
            "hide masked scores before exp (masked_fill(~mask, -inf)): exp(-inf) = 0 on top and in the sum",
        ),
        Property(
            "a row with no visible key gives zeros",
            "scores [1, 2, 3, 4], query 1 sees no key, sink = [0.5, -1]",
            no_visible_key,
            "with every key hidden the row max m is -inf and x - m is NaN: shift by c = max(m, s_h), finite "
            "because the sink is, and the row's weights are exactly 0",
        ),
        Property(
            "stable for large scores",
            "float32 scores up to 400, sink = [1, 0]",
            large_scores,
            SINK_HINT + ": exp(400) overflows float32",
            tolerance=tolerances.FLOAT32,
        ),
        Property(
            "the gradient reaches the scores and the sink",
            "scores randn(2, 3, 5, 7) float64, causal mask, sink = [-1, 0.5, 2]",
            sink_case([-1.0, 0.5, 2.0]),
            "the sink is learned: keep it in the graph (no .item(), .detach() or float(sink)); only the shift c "
            "may be detached",
            observe=sink_gradients,
            expected=lambda scores, mask, sink: sink_gradients(learnable_sink.reference, scores, mask, sink),
        ),
        Property(
            "registered, it trains in a Transformer",
            f"register_normalizer with head_parameters={{'sink': 0.0}}, 1 layer x 2 heads, 8 passkey sequences "
            f"of 24 tokens: logits equal the package's 'sink' model's, then {SMOKE_STEPS} AdamW steps",
            smoke_batch,
            "the model calls fn(scores, mask, sink=...) with its [H, 1, 1] sink logits: name the argument sink",
            observe=trains_in_a_model,
            expected=lambda idx: torch.zeros(()),
        ),
    ],
)
