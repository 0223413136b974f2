"""flash_softpick_attention (Triton) against naive_attention in float64: out, dq, dk and dv.

Every case runs on the CPU through the Triton interpreter and, where CUDA is present, on the GPU
(marked gpu). Each of out, dq, dk, dv is judged against its own scale: relative RMS,
||got - ref|| / ||ref||, within a tolerance for each dtype, and max-abs error within ten times that
tolerance of its own max |ref| (a small gradient cannot hide behind a large one's scale). One
exception, also per tensor: where the terms of a tensor's sums cancel to under CANCELLED of their
magnitude (a row that sees one key has weight almost exactly 1, so dq and dk are nearly 0), its
scale is CANCELLED times that magnitude, since rounding errors are relative to the terms.

Ill-conditioned rows, whose true denominator D = sum_j |exp(s_j) - 1| is under 0.01, are left out
of those comparisons: a score error e moves their weights by about e / D and their gradients by
about e / D^2, so no fp32 computation (the naive one neither) gets them right to 1e-5.
test_ill_conditioned_rows_stay_finite covers them.
"""

import math
import os
import subprocess
import sys

import pytest
import torch

import minisoftpick as msp
from minisoftpick.attention import causal_mask, repeat_kv
from minisoftpick.kernels import flash_softpick, interpreting

CUDA = torch.cuda.is_available()
needs_gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]
DEVICES = [
    pytest.param(
        "cpu", marks=pytest.mark.skipif(not interpreting(), reason="CPU tensors need the Triton interpreter")
    ),
    pytest.param("cuda", marks=needs_gpu),
]
# relative RMS tolerance for (out, gradients); fp32 dots are three TF32 products on a GPU, IEEE on the CPU
TOLERANCE = {
    torch.float32: (5e-5, 5e-5),
    torch.float16: (2e-3, 4e-3),
    torch.bfloat16: (5e-3, 1e-2),
}
NAMES = ("out", "dq", "dk", "dv")
CANCELLED = 0.01


def make_inputs(b, hq, hkv, tq, tk, d, *, device, dtype=torch.float32, seed=0):
    """q, k, v and an output gradient; scores q.k/sqrt(d) are about N(0, 1), half of them negative."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(b, hq, tq, d), (b, hkv, tk, d), (b, hkv, tk, d), (b, hq, tq, d)]
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in shapes]


def run(attention, q, k, v, dout, causal, scale=None, dtype=None):
    """out, dq, dk, dv of attention(q, k, v) with q, k, v, dout cast to dtype (default: as given)."""
    q, k, v = (t.detach().to(dtype or t.dtype).requires_grad_() for t in (q, k, v))
    out = attention(q, k, v, causal=causal, scale=scale)
    out.backward(dout.to(out.dtype))
    return out.detach(), q.grad, k.grad, v.grad


def ill_conditioned_rows(q, k, causal, scale=None):
    """Bool [B, Hq, Tq]: rows that see keys and whose true denominator D is under 0.01."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q.double() @ repeat_kv(k.double(), q.shape[1] // k.shape[1]).transpose(-1, -2) * scale
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[2], k.shape[2], q.device), 0.0)  # exp(0) - 1 = 0
    d = s.expm1().abs().sum(-1)
    return (d > 0) & (d < 1e-2)


