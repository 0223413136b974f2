"""Every exercise check accepts right answers and rejects plausible wrong ones, each at the property that
must catch it; the runner's guards (signature, unfinished stubs, solutions mode) and the registry."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import minisoftpick as msp
from minisoftpick import checks, metrics, quant, solutions, synthetic, train
from minisoftpick.checks import EXERCISES, CheckFailed
from minisoftpick.checks.core import FELL_BACK, OUTCOMES, PASSED

try:
    import wrong_kernels  # the Triton exercises' wrong kernels: needs Triton
except ImportError:
    wrong_kernels = None

ROOT = Path(__file__).resolve().parents[1]

# ---- 01 softpick: fn(x, dim=-1) ------------------------------------------------------------------


def softpick_from(shift=lambda x, dim: x.amax(dim, keepdim=True).clamp(min=0), relu=True, absolute=True):
    def softpick(x, dim=-1):
        c = shift(x, dim)
        e = torch.exp(x - c) - torch.exp(-c)
        den = (e.abs() if absolute else e).sum(dim, keepdim=True) + 1e-6 * torch.exp(-c)
        return (torch.relu(e) if relu else e) / den

    return softpick


def assumes_shift_invariance(x, dim=-1):
    e = torch.exp(x - x.amax(dim, keepdim=True)) - 1
    return torch.relu(e) / (e.abs().sum(dim, keepdim=True) + 1e-6)


SOFTPICK_WRONG = [
    (lambda x, dim=-1: torch.softmax(x, dim), "zero weight where x <= 0"),
    (softpick_from(relu=False), "zero weight where x <= 0"),
    (softpick_from(absolute=False), "negative scores count in the denominator"),
    (assumes_shift_invariance, "negative scores count in the denominator"),
    (lambda x, dim=-1: msp.softpick(x, dim=-1), "respects dim"),
    (softpick_from(shift=lambda x, dim: torch.zeros(())), "stable for large scores"),
    (softpick_from(shift=lambda x, dim: x.max().clamp(min=0)), "one shift per row"),
    (softpick_from(shift=lambda x, dim: x.amax(dim, keepdim=True)), "gradient far below zero"),
    (lambda x, dim=-1: msp.softpick(x.float(), dim=dim), "shape and dtype"),
    (
        lambda x, dim=-1: (
            msp.softpick(x.float(), dim=dim) if x.dtype == torch.float16 else msp.softpick(x, dim)
        ),
        "half precision",
    ),
    (lambda x, dim=-1: msp.softpick(x.detach(), dim=dim), "gradient"),
    (lambda x: msp.softpick(x), "signature"),
]
SOFTPICK_RIGHT = [
    solutions.softpick,
    lambda x, dim=-1: msp.softpick(x, dim=dim),
    # shifting each row by its detached max m is exact for whole rows: only the online algorithm tells
    # it from max(m, 0) (notebook 03's check rejects it there)
    softpick_from(shift=lambda x, dim: x.amax(dim, keepdim=True).detach()),
]

# ---- 01 softpick_jacobian: fn(x) -> J[i, j] = d p_i / d x_j --------------------------------------


def jacobian_from(numerator_slope, denominator_slope, shift=lambda x: x.max().clamp(min=0)):
    """(diag(numerator_slope(x, e)) - outer(p, denominator_slope(x, e))) / D, e = e^(x - c), c = shift(x)."""

    def jacobian(x):
        c = shift(x)
        e = torch.exp(x - c)
        den = (e - torch.exp(-c)).abs().sum() + 1e-6 * torch.exp(-c)
        p = torch.relu(e - torch.exp(-c)) / den
        return (torch.diag(numerator_slope(x, e)) - torch.outer(p, denominator_slope(x, e))) / den

    return jacobian


def right_numerator(x, e):
    return (x > 0) * e


def right_denominator(x, e):
    return torch.sign(x) * e


def softmax_jacobian(x):
    p = torch.softmax(x, -1)
    return torch.diag(p) - torch.outer(p, p)


JACOBIAN_WRONG = [
    (softmax_jacobian, "rows where x_i <= 0 are zero"),
    (jacobian_from(lambda x, e: e, right_denominator), "rows where x_i <= 0 are zero"),
    (jacobian_from(right_numerator, lambda x, e: e), "negative scores move the denominator"),
    (lambda x: solutions.softpick_jacobian(x).mT, "rows where x_i <= 0 are zero", "transposed"),
    (
        jacobian_from(right_numerator, right_denominator, shift=lambda x: 0.0 * x.max()),
        "stable for large scores",
    ),
    (  # autograd through a softpick shifted by an undetached m: d exp(-m) / dm overflows
        lambda x: torch.autograd.functional.jacobian(
            softpick_from(shift=lambda x, dim: x.amax(dim, keepdim=True)), x
        ),
        "stable for scores far below zero",
    ),
]
JACOBIAN_RIGHT = [
    solutions.softpick_jacobian,
    jacobian_from(right_numerator, right_denominator),
    lambda x: torch.autograd.functional.jacobian(msp.softpick, x),
]

# ---- 01 softpick_vjp: fn(x, grad) -> dL/dx ---------------------------------------------------------


def vjp_with(indicator=lambda x: x > 0, sign=torch.sign, shifted=True, delta_term=True):
    def vjp(x, grad):
        c = x.amax(-1, keepdim=True).clamp(min=0) if shifted else torch.zeros(())
        e = torch.exp(x - c)
        den = (e - torch.exp(-c)).abs().sum(-1, keepdim=True) + 1e-6 * torch.exp(-c)
        delta = (grad * torch.relu(e - torch.exp(-c)) / den).sum(-1, keepdim=True)
        return e / den * (indicator(x) * grad - (sign(x) * delta if delta_term else 0))

    return vjp


def softmax_vjp(x, grad):
    p = torch.softmax(x, -1)
    return p * (grad - (grad * p).sum(-1, keepdim=True))


VJP_WRONG = [
    (softmax_vjp, "matches autograd on random rows"),
    (vjp_with(sign=torch.ones_like), "matches autograd on random rows"),
    (vjp_with(delta_term=False), "matches autograd on random rows"),
    (vjp_with(indicator=lambda x: x >= 0), "scores exactly 0 get zero gradient"),
    (vjp_with(shifted=False), "stable for large scores"),
]
VJP_RIGHT = [solutions.softpick_vjp, vjp_with()]

# ---- 02 causal_mask: fn(tq, tk) -> bool [tq, tk] -----------------------------------------------------

MASK_WRONG = [
    (lambda tq, tk: torch.ones(tq, tk).tril().bool(), "Tq < Tk is bottom-right aligned"),
    (
        lambda tq, tk: torch.arange(tk)[None, :] < torch.arange(tq)[:, None] + tk - tq,
        "Tq = Tk: query i sees keys j <= i",
    ),
    (
        lambda tq, tk: torch.arange(tk)[None, :] >= torch.arange(tq)[:, None] + tk - tq,
        "Tq = Tk: query i sees keys j <= i",
    ),
    (lambda tq, tk: msp.causal_mask(tq, tk).float(), "a bool tensor [Tq, Tk]"),
    (
        lambda tq, tk: msp.causal_mask(max(tq, tk), max(tq, tk))[-tq:, -tk:] if tq <= tk else None,
        "Tq > Tk: the first queries see no key",
    ),
]
MASK_RIGHT = [solutions.causal_mask, msp.causal_mask, lambda tq, tk: torch.ones(tq, tk).tril(tk - tq).bool()]

# ---- 02 masked_softpick: fn(scores, keep) -> weights ----------------------------------------------

MASKED_WRONG = [
    (
        lambda s, keep: msp.softpick(s.masked_fill(~keep, float("-inf"))),
        "hidden entries stay out of the denominator",
    ),
    (lambda s, keep: msp.softpick(s) * keep, "hidden entries stay out of the denominator"),
    (lambda s, keep: msp.masked_softmax(s, mask=keep), "hidden entries stay out of the denominator"),
    (lambda s, keep: masked_softpick(multiply=True)(s, keep), "large hidden scores stay hidden"),
    (lambda s, keep: masked_softpick(shift_over_hidden=True)(s, keep), "large hidden scores stay hidden"),
    (lambda s, keep: masked_softpick(shifted=False)(s, keep), "stable for large scores"),
]
MASKED_RIGHT = [solutions.masked_softpick, lambda s, keep: msp.softpick(s, mask=keep)]

# ---- 02 naive attention: fn(q, k, v, causal=True) ------------------------------------------------


def attention_with(normalize, keep_rule=lambda i, j, tq, tk: j <= i + tk - tq, scale_by_sqrt_d=True):
    def attention(q, k, v, causal=True):
        tq, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
        s = q @ k.transpose(-1, -2) / (math.sqrt(d) if scale_by_sqrt_d else 1.0)
        i, j = torch.arange(tq)[:, None], torch.arange(tk)[None, :]
        keep = keep_rule(i, j, tq, tk) if causal else torch.ones(tq, tk, dtype=torch.bool)
        return normalize(s, keep) @ v

    return attention


def masked_softpick(shift_over_hidden=False, multiply=False, shifted=True):
    """Softpick of scores s with a keep mask, one masking mistake switched on."""

    def normalize(s, keep):
        visible = s if shift_over_hidden else s.masked_fill(~keep, float("-inf"))
        c = visible.amax(-1, keepdim=True).clamp(min=0) if shifted else torch.zeros(())
        e = torch.exp(s - c) - torch.exp(-c)
        e = e * keep if multiply else e.masked_fill(~keep, 0.0)
        return torch.relu(e) / (e.abs().sum(-1, keepdim=True) + 1e-6 * torch.exp(-c))

    return normalize


def right_softpick(s, keep):
    return msp.softpick(s, mask=keep)


NAIVE_WRONG = [
    (
        attention_with(lambda s, keep: msp.masked_softmax(s, mask=keep)),
        "rows of negative scores attend to nothing",
    ),
    (
        attention_with(lambda s, keep: msp.softpick(s.masked_fill(~keep, float("-inf")))),
        "masked keys stay out of the denominator",
    ),
    (attention_with(right_softpick, lambda i, j, tq, tk: j < i + tk - tq), "causal mask"),
    (attention_with(right_softpick, lambda i, j, tq, tk: j <= i + 1), "causal mask"),
    (attention_with(right_softpick, scale_by_sqrt_d=False), "scores scaled by 1/sqrt(D)"),
    (attention_with(right_softpick, lambda i, j, tq, tk: j <= i), "Tq != Tk, bottom-right causal mask"),
    (attention_with(masked_softpick(shifted=False)), "stable for large scores"),
    (attention_with(masked_softpick(multiply=True)), "large hidden scores stay hidden"),
    (attention_with(masked_softpick(shift_over_hidden=True)), "large hidden scores stay hidden"),
    (lambda q, k, v, causal=True: msp.naive_attention(q.detach(), k, v, causal=causal), "gradient"),
    (lambda q, k, v: msp.naive_attention(q, k, v), "signature"),
]
NAIVE_RIGHT = [
    solutions.naive_attention,
    attention_with(right_softpick),
    attention_with(masked_softpick()),
    lambda q, k, v, causal=True: msp.naive_attention(q, k, v, causal=causal),
]

# ---- 03 online softpick: fn(q, k, v, causal=True, block_size=16) ---------------------------------


def online_with(
    c_start=0.0, rescale_den=True, rescale_acc=True, shifted=True, hidden_in_max=False, multiply=False
):
    def attention(q, k, v, causal=True, block_size=16):
        tq, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
        c = torch.full((*q.shape[:-1], 1), c_start, dtype=q.dtype)
        den = torch.zeros_like(q[..., :1])
        acc = torch.zeros_like(q)
        keep_all = msp.causal_mask(tq, tk) if causal else torch.ones(tq, tk, dtype=torch.bool)
        for start in range(0, tk, block_size):
            s = q @ k[..., start : start + block_size, :].transpose(-1, -2) / math.sqrt(d)
            keep = keep_all[:, start : start + block_size]
            block_max = (s if hidden_in_max else s.masked_fill(~keep, float("-inf"))).amax(-1, keepdim=True)
            c_new = torch.maximum(c, block_max) if shifted else c
            r = torch.exp(c - c_new)
            p = torch.exp(s - c_new) - torch.exp(-c_new)
            p = p * keep if multiply else p.masked_fill(~keep, 0.0)
            den = (den * r if rescale_den else den) + p.abs().sum(-1, keepdim=True)
            acc = (acc * r if rescale_acc else acc) + torch.relu(p) @ v[..., start : start + block_size, :]
            c = c_new
        return acc / (den + 1e-6 * torch.exp(-c))

    return attention


ONLINE_WRONG = [
    (online_with(rescale_den=False), "equals naive attention for every block size"),
    (online_with(rescale_acc=False), "equals naive attention for every block size"),
    (online_with(c_start=float("-inf")), "first key block far below zero"),
    (
        lambda q, k, v, causal=True, block_size=16: msp.naive_attention(q, k, v, causal=True),
        "non-causal and Tq != Tk",
    ),
    (online_with(shifted=False), "stable for large scores"),
    (online_with(hidden_in_max=True), "large hidden scores stay hidden"),
    (online_with(multiply=True), "large hidden scores stay hidden"),
    (lambda q, k, v, causal=True: msp.naive_attention(q, k, v, causal=causal), "signature"),
]
ONLINE_RIGHT = [solutions.online_softpick_attention, online_with(), msp.online_softpick_attention]

# ---- 03 merge_partials: fn(c1, den1, acc1, c2, den2, acc2) -> (c, den, acc) ---------------------------


def merge_with(rescale_acc=True, rescale_den=True, shift=torch.maximum):
    def merge(c1, den1, acc1, c2, den2, acc2):
        c = shift(c1, c2)
        r1, r2 = torch.exp(c1 - c), torch.exp(c2 - c)
        den = den1 * r1 + den2 * r2 if rescale_den else den1 + den2
        return c, den, acc1 * r1 + acc2 * r2 if rescale_acc else acc1 + acc2

    return merge


def merge_through_unshifted(c1, den1, acc1, c2, den2, acc2):
    """Undo both shifts, add, shift again: exact in float64, exp(300) = inf in float32."""
    c = torch.maximum(c1, c2)
    den = (den1 * torch.exp(c1) + den2 * torch.exp(c2)) * torch.exp(-c)
    return c, den, (acc1 * torch.exp(c1) + acc2 * torch.exp(c2)) * torch.exp(-c)


MERGE_WRONG = [
    (merge_with(rescale_acc=False), "rescales den and acc to the common shift"),
    (merge_with(rescale_den=False), "rescales den and acc to the common shift"),
    (merge_with(shift=lambda a, b: (a + b) / 2), "rescales den and acc to the common shift"),
    (merge_through_unshifted, "stable when the shifts are far apart"),
    (
        lambda c1, den1, acc1, c2, den2, acc2: torch.cat([c1, den1, acc1], -1),
        "rescales den and acc to the common shift",
    ),
]
MERGE_RIGHT = [solutions.merge_partials, merge_with()]

# ---- 03 block_update: fn(c, den, acc, s, v, keep) -> (c, den, acc) ----------------------------------


def update_with(rescale_den=True, rescale_acc=True, hidden_in_max=False, running_max=True):
    def update(c, den, acc, s, v, keep):
        block_max = (s if hidden_in_max else s.masked_fill(~keep, float("-inf"))).amax(-1, keepdim=True)
        c_new = torch.maximum(c, block_max) if running_max else block_max.clamp(min=0)
        r = torch.exp(c - c_new)
        p = (torch.exp(s - c_new) - torch.exp(-c_new)).masked_fill(~keep, 0.0)
        den = (den * r if rescale_den else den) + p.abs().sum(-1, keepdim=True)
        return c_new, den, (acc * r if rescale_acc else acc) + torch.relu(p) @ v

    return update


UPDATE_WRONG = [
    (update_with(rescale_den=False), "rescales the previous state"),
    (update_with(rescale_acc=False), "rescales the previous state"),
    (update_with(running_max=False), "a block below the shift leaves c alone"),
    (update_with(hidden_in_max=True), "hidden keys change nothing"),
    (lambda c, den, acc, s, v, keep: (c, den), "the first block, from the zero state"),
]
UPDATE_RIGHT = [solutions.block_update, update_with()]

# ---- 06 softpick_score_grad: fn(s, shift, den, dp, delta) -> ds ----------------------------------


def score_grad_with(indicator=lambda s: s > 0, sign=torch.sign, shifted=True):
    def ds(s, shift, den, dp, delta):
        e = torch.exp(s - shift[:, None] if shifted else s) / den[:, None]
        return e * (indicator(s) * dp - sign(s) * delta[:, None])

    return ds


def softmax_style(s, shift, den, dp, delta):
    p = torch.relu(torch.exp(s - shift[:, None]) - torch.exp(-shift)[:, None]) / den[:, None]
    return p * (dp - delta[:, None])


SCORE_GRAD_WRONG = [
    (softmax_style, "matches autograd on random scores"),
    (score_grad_with(shifted=False), "matches autograd on random scores"),
    (score_grad_with(sign=torch.ones_like), "matches autograd on random scores"),
    (score_grad_with(indicator=torch.ones_like), "matches autograd on random scores"),
    (score_grad_with(indicator=lambda s: s >= 0), "scores exactly 0 get zero gradient"),
    (score_grad_with(sign=lambda s: (s > 0).double()), "matches autograd on random scores"),
]
SCORE_GRAD_RIGHT = [solutions.softpick_score_grad, score_grad_with()]

# ---- 06 attention_roofline: fn(b, h, t, d, mode, peak_flops, bandwidth) -> (flops, bytes, attainable) ----


def roofline_with(causal_half=0.5, training=3.5, bytes_per=2, training_tensors=12, roof=min, roofs=None):
    def roofline(b, h, t, d, mode, peak_flops, bandwidth):
        peak_flops, bandwidth = roofs or (peak_flops, bandwidth)
        forward = 4 * b * h * t * t * d * causal_half
        flops = forward if mode == "fwd" else training * forward
        moved = (4 if mode == "fwd" else training_tensors) * b * h * t * d * bytes_per
        return flops, moved, roof(peak_flops, flops / moved * bandwidth)

    return roofline


ROOFLINE_WRONG = [
    (roofline_with(causal_half=1.0), "causal forward FLOPs"),
    (roofline_with(training=3.0), "forward+backward FLOPs"),
    (roofline_with(bytes_per=4), "minimum bytes moved"),
    (roofline_with(training_tensors=4), "minimum bytes moved"),
    (roofline_with(roof=max), "memory-bound below the ridge"),
    (roofline_with(roofs=(7.7e14, 4.3e12)), "reads the roofs it is given"),
    (lambda b, h, t, d, mode, peak_flops, bandwidth: {"flops": 1.0}, "causal forward FLOPs"),
]
ROOFLINE_RIGHT = [solutions.attention_roofline, roofline_with()]

# ---- 07 count_params: fn(c) -> int -------------------------------------------------------------------


def count_with(
    *,
    vocab=lambda c: c.vocab_size,
    tied=False,
    kv_heads=lambda c: c.n_kv_heads,
    mlp=lambda c: 3 * c.d_model * c.ffn_hidden,
    final_norm=True,
    scalars=lambda c: c.n_heads if c.attention in ("sink", "scaled_softpick") else 0,
):
    """The parameter count with one plausible mistake switched on."""

    def count_params(c):
        attention = 2 * c.n_heads * c.head_dim * c.d_model + 2 * kv_heads(c) * c.head_dim * c.d_model
        block = attention + mlp(c) + 2 * c.d_model + scalars(c)
        head = 0 if tied else c.d_model * vocab(c)
        return vocab(c) * c.d_model + c.n_layers * block + (c.d_model if final_norm else 0) + head

    return count_params


COUNT_WRONG = [
    (count_with(tied=True), "a dense softmax model: embedding, blocks, final norm, head"),
    (
        count_with(mlp=lambda c: 2 * 4 * c.d_model**2),
        "a dense softmax model: embedding, blocks, final norm, head",
    ),
    (count_with(final_norm=False), "a dense softmax model: embedding, blocks, final norm, head"),
    (count_with(kv_heads=lambda c: c.n_heads), "grouped-query attention: W_k and W_v have n_kv_heads heads"),
    (count_with(scalars=lambda c: 0), "per-head scalars of sink and scaled_softpick"),
    (
        count_with(scalars=lambda c: c.n_heads if c.attention == "sink" else 0),
        "per-head scalars of sink and scaled_softpick",
    ),
    (count_with(vocab=lambda c: 85), "every preset and attention"),
    (lambda c: float(count_with()(c)), "returns an int"),
]
COUNT_RIGHT = [solutions.count_params, count_with(), lambda c: msp.model.Transformer(c).num_params()]

# ---- 07 learning_rate: fn(cfg, step) --------------------------------------------------------------


def schedule_with(*, warmup_from_zero=False, floor=None, linear=False, hold=True, hard_coded=False):
    """The trainer's schedule with one plausible mistake switched on."""

    def learning_rate(cfg, step):
        warmup, total = (10, 110) if hard_coded else (cfg.warmup_steps, cfg.max_steps)
        lr, min_lr = cfg.lr, cfg.min_lr if floor is None else floor
        if step < warmup:
            return lr * (step if warmup_from_zero else step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        progress = min(1.0, progress) if hold else progress
        shape = 1 - progress if linear else 0.5 * (1 + math.cos(math.pi * progress))
        return min_lr + (lr - min_lr) * shape

    return learning_rate


LR_WRONG = [
    (schedule_with(warmup_from_zero=True), "warmup rises linearly from lr / warmup_steps"),
    (schedule_with(floor=0.0), "cosine decay from lr"),
    (schedule_with(linear=True), "cosine decay from lr"),
    (schedule_with(hold=False), "ends at min_lr and stays there"),
    (schedule_with(hard_coded=True), "every preset's schedule"),
    (lambda cfg, step: str(cfg.lr), "warmup rises linearly from lr / warmup_steps"),
]
LR_RIGHT = [solutions.learning_rate, train.learning_rate, schedule_with()]

# ---- 07 clip_grad_norm: fn(params, max_norm) -> total norm --------------------------------------------


def clip_with(
    *,
    norm=lambda grads: torch.sqrt(sum((g**2).sum() for g in grads)),
    cap=True,
    in_place=True,
    per_parameter=False,
    returns="before",
):
    """Gradient clipping with one plausible mistake switched on."""

    def clip_grad_norm(params, max_norm):
        grads = [p.grad for p in params]
        total = norm(grads)
        for p in params:
            own = p.grad.norm() if per_parameter else total
            factor = max_norm / (own + 1e-6)
            factor = factor.clamp(max=1.0) if cap else factor
            if in_place:
                p.grad.mul_(factor)
            else:
                grad = p.grad
                grad = grad * factor  # noqa: F841 (the mistake: rebinds a name, p.grad is unchanged)
        return norm(grads) if returns == "after" else total

    return clip_grad_norm


CLIP_WRONG = [
    (clip_with(returns="after"), "returns the norm before clipping"),
    (clip_with(norm=lambda grads: sum(g.norm() for g in grads)), "one L2 norm over every gradient"),
    (clip_with(norm=lambda grads: sum(g.abs().sum() for g in grads)), "one L2 norm over every gradient"),
    (clip_with(cap=False), "small gradients are left alone"),
    (clip_with(in_place=False), "scales p.grad in place"),
    (clip_with(per_parameter=True), "one factor for every gradient"),
    (lambda params, max_norm: None, "returns the norm before clipping"),
]
CLIP_RIGHT = [solutions.clip_grad_norm, torch.nn.utils.clip_grad_norm_, clip_with()]

# ---- 08 bos_attention: fn(w, queries) -> [H] -------------------------------------------------------


def bos_attention_with(to_bos=lambda w: w[..., 0], selected=lambda queries: queries, pooled=True):
    def bos_attention(w, queries):
        values, chosen = to_bos(w).double(), selected(queries)[:, None].double()  # [B, H, T], [B, 1, T]
        if pooled:
            return (values * chosen).sum(dim=(0, 2)) / chosen.sum()
        return ((values * chosen).sum(-1) / chosen.sum(-1)).mean(0)

    return bos_attention


BOS_WRONG = [
    (bos_attention_with(selected=lambda queries: torch.ones_like(queries)), "only the selected queries"),
    (
        bos_attention_with(to_bos=lambda w: (w / w.sum(-1, keepdim=True))[..., 0].nan_to_num()),
        "rows as they are, not renormalised",
    ),
    (bos_attention_with(pooled=False), "pooled over the batch"),
    (bos_attention_with(to_bos=lambda w: w[..., -1]), "the weight on key 0"),
    (bos_attention_with(to_bos=lambda w: w[..., 0, :]), "the weight on key 0"),
    (lambda w, queries: metrics.bos_attention(w, queries).mean(), "one number per head"),
]
BOS_RIGHT = [solutions.bos_attention, metrics.bos_attention, bos_attention_with()]

# ---- 08 first_token_norm_ratio: fn(states) -> [...] -------------------------------------------------


def norm_ratio_with(norm=lambda s: s.norm(dim=-1), others=lambda n: n[..., 1:].mean(-1), ratio_of_means=True):
    def first_token_norm_ratio(states):
        norms = norm(states.double())  # [B, ..., T]
        if ratio_of_means:
            return norms[..., 0].mean(0) / others(norms).mean(0)
        return (norms[..., 0] / others(norms)).mean(0)

    return first_token_norm_ratio


NORM_RATIO_WRONG = [
    (norm_ratio_with(norm=lambda s: s.pow(2).sum(-1)), "the L2 norm of each position's state"),
    (norm_ratio_with(norm=lambda s: s.abs().sum(-1)), "the L2 norm of each position's state"),
    (norm_ratio_with(others=lambda n: n.mean(-1)), "over the other positions' mean"),
    (norm_ratio_with(others=lambda n: n[..., -1]), "over the other positions' mean"),
    (norm_ratio_with(ratio_of_means=False), "averaged over the batch before dividing"),
    (lambda states: metrics.first_token_norm_ratio(states).mean(), "one ratio per head"),
]
NORM_RATIO_RIGHT = [solutions.first_token_norm_ratio, metrics.first_token_norm_ratio, norm_ratio_with()]

# ---- 08 sink_rate: fn(weights, threshold=0.3); kurtosis: fn(x) -----------------------------------


def sink_rate_with(
    to_first=lambda w: w[..., 0], average=lambda a: a.mean(dim=(0, 2)), exceeds=torch.gt, default=0.3
):
    def sink_rate(weights, threshold=default):
        flags = [exceeds(average(to_first(w)), threshold) for w in weights]
        return torch.cat(flags).double().mean().item()

    return sink_rate


def skips_rows_that_attend_nowhere(weights, threshold=0.3):
    flags = []
    for w in weights:
        attends = w.sum(-1) > 0  # [B, H, T]
        flags.append((w[..., 0] * attends).sum(dim=(0, 2)) / attends.sum(dim=(0, 2)) > threshold)
    return torch.cat(flags).double().mean().item()


SINK_WRONG = [
    (sink_rate_with(exceeds=torch.ge), "a head must exceed the threshold"),
    (sink_rate_with(to_first=lambda w: w[..., -1]), "the first token is the sink"),
    (sink_rate_with(to_first=lambda w: w[..., 0, :]), "the first token is the sink"),
    (
        sink_rate_with(
            to_first=lambda w: (w / w.sum(-1, keepdim=True))[..., 0], average=lambda a: a.nanmean((0, 2))
        ),
        "rows that attend nowhere are no sink",
    ),
    (skips_rows_that_attend_nowhere, "rows that attend nowhere are no sink"),
    (sink_rate_with(average=lambda a: a.mean(dim=2).amax(dim=0)), "averaged over the batch"),
    (sink_rate_with(default=0.5), "a fraction of all heads"),
    (lambda weights, threshold=0.3: torch.tensor([0.5, 0.5]), "returns a number"),
]
SINK_RIGHT = [solutions.sink_rate, metrics.sink_rate, sink_rate_with()]


def unbiased_moments(x):
    d = x.double().flatten() - x.double().mean()
    return (torch.mean(d**4) / d.var() ** 2).item()


KURTOSIS_WRONG = [
    (lambda x: metrics.kurtosis(x) - 3, "Pearson kurtosis: about 3 for a Gaussian"),
    (unbiased_moments, "population moments"),
    (
        lambda x: float(np.mean([metrics.kurtosis(r) for r in x.reshape(-1, x.shape[-1])])),
        "over all elements",
    ),
    (lambda x: "3.0", "Pearson kurtosis: about 3 for a Gaussian"),
]
KURTOSIS_RIGHT = [solutions.kurtosis, metrics.kurtosis, lambda x: torch.tensor(metrics.kurtosis(x))]

# ---- 09 quantize_rtn: fn(w, bits, group_size=64) -------------------------------------------------


def rtn_with(
    levels_of=lambda bits: 2**bits - 1,
    clamp=True,
    integer_zero=True,
    rounding=torch.round,
    per_row=False,
    add_zero_first=False,
):
    """A learner's RTN with one plausible mistake switched on."""

    def quantize(w, bits, group_size=64):
        levels = levels_of(bits)
        groups = w.float().reshape(-1, w.shape[-1] if per_row else group_size)
        lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        step = (hi - lo) / levels
        step = torch.where(step > 0, step, lo.abs() + (lo == 0))
        zero = torch.round(-lo / step) if integer_zero else -lo / step
        q = (
            rounding(groups / step + zero)
            if add_zero_first or not integer_zero
            else rounding(groups / step) + zero
        )
        q = torch.clamp(q, 0, 2**bits - 1) if clamp else q
        return ((q - zero) * step).reshape(w.shape).to(w.dtype)

    return quantize


def symmetric_rtn(w, bits, group_size=64):
    groups = w.float().reshape(-1, group_size)
    qmax = 2 ** (bits - 1) - 1
    step = groups.abs().amax(-1, keepdim=True) / qmax
    return (torch.clamp(torch.round(groups / step), -qmax, qmax) * step).reshape(w.shape).to(w.dtype)


RTN_WRONG = [
    (symmetric_rtn, "asymmetric min-max grid: weights on it come back unchanged"),
    (rtn_with(per_row=True), "one group per group_size consecutive elements of the last dim"),
    (rtn_with(rounding=torch.floor), "rounds to the nearest level"),
    (rtn_with(clamp=False), "at most 2**bits levels per group"),
    (rtn_with(levels_of=lambda bits: 2**bits), "asymmetric min-max grid: weights on it come back unchanged"),
    (rtn_with(integer_zero=False), "matches RTN on random weights"),
    (lambda w, bits, group_size=64: w.float(), "shape and dtype"),
    (  # one group for the whole tensor
        lambda w, bits, group_size=64: rtn_with()(w, bits, w.numel()),
        "one group per group_size consecutive elements of the last dim",
    ),
    (  # groups along dim 0
        lambda w, bits, group_size=64: rtn_with()(w.T.contiguous(), bits, group_size).T,
        "one group per group_size consecutive elements of the last dim",
    ),
    (rtn_with(levels_of=lambda bits: 2**bits, clamp=False), "at most 2**bits levels per group"),
]
RTN_RIGHT = [solutions.quantize_rtn, rtn_with(), rtn_with(add_zero_first=True)]  # ties may round either way

# ---- 09 hqq_zero_step: fn(groups, step, zero, bits, beta, p=0.7) -> zero -------------------------------


def hqq_step_with(
    threshold=lambda e, beta, p: e.abs() ** (p - 1) / beta,
    shrink_sign=-1,
    clamp=True,
    integer_zero=False,
    update_sign=-1,
    over=-1,
):
    """A learner's half-quadratic step with one plausible mistake switched on."""

    def step_fn(groups, step, zero, bits, beta, p=0.7):
        z = torch.round(zero) if integer_zero else zero
        q = torch.round(groups / step) + z if integer_zero else torch.round(groups / step + zero)
        q = torch.clamp(q, 0, 2**bits - 1) if clamp else q
        e = groups - step * (q - zero)
        w_e = torch.sign(e) * torch.relu(e.abs() + shrink_sign * threshold(e, beta, p))
        return (q + update_sign * (groups - w_e) / step).mean(over, keepdim=True)

    return step_fn


HQQ_WRONG = [
    (
        hqq_step_with(shrink_sign=+1),
        "beta -> 0: the shrinkage removes every error, z is the least-squares fit",
    ),
    (
        hqq_step_with(threshold=lambda e, beta, p: e.abs() ** (p - 1) * beta),
        "beta -> infinity: the shrinkage keeps the whole error and z stays",
    ),
    (hqq_step_with(threshold=lambda e, beta, p: e.abs() ** p / beta), "p = 1: soft thresholding at 1 / beta"),
    (
        hqq_step_with(threshold=lambda e, beta, p: e.abs() ** (1 - p) / beta),
        "p < 1: the threshold |e|**(p - 1) / beta",
    ),
    (hqq_step_with(threshold=lambda e, beta, p: 1 / beta), "p < 1: the threshold |e|**(p - 1) / beta"),
    (hqq_step_with(update_sign=+1), "beta -> infinity: the shrinkage keeps the whole error and z stays"),
    (hqq_step_with(clamp=False), "q from the current zero point, clamped to 0 .. 2**bits - 1"),
    (
        hqq_step_with(integer_zero=True),
        "beta -> 0: the shrinkage removes every error, z is the least-squares fit",
    ),
    (hqq_step_with(over=(-2, -1)), "one zero point per group"),
]
HQQ_RIGHT = [solutions.hqq_zero_step, quant.hqq_zero_step, hqq_step_with()]

# ---- 09 quantize_activations: fn(x, bits=8, granularity="per_token") --------------------------------


def act_quant_with(
    scale=lambda a: a.amax(-1, keepdim=True),
    per_tensor_scale=lambda a: a.amax(),
    qmax_of=lambda bits: 2 ** (bits - 1) - 1,
    rounding=torch.round,
    guard=True,
    dequantize=True,
):
    """A learner's activation fake-quant with one plausible mistake switched on (``scale`` and
    ``per_tensor_scale`` map |x| to the max the step divides)."""

    def quantize(x, bits=8, granularity="per_token"):
        qmax = qmax_of(bits)
        a = x.float().abs()
        amax = scale(a) if granularity == "per_token" else per_tensor_scale(a)
        step = torch.where(amax > 0, amax / qmax, torch.ones_like(amax)) if guard else amax / qmax
        codes = torch.clamp(rounding(x.float() / step), -qmax, qmax)
        return (codes * step if dequantize else codes).to(x.dtype)

    return quantize


ACT_WRONG = [
    (act_quant_with(scale=lambda a: a.amax()), "per token: one scale per row of the last dim"),
    (
        act_quant_with(per_tensor_scale=lambda a: a.amax(-1, keepdim=True)),
        "per tensor: one scale shared by every token",
    ),
    (
        act_quant_with(scale=lambda a: 3 * a.mean(-1, keepdim=True)),
        "symmetric grid from max|x|: values on it come back unchanged",
    ),
    (
        act_quant_with(qmax_of=lambda bits: 2**bits - 1),
        "symmetric grid from max|x|: values on it come back unchanged",
    ),
    (
        act_quant_with(qmax_of=lambda bits: 2 ** (bits - 1)),
        "symmetric grid from max|x|: values on it come back unchanged",
    ),
    (act_quant_with(rounding=torch.floor), "rounds to the nearest level"),
    (act_quant_with(rounding=torch.trunc), "rounds to the nearest level"),
    (act_quant_with(guard=False), "a token of zeros stays zero (no NaN)"),
    (act_quant_with(dequantize=False), "symmetric grid from max|x|: values on it come back unchanged"),
    (
        lambda x, bits=8, granularity="per_token": act_quant_with()(x, bits, granularity).float(),
        "shape and dtype",
    ),
    (lambda x, bits=8: quant.quantize_activations(x, bits), "signature"),
]
ACT_RIGHT = [solutions.quantize_activations, quant.quantize_activations, act_quant_with()]

# ---- 10 passkey_exact_match: fn(logits, y) -------------------------------------------------------------


def exact_match_with(scored_only=True, shift=False, reduce=lambda right: right.all(-1), average=True):
    """A learner's passkey metric with one plausible mistake switched on."""

    def exact_match(logits, y):
        if shift:  # the shift of a language-model loss, applied to targets that are already shifted
            logits, y = logits[:, :-1], y[:, 1:]
        right = logits.argmax(-1) == y
        right = right | (y == -100) if scored_only else right
        per_sequence = reduce(right).float()
        return per_sequence.mean().item() if average else per_sequence.sum().item()

    return exact_match


EXACT_WRONG = [
    (exact_match_with(scored_only=False), "scores the answer positions only, y as given"),
    (exact_match_with(shift=True), "scores the answer positions only, y as given"),
    (
        lambda logits, y: ((logits.argmax(-1) == y) & (y != -100)).sum().item() / (y != -100).sum().item(),
        "a sequence counts only when every digit is right",
    ),
    (
        exact_match_with(reduce=lambda right: right.any(-1)),
        "a sequence counts only when every digit is right",
    ),
    (exact_match_with(average=False), "a fraction of the batch"),
    (lambda logits, y: [exact_match_with()(logits, y)], "returns a number"),
]
EXACT_RIGHT = [
    solutions.passkey_exact_match,
    exact_match_with(),
    lambda logits, y: synthetic.exact_match(logits, y).double().mean(),
]

# ---- 10 log_position_scale: fn(query_scale, tq, tk=None) -> [H, tq, 1] ---------------------------------


def position_scale_with(offset=2, log=torch.log, aligned=True, per_head=True, layout=lambda s: s[:, :, None]):
    """A learner's log-position scale with one plausible mistake switched on."""

    def scale(query_scale, tq, tk=None):
        tk = tq if tk is None else tk
        positions = torch.arange(tq, dtype=torch.float32) + ((tk - tq) if aligned else 0)
        s = query_scale if per_head else query_scale[:1].expand(len(query_scale))
        return layout(s[:, None] * log(positions + offset)[None, :])

    return scale


SCALE_WRONG = [
    (position_scale_with(offset=1), "s_h * log(i + 2), natural log, from query 0"),
    (position_scale_with(log=torch.log2), "s_h * log(i + 2), natural log, from query 0"),
    (position_scale_with(per_head=False), "one scale per head"),
    (position_scale_with(aligned=False), "bottom-right aligned: query i sits at position i + tk - tq"),
    (
        lambda query_scale, tq, tk=None: position_scale_with()(query_scale.detach(), tq, tk),
        "the gradient reaches query_scale",
    ),
    (position_scale_with(layout=lambda s: s.T), "shape [H, tq, 1], query_scale's dtype"),
    (position_scale_with(layout=lambda s: s.double()[:, :, None]), "shape [H, tq, 1], query_scale's dtype"),
]
SCALE_RIGHT = [
    solutions.log_position_scale,
    msp.normalizers.log_position_scale,
    position_scale_with(),
]

# ---- 10 learnable_sink: fn(scores, mask, sink) -------------------------------------------------------------


def sink_with(
    shift=lambda x, sink: torch.maximum(x.amax(-1, keepdim=True), sink), hide=True, sink_term=torch.exp
):
    """A learner's learnable-sink softmax with one plausible mistake switched on."""

    def normalize(scores, mask, sink):
        x = scores.masked_fill(~mask, float("-inf")) if hide and mask is not None else scores
        c = shift(x, sink.to(x.dtype)).detach()
        e = torch.exp(x - c)
        if mask is not None and not hide:
            e = e * mask  # masked keys removed after the sum's shift was taken over them
        return e / (e.sum(-1, keepdim=True) + sink_term(sink - c))

    return normalize


def softmax1_only(scores, mask, sink):
    return msp.softmax1(scores, mask=mask)


LEARNABLE_SINK_WRONG = [
    (
        lambda scores, mask, sink: msp.masked_softmax(scores, mask=mask),
        "sink 0 is softmax1: the sink takes its share of every row",
    ),
    (softmax1_only, "one sink logit per head"),
    (
        sink_with(sink_term=lambda d: torch.exp(-d)),
        "sink 0 is softmax1: the sink takes its share of every row",
    ),
    (
        lambda scores, mask, sink: msp.sink_softmax(scores, sink, mask=None) * (1 if mask is None else mask),
        "masked keys get 0 and stay out of the denominator",
    ),
    (sink_with(shift=lambda x, sink: x.amax(-1, keepdim=True)), "a row with no visible key gives zeros"),
    (sink_with(shift=lambda x, sink: torch.zeros_like(sink)), "stable for large scores"),
    (
        lambda scores, mask, sink: msp.sink_softmax(scores, sink.detach(), mask=mask),
        "the gradient reaches the scores and the sink",
    ),
    (
        lambda scores, mask, s: msp.sink_softmax(scores, s, mask=mask),
        "registered, it trains in a Transformer",
        "by keyword",
    ),
]
LEARNABLE_SINK_RIGHT = [
    solutions.learnable_sink,
    lambda scores, mask, sink: msp.sink_softmax(scores, sink, mask=mask),
    sink_with(),
]


def test_the_learnable_sink_check_leaves_the_registry_as_it_found_it():
    before = dict(msp.NORMALIZERS)
    checks.learnable_sink(solutions.learnable_sink)
    with pytest.raises(CheckFailed):
        checks.learnable_sink(LEARNABLE_SINK_WRONG[-1][0])
    assert msp.NORMALIZERS == before


# ---- the tables ------------------------------------------------------------------------------------

WRONG = {
    "softpick": SOFTPICK_WRONG,
    "softpick_jacobian": JACOBIAN_WRONG,
    "softpick_vjp": VJP_WRONG,
    "causal_mask": MASK_WRONG,
    "merge_partials": MERGE_WRONG,
    "masked_softpick": MASKED_WRONG,
    "block_update": UPDATE_WRONG,
    "naive_attention": NAIVE_WRONG,
    "online_softpick_attention": ONLINE_WRONG,
    "softpick_score_grad": SCORE_GRAD_WRONG,
    "attention_roofline": ROOFLINE_WRONG,
    "count_params": COUNT_WRONG,
    "learning_rate": LR_WRONG,
    "clip_grad_norm": CLIP_WRONG,
    "bos_attention": BOS_WRONG,
    "first_token_norm_ratio": NORM_RATIO_WRONG,
    "sink_rate": SINK_WRONG,
    "kurtosis": KURTOSIS_WRONG,
    "quantize_rtn": RTN_WRONG,
    "hqq_zero_step": HQQ_WRONG,
    "quantize_activations": ACT_WRONG,
    "passkey_exact_match": EXACT_WRONG,
    "log_position_scale": SCALE_WRONG,
    "learnable_sink": LEARNABLE_SINK_WRONG,
    **(wrong_kernels.WRONG if wrong_kernels else {}),
}
RIGHT = {
    "softpick": SOFTPICK_RIGHT,
    "softpick_jacobian": JACOBIAN_RIGHT,
    "softpick_vjp": VJP_RIGHT,
    "causal_mask": MASK_RIGHT,
    "merge_partials": MERGE_RIGHT,
    "masked_softpick": MASKED_RIGHT,
    "block_update": UPDATE_RIGHT,
    "naive_attention": NAIVE_RIGHT,
    "online_softpick_attention": ONLINE_RIGHT,
    "softpick_score_grad": SCORE_GRAD_RIGHT,
    "attention_roofline": ROOFLINE_RIGHT,
    "count_params": COUNT_RIGHT,
    "learning_rate": LR_RIGHT,
    "clip_grad_norm": CLIP_RIGHT,
    "bos_attention": BOS_RIGHT,
    "first_token_norm_ratio": NORM_RATIO_RIGHT,
    "sink_rate": SINK_RIGHT,
    "kurtosis": KURTOSIS_RIGHT,
    "quantize_rtn": RTN_RIGHT,
    "hqq_zero_step": HQQ_RIGHT,
    "quantize_activations": ACT_RIGHT,
    "passkey_exact_match": EXACT_RIGHT,
    "log_position_scale": SCALE_RIGHT,
    "learnable_sink": LEARNABLE_SINK_RIGHT,
    **(wrong_kernels.RIGHT if wrong_kernels else {}),
}


def wrong_cases():
    """(exercise, wrong answer, property that must reject it, a phrase the message must hold) for every row."""
    return [
        pytest.param(name, row[0], row[1], row[2] if len(row) > 2 else "", id=f"{name}: {row[1]} #{i}")
        for name, rows in WRONG.items()
        for i, row in enumerate(rows)
    ]


def right_cases():
    return [
        pytest.param(name, fn, id=f"{name} #{i}") for name, fns in RIGHT.items() for i, fn in enumerate(fns)
    ]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings in the Triton interpreter
@pytest.mark.parametrize(("exercise", "wrong", "property_name", "also_says"), wrong_cases())
def test_check_rejects_the_wrong_answer_at_its_property(
    exercise, wrong, property_name, also_says, assert_rejected
):
    message = assert_rejected(getattr(checks, exercise), wrong, property_name)
    assert also_says in message


@pytest.mark.parametrize(("exercise", "right"), right_cases())
def test_check_accepts_a_right_answer(exercise, right):
    assert getattr(checks, exercise)(right) is right
    assert OUTCOMES[exercise] == PASSED


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_every_exercise_rejects_at_least_three_wrong_answers(exercise):
    if exercise not in WRONG:
        pytest.skip("its wrong answers are Triton kernels, and Triton is not installed")
    properties = {row[1] for row in WRONG[exercise]} - {"signature"}
    assert len(WRONG[exercise]) >= 3 and len(properties) >= 2


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_every_exercise_has_a_solution_and_a_check(exercise):
    check = getattr(checks, exercise)
    assert check.__name__ == exercise and callable(getattr(solutions, exercise))
    assert len({p.name for p in check.properties}) >= 3


# ---- the runner ---------------------------------------------------------------------------------


def test_an_unfinished_stub_falls_back_to_the_solution(capsys):
    def stub(x, dim=-1):
        raise NotImplementedError

    assert msp.checks.softpick(stub) is solutions.softpick
    assert "not implemented yet" in capsys.readouterr().out
    assert OUTCOMES["softpick"] == FELL_BACK


def test_solutions_mode_checks_the_solution(monkeypatch, capsys):
    monkeypatch.setenv("MSP_SOLUTIONS", "1")
    assert msp.checks.softpick(SOFTPICK_WRONG[0][0]) is solutions.softpick
    assert "MSP_SOLUTIONS=1" in capsys.readouterr().out


def test_a_wrong_signature_fails_in_one_line_naming_the_expected_one(assert_rejected):
    def my_attention(q, k, v, mask):
        return q

    message = assert_rejected(msp.checks.naive_attention, my_attention, "signature")
    assert "yours is my_attention(q, k, v, mask), expected my_attention(q, k, v, causal=True)" in message


def test_a_learners_own_error_is_not_swallowed():
    def typo(x, dim=-1):
        return x.softpik(dim)

    with pytest.raises(AttributeError, match="softpik"):
        msp.checks.softpick(typo)


def test_check_failed_is_an_assertion_error():
    assert issubclass(CheckFailed, AssertionError)


def test_check_needs_a_callable():
    with pytest.raises(TypeError, match="pass your function"):
        msp.checks.softpick(torch.zeros(3))


def test_the_readme_syllabus_lists_every_exercise_in_its_notebook_row():
    rows = {
        line.split("|")[2].strip(" []").split("]")[0]: line
        for line in (ROOT / "README.md").read_text().splitlines()
        if re.match(r"\| \d\d \|", line)
    }
    listed = {stem: set(re.findall(r"`([a-z_0-9]+)`", row.split("|")[-2])) for stem, row in rows.items()}
    expected = {stem: set() for stem in rows}
    for name, notebook in EXERCISES.items():
        expected[notebook].add(name)
    assert listed == expected


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_every_exercise_is_called_in_its_notebook(exercise):
    notebook = (ROOT / "notebooks" / f"{EXERCISES[exercise]}.ipynb").read_text()
    assert f"msp.checks.{exercise}(" in notebook


def test_progress_lists_every_exercise_and_what_became_of_it(capsys):
    OUTCOMES.clear()

    def stub(x, dim=-1):
        raise NotImplementedError

    msp.checks.softpick(stub)
    msp.checks.kurtosis(solutions.kurtosis)
    with pytest.raises(CheckFailed):
        msp.checks.sink_rate(SINK_WRONG[0][0])
    capsys.readouterr()
    status = msp.course.progress()
    out = capsys.readouterr().out
    assert list(status) == list(EXERCISES)
    assert (
        status["softpick"] == FELL_BACK and status["kurtosis"] == PASSED and status["sink_rate"] == "failed"
    )
    assert {status[name] for name in EXERCISES if name not in ("softpick", "kurtosis", "sink_rate")} == {
        "not run"
    }
    assert all(name in out for name in EXERCISES) and f"{len(EXERCISES) - 3} not run" in out


# The Triton stubs of notebooks 05 and 06: (notebook, solution module, the @triton.jit functions of one stub
# cell by their solution names, the marked part the learner writes).
KERNEL_STUBS = [
    ("05_flash_forward", "flash_forward", ("online_update", "flash_forward_kernel"), "loop body"),
    ("05_flash_forward", "flash_forward", ("flash_forward_blocks_kernel",), "key-block range"),
    ("06_flash_backward", "flash_backward", ("flash_dq_kernel",), "loop"),
    ("06_flash_backward", "flash_backward", ("flash_dkdv_kernel",), "loops"),
]


def jit_functions(source: str) -> dict[str, str]:
    """Each @triton.jit function of the text between ``# fmt: off`` and ``# fmt: on``, by name."""
    block = source[source.index("# fmt: off") : source.index("# fmt: on")]
    found = re.findall(r"(@triton\.jit\ndef (\w+)\(.*?)(?=\n\n\n@triton\.jit|\Z)", block, flags=re.DOTALL)
    return {name: text for text, name in found}


@pytest.mark.parametrize(("notebook", "module", "names", "part"), KERNEL_STUBS, ids=lambda x: str(x))
def test_a_notebooks_kernel_stub_is_the_solution_without_the_learners_part(notebook, module, names, part):
    """One source for each didactic kernel: the stub is the reference with the marked part left out."""
    solution = jit_functions((ROOT / "minisoftpick" / "solutions" / f"{module}.py").read_text())
    expected = "".join(
        re.sub(rf" *# --- the {part}.*?# --- end of the {part} ---\n", "", solution[name], flags=re.DOTALL)
        for name in names
    )
    cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    cell = next("".join(c["source"]) for c in cells if f"def my_{names[0]}(" in "".join(c["source"]))
    stub = "".join(jit_functions(cell)[f"my_{name}"] for name in names)
    stub = re.sub(r" *# your code here.*\n", "", stub).replace("  # noqa: F841", "")
    for name in ("online_update", "flash_forward_kernel", "flash_forward_blocks_kernel", *names):
        stub = stub.replace(f"my_{name}(", f"{name}(")
    assert stub.split() == expected.split()


def test_an_exercise_named_like_its_module_stays_the_exercise():
    """checks.causal_mask loads checks/naive_attention.py; checks.naive_attention must still be the check."""
    import subprocess
    import sys

    code = (
        "from minisoftpick import checks, solutions; checks.causal_mask; solutions.causal_mask; "
        "print(callable(checks.naive_attention), callable(solutions.naive_attention), "
        "checks.naive_attention.__name__, solutions.naive_attention.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "naive_attention", "naive_attention"]


def test_loading_every_exercise_leaves_each_name_an_exercise():
    """Loading one notebook's checks never shadows another's exercise with a module of the same name (a check
    module importing an earlier notebook's would put that module in the exercise's place)."""
    import subprocess
    import sys

    code = (
        "import types; from minisoftpick import checks, solutions; from minisoftpick.checks import EXERCISES\n"
        "shadowed = set()\n"
        "for n in reversed(EXERCISES):\n"
        "    getattr(checks, n), getattr(solutions, n)\n"
        "    shadowed |= {m for m in EXERCISES for p in (checks, solutions)\n"
        "                 if isinstance(vars(p).get(m), types.ModuleType)}\n"
        "print(sorted(shadowed))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