def term_magnitudes(q, k, v, dout, causal, scale=None):
    """float64 out, dq, dk, dv with every term of their sums taken by its absolute value:
    P @ |V|, scale * |dS| @ |K|, scale * |dS|^T @ |Q|, P^T @ |dO|, where
    |dS| <= exp(s) / D * (|dP| + |Delta|) (docs/design.md, "Backward")."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    q, k, v, dout = (t.double() for t in (q, k, v, dout))
    k, v = repeat_kv(k, hq // hkv), repeat_kv(v, hq // hkv)
    visible = (
        causal_mask(tq, tk, q.device) if causal else torch.ones(tq, tk, dtype=torch.bool, device=q.device)
    )
    s = (q @ k.transpose(-1, -2) * scale).masked_fill(~visible, 0.0)
    den = s.expm1().abs().sum(-1, keepdim=True) + flash_softpick.DEFAULT_EPS
    p = torch.relu(s.expm1()) / den
    dp = dout @ v.transpose(-1, -2)
    delta = (dout * (p @ v)).sum(-1, keepdim=True)
    ds = (s.exp() / den * (dp.abs() + delta.abs())).masked_fill(~visible, 0.0)

    def per_kv_head(x):  # [B, Hq, Tk, D] -> [B, Hkv, Tk, D], summed over each GQA group
        return x.view(b, hkv, hq // hkv, tk, d).sum(2)

    return (
        p @ v.abs(),
        scale * ds @ k.abs(),
        per_kv_head(scale * ds.transpose(-1, -2) @ q.abs()),
        per_kv_head(p.transpose(-1, -2) @ dout.abs()),
    )


def check(shape, causal, device, dtype=torch.float32, scale=None, inputs=None):
    """The kernel's out, dq, dk, dv against float64 naive_attention; returns the relative RMS errors."""
    q, k, v, dout = inputs or make_inputs(*shape, device=device, dtype=dtype)
    ill = ill_conditioned_rows(q, k, causal, scale)[..., None]
    dout = dout.masked_fill(ill, 0)  # no gradient flows from ill-conditioned rows
    got = run(msp.flash_softpick_attention, q, k, v, dout, causal, scale)
    expected = run(msp.naive_attention, q, k, v, dout, causal, scale, dtype=torch.float64)
    got[0].masked_fill_(ill, 0), expected[0].masked_fill_(ill, 0)  # nor is their output compared
    magnitudes = term_magnitudes(q, k, v, dout, causal, scale)
    magnitudes[0].masked_fill_(ill, 0)
    rms_errors = []
    for name, g, e, m, tol in zip(
        NAMES, got, expected, magnitudes, TOLERANCE[q.dtype][:1] + TOLERANCE[q.dtype][1:] * 3, strict=True
    ):
        assert g.shape == e.shape and g.dtype == q.dtype, f"{name}: {g.dtype} {tuple(g.shape)}"
        assert torch.isfinite(g).all(), f"{name}: not finite"
        err = g.double() - e
        norm = max(e.norm().item(), CANCELLED * m.norm().item())
        rms = err.norm().item() / norm if norm > 0 else err.norm().item()
        max_abs = err.abs().max().item()
        max_abs_limit = 10 * tol * max(e.abs().max().item(), CANCELLED * m.abs().max().item())
        assert rms <= tol and max_abs <= max_abs_limit, (
            f"{name}: relative RMS {rms:.2e} (tolerance {tol:.0e}), max abs {max_abs:.2e} (limit {max_abs_limit:.1e})"
        )
        rms_errors.append(rms)
    return rms_errors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("t", [1, 17, 63, 100, 130])
def test_ragged_lengths(t, causal, device):
    check((2, 2, 2, t, t, 32), causal, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [8, 16, 64, 80, 128, 256])  # 8 and 80 are padded to 16 and 128
def test_head_dims(d, device):
    check((1, 2, 2, 40, 40, d), True, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    ("hq", "hkv", "tq", "tk"),
    # causal with Tq > Tk: query rows 0..32 of (70, 37) see no key; (1, 45): one query sees all keys
    [(4, 2, 37, 70), (4, 1, 70, 37), (6, 3, 50, 50), (2, 2, 1, 45)],
)
def test_gqa_and_unequal_lengths(hq, hkv, tq, tk, causal, device):
    check((1, hq, hkv, tq, tk, 32), causal, device, scale=0.3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, device):
    check((1, 4, 2, 100, 100, 64), True, device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [True, False])
def test_rows_of_negative_scores_give_zeros_and_finite_gradients(causal, device):
    """score(i, j) = q_i0 * k_j0 / 4 with k_j0 > 0.5: rows with q_i0 < 0 are negative everywhere. The
    other rows are kept well conditioned (q_i0 > 0.5, so D > 0.06 even for row 0, which sees one key)."""
    q, k, v, dout = make_inputs(1, 2, 2, 50, 50, 16, device=device)
    k[..., 0] = k[..., 0].abs() + 0.5
    k[..., 1:] = 0
    q[..., 0::2, 0] = q[..., 0::2, 0].abs() + 0.5
    q[..., 1::2, 0] = -q[..., 1::2, 0].abs()  # odd rows: every score < 0
    check(None, causal, device, inputs=(q, k, v, dout))
    assert torch.all(msp.flash_softpick_attention(q, k, v, causal=causal)[..., 1::2, :] == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [True, False])
def test_first_key_blocks_far_below_zero(causal, device):
    """Keys 0..63 score about -300, later keys up to +3: a shift by the row max alone gives NaN."""
    q, k, v, dout = make_inputs(1, 1, 1, 128, 128, 16, device=device)
    q[..., 0], q[..., 1:] = 1.0, 0.0
    k[..., :64, 0] = -300.0 * 4  # * sqrt(d) undoes the 1/sqrt(d) scale
    k[..., 64:, 0] = torch.linspace(-1, 3, 64) * 4
    check(None, causal, device, inputs=(q, k, v, dout))


@pytest.mark.parametrize("device", DEVICES)
def test_shift_raised_across_key_blocks(device):
    """Scores rise from -1 to 30 over the key blocks: every block raises the shift and rescales."""
    q, k, v, dout = make_inputs(1, 1, 1, 128, 128, 16, device=device)
    q[..., 0], q[..., 1:] = 1.0, 0.0
    k[..., 0] = torch.linspace(-1, 30, 128) * 4  # * sqrt(d) undoes the 1/sqrt(d) scale
    check(None, False, device, inputs=(q, k, v, dout))


@pytest.mark.parametrize("device", DEVICES)
def test_ill_conditioned_rows_stay_finite(device):
    """Scores about 1e-3: the first rows (few keys) have D < 0.01; all stays finite, and the output,
    whose error is about 1e-7 / D relative, stays close."""
    q, k, v, dout = make_inputs(1, 2, 2, 40, 40, 16, device=device)
    q = q * 1e-3
    assert ill_conditioned_rows(q, k, causal=True)[..., :5].all()
    got = run(msp.flash_softpick_attention, q, k, v, dout, True)
    expected = run(msp.naive_attention, q, k, v, dout, True, dtype=torch.float64)
    assert all(torch.isfinite(g).all() for g in got)
    assert (got[0].double() - expected[0]).norm() / expected[0].norm() < 1e-2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("key_rows", [True, False])
def test_both_dkdv_tile_orientations(key_rows, device, monkeypatch):
    """The dK/dV kernel's tile orientation is autotuned: pin each one and check the gradients."""
    tiles = flash_softpick.KernelTiles(safe=flash_softpick.Tile(16, 32, 4, 1, key_rows=key_rows), tuned=())
    monkeypatch.setattr(flash_softpick.dkdv_kernel, "configs", flash_softpick._configs(tiles))
    check((1, 4, 2, 45, 70, 32), True, device)


KERNEL_TILES = {
    "forward_kernel": flash_softpick.FORWARD_TILES,
    "dq_kernel": flash_softpick.DQ_TILES,
    "dkdv_kernel": flash_softpick.DKDV_TILES,
}
EVERY_TILE = [(kernel, tile) for kernel, tiles in KERNEL_TILES.items() for tile in (tiles.safe, *tiles.tuned)]


@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize(("kernel", "tile"), EVERY_TILE, ids=[f"{k}-{t}" for k, t in EVERY_TILE])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_gpu)])
def test_every_tile_the_autotuner_may_pick(kernel, tile, d, device, monkeypatch):
    """Each tile of each kernel's list, pinned alone, at ragged lengths with GQA in bf16 (the
    benchmark's dtype, so its compiled tiles are reused). A tile that does not fit this head dim's
    shared memory is skipped, as the autotuner skips it."""
    from triton.runtime.errors import OutOfResources

    monkeypatch.setattr(getattr(flash_softpick, kernel), "configs", [tile.config()])
    try:
        check((1, 4, 2, 600, 700, d), True, device, torch.bfloat16)
    except OutOfResources as error:
        pytest.skip(f"does not fit: {error}")


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    """Heads-second views of [B, T, H, D] tensors (what a model's projections give) work as they are."""
    q, k, v, dout = (
        t.transpose(1, 2).contiguous().transpose(1, 2)
        for t in make_inputs(1, 4, 2, 33, 33, 32, device=device)
    )
    assert not q.is_contiguous()
    check(None, True, device, inputs=(q, k, v, dout))


@pytest.mark.parametrize("device", DEVICES)
def test_backward_saves_two_numbers_per_query_row(device):
    """Saved: q, k, v, out and the shift and denominator of each (batch, head, query), nothing T x T."""
    q, k, v, _ = make_inputs(2, 4, 2, 24, 40, 16, device=device)
    q.requires_grad_()
    out = msp.flash_softpick_attention(q, k, v)
    saved = out.grad_fn.saved_tensors
    inputs_and_out = [t for t in saved if any(t.data_ptr() == x.data_ptr() for x in (q, k, v, out))]
    extra = [t for t in saved if all(t.data_ptr() != x.data_ptr() for x in (q, k, v, out))]
    assert len(inputs_and_out) == 4
    assert [(tuple(t.shape), t.dtype) for t in extra] == [((2, 4, 24), torch.float32)] * 2


@pytest.mark.parametrize(
    ("q_shape", "kv_shape", "dtype", "kwargs", "error", "match"),
    [
        ((1, 2, 8, 16), (1, 2, 8, 16), torch.float64, {}, TypeError, "naive_attention for float64"),
        ((1, 2, 8, 300), (1, 2, 8, 300), torch.float32, {}, ValueError, "head_dim"),
        ((1, 3, 8, 16), (1, 2, 8, 16), torch.float32, {}, ValueError, "multiple"),  # check_attention_inputs
        ((1, 2, 8, 16), (1, 2, 8, 16), torch.float32, {"causal": 1}, TypeError, "causal must be a bool"),
        ((1, 2, 8, 16), (1, 2, 8, 16), torch.float32, {"scale": -0.5}, ValueError, "scale must be positive"),
        (
            (1, 2, 8, 16),
            (1, 2, 8, 16),
            torch.float32,
            {"eps": -1e-6},
            ValueError,
            "eps must be >= 0 and finite",
        ),
        (
            (1, 2, 8, 16),
            (1, 2, 8, 16),
            torch.float32,
            {"eps": math.nan},
            ValueError,
            "eps must be >= 0 and finite",
        ),
        (
            (1, 2, 8, 16),
            (1, 2, 8, 16),
            torch.float32,
            {"eps": math.inf},
            ValueError,
            "eps must be >= 0 and finite",
        ),
        ((1, 2, 8, 16), (1, 2, 8, 16), torch.float32, {"eps": None}, TypeError, "eps must be a real number"),
        ((1, 2, 8, 16), (1, 2, 8, 16), torch.float32, {"eps": True}, TypeError, "eps must be a real number"),
        (
            (1, 2, 8, 16),
            (1, 2, 8, 16),
            torch.float32,
            {"scale": torch.tensor(0.5)},
            TypeError,
            "scale must be",
        ),
    ],
)
def test_bad_input_is_refused_before_launch(q_shape, kv_shape, dtype, kwargs, error, match):
    device = "cuda" if CUDA else "cpu"
    q = torch.randn(q_shape, dtype=dtype, device=device)
    k = torch.randn(kv_shape, dtype=dtype, device=device)
    with pytest.raises(error, match=match):
        msp.flash_softpick_attention(q, k, k, **kwargs)


@pytest.mark.skipif(CUDA, reason="the interpreter is only used without a GPU")
def test_triton_imported_first_gives_a_clear_error():
    code = "import triton, torch, minisoftpick as msp; q = torch.randn(1, 1, 4, 16); msp.flash_softpick_attention(q, q, q)"
    env = {
        name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"
    }  # as a fresh shell
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "import minisoftpick first" in result.stderr


def test_cpu_tensors_without_interpreter_are_refused(monkeypatch):
    monkeypatch.setattr(flash_softpick, "interpreting", lambda: False)
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="CUDA device.*TRITON_INTERPRET=1"):
        msp.flash_softpick_attention(q, q, q)


@pytest.mark.parametrize(
    ("hq", "hkv", "d", "causal"),
    [(8, 8, 64, True), (8, 8, 128, True), (8, 2, 128, True), (8, 8, 64, False)],
)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_gpu)])
def test_bf16_at_training_sizes(hq, hkv, d, causal, device):
    """B=2, T=2048: what training runs; relative error of the bf16 output under 5e-3."""
    out_rms, *_ = check((2, hq, hkv, 2048, 2048, d), causal, device, torch.bfloat16)
    assert out_rms < 5e-3


def softpick_eps(eps):
    """naive_attention's normalizer for softpick with this eps."""
    return lambda scores, mask: msp.softpick(scores, eps=eps, mask=mask)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.5])
def test_eps_reaches_the_kernel(eps, device):
    """Scores about 0.1: D is about 3, so eps = 0.5 moves every weight by about 15%."""
    q, k, v, dout = make_inputs(1, 2, 2, 40, 40, 16, device=device)
    q = q * 0.1

    def with_eps(attention, **kwargs):
        def attend(q, k, v, causal, scale):
            return attention(q, k, v, causal=causal, scale=scale, **kwargs)

        return attend

    got = run(with_eps(msp.flash_softpick_attention, eps=eps), q, k, v, dout, True)
    expected = run(
        with_eps(msp.naive_attention, normalizer=softpick_eps(eps)), q, k, v, dout, True, dtype=torch.float64
    )
    for name, g, e in zip(NAMES, got, expected, strict=True):
        assert (g.double() - e).norm() / e.norm() < 1e-4, name
    if eps == 0.5:  # the default eps gives a different answer, so eps is not ignored
        default = msp.flash_softpick_attention(q, k, v)
        assert (default.double() - expected[0]).norm() / expected[0].norm() > 0.05


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_rows_that_see_no_key_give_zeros(eps, device):
    """Causal with Tq = 50 > Tk = 20: query rows 0..29 see no key; their output and gradients are 0, not NaN."""
    q, k, v, dout = make_inputs(1, 2, 2, 50, 20, 16, device=device)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = msp.flash_softpick_attention(q, k, v, causal=True, eps=eps)
    out.backward(dout)
    assert torch.isfinite(out).all() and torch.all(out[:, :, :30] == 0)
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert torch.all(q.grad[:, :, :30] == 0)
    expected = msp.naive_attention(q.detach(), k.detach(), v.detach(), normalizer=softpick_eps(eps))
    assert torch.allclose(out.detach(), expected, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_create_graph_is_refused(device):
    """The gradients are not part of a graph, so a double backward would silently be wrong: refused."""
    q, k, v, _ = make_inputs(1, 1, 1, 8, 8, 16, device=device)
    q.requires_grad_()
    out = msp.flash_softpick_attention(q, k, v)
    with pytest.raises(RuntimeError, match="no double backward.*naive_attention"):
        torch.autograd.grad(out.sum(), q, create_graph=True)
    (grad,) = torch.autograd.grad(msp.flash_softpick_attention(q, k, v).sum(), q)  # first order still works
    assert grad.shape == q.shape and grad.grad_fn is None


def test_length_buckets_are_powers_of_two():
    lengths = (1, 2, 3, 600, 1024, 1025)
    assert [flash_softpick.length_bucket(n) for n in lengths] == [1, 2, 4, 1024, 1024, 2048]


def test_host_integer_helpers_match_triton():
    """The launchers' plain-Python helpers give what triton.next_power_of_2 and triton.cdiv give."""
    import triton  # here, not at the top: on a CPU triton must be imported after minisoftpick.kernels

    assert all(flash_softpick._next_power_of_2(n) == triton.next_power_of_2(n) for n in range(1, 3000))
    assert all(flash_softpick._cdiv(a, b) == triton.cdiv(a, b) for a in range(700) for b in (16, 32, 64, 128))


@pytest.mark.parametrize("device", DEVICES)
def test_autotuning_is_keyed_by_length_bucket(device, monkeypatch):
    """Lengths 600 and 1000 share one tuning; 1100 (next bucket) tunes again. (Timings are stubbed:
    the interpreter cannot benchmark.)"""
    kernel = flash_softpick.forward_kernel
    safe = flash_softpick.FORWARD_TILES.safe
    monkeypatch.setattr(kernel, "configs", [safe.config(), safe._replace(block_n=16).config()])
    monkeypatch.setattr(kernel, "cache", {})
    monkeypatch.setattr(kernel, "_bench", lambda *args, config, **kwargs: [1.0, 1.0, 1.0])
    for t in (600, 1000, 1100):
        q = torch.randn(1, 1, t, 16, device=device)
        msp.flash_softpick_attention(q, q, q)
    assert len(kernel.cache) == 2
