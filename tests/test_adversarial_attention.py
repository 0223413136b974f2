"""Adversarial input for the normalizers, the attention entry points and check_attention_inputs.

Huge masked or hidden scores, extreme visible scores, half precision, empty and degenerate shapes,
rows that see no key, and every kind of wrong argument. The rule each case pins: a masked entry
never touches a value or a gradient, numbers are finite and right, and bad input is a TypeError or
ValueError that names the argument.
"""

import math

import pytest
import torch

import minisoftpick as msp
from minisoftpick.attention import AttentionInputs, check_attention_inputs
from minisoftpick.normalizers import DEFAULT_EPS, NORMALIZERS

PLAIN = {  # normalizer name -> fn(x, mask): every normalizer that takes scores alone
    "softpick": lambda x, mask: msp.softpick(x, mask=mask),
    "softmax": lambda x, mask: msp.masked_softmax(x, mask=mask),
    "softmax1": lambda x, mask: msp.softmax1(x, mask=mask),
    "sink": lambda x, mask: msp.sink_softmax(x, torch.tensor([[0.5], [-2.0]]), mask=mask),
}
HALF = [torch.float16, torch.bfloat16]


def grad_of(fn, x, mask, weights=None):
    """Value and gradient of sum(weights * fn(x, mask)) with respect to x (fp32 weights, fixed)."""
    x = x.detach().clone().requires_grad_()
    out = fn(x, mask)
    weights = torch.linspace(-1, 2, out.numel()).view_as(out) if weights is None else weights
    (out.float() * weights).sum().backward()
    return out.detach(), x.grad


# ------------------------------------------------------------------------------ the normalizers


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("big", [200.0, 400.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_a_huge_masked_score_touches_no_value_and_no_gradient(name, big, dtype):
    """The masked entry holds `big`; the answer must equal the one with a harmless value there."""
    x = torch.tensor([[1.0, big, -0.5, 2.0], [big, 0.3, big, -1.0]], dtype=dtype)
    mask = torch.tensor([[True, False, True, True], [False, True, False, True]])
    harmless = x.masked_fill(~mask, 0.0)
    out, grad = grad_of(PLAIN[name], x, mask)
    expected_out, expected_grad = grad_of(PLAIN[name], harmless, mask)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out, expected_out, rtol=0, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)
    assert torch.all(out[~mask] == 0) and torch.all(grad[~mask] == 0)


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("big", [500.0, 1e4])
def test_extreme_visible_scores_stay_finite_and_right(name, big):
    """Rows at +big, at -big, and mixed, in one tensor: each row is computed with its own shift."""
    x = torch.tensor([[big, big - 1.0], [-big, -big - 1.0]])
    out, grad = grad_of(PLAIN[name], x, None)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    top = torch.tensor([1.0, math.exp(-1.0)]) / (1 + math.exp(-1.0))  # every normalizer ~ softmax here
    torch.testing.assert_close(out[0], top.to(out.dtype), rtol=1e-5, atol=1e-6)
    if name == "softmax":  # shift invariant: the same weights far below zero
        torch.testing.assert_close(out[1], top, rtol=1e-5, atol=1e-6)
    else:  # a row far below zero (and below any sink) carries no weight
        assert torch.all(out[1] < 1e-30)


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_matches_float32(name, dtype):
    x = (torch.randn(2, 64, generator=torch.Generator().manual_seed(0)) * 30).to(dtype)
    mask = torch.rand(2, 64, generator=torch.Generator().manual_seed(1)) > 0.3
    out = PLAIN[name](x, mask)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), PLAIN[name](x.float(), mask), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("name", PLAIN)
def test_an_empty_row_gives_an_empty_result(name):
    x = torch.empty(2, 0, requires_grad=True)
    out = PLAIN[name](x, None)
    assert out.shape == (2, 0)
    out.sum().backward()
    assert x.grad.shape == (2, 0)


def test_a_sink_that_does_not_fit_the_scores_is_named():
    with pytest.raises(ValueError, match=r"sink of shape \(3, 1\) must broadcast to \(2, 1\)"):
        msp.sink_softmax(torch.randn(2, 5), torch.zeros(3, 1))


@pytest.mark.parametrize("name", PLAIN)
def test_a_fully_masked_row_is_zero_with_zero_gradient(name):
    x = torch.tensor([[300.0, -2.0, 1.0], [0.5, 1.0, -1.0]])
    mask = torch.tensor([[False, False, False], [True, True, True]])
    out, grad = grad_of(PLAIN[name], x, mask)
    assert torch.equal(out[0], torch.zeros(3)) and torch.equal(grad[0], torch.zeros(3))
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("masked", [False, True])
def test_softpick_without_eps_is_zero_with_finite_gradient_where_the_denominator_vanishes(masked):
    """eps = 0: a row of exact zeros (or a fully masked one) is 0 / 0; it must give 0 and a finite gradient."""
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]], dtype=torch.float64)
    mask = torch.tensor([[not masked] * 3, [True] * 3])
    out, grad = grad_of(lambda t, m: msp.softpick(t, eps=0.0, mask=m), x, mask, torch.ones(2, 3))
    assert torch.equal(out[0], torch.zeros(3, dtype=torch.float64))
    assert torch.isfinite(grad).all()
    e = torch.expm1(x[1])
    torch.testing.assert_close(out[1], torch.relu(e) / e.abs().sum())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": float("nan")}, ValueError, "eps must be >= 0 and finite"),
        ({"eps": float("inf")}, ValueError, "eps must be >= 0 and finite"),
        ({"eps": -1e-9}, ValueError, "eps must be >= 0"),
        ({"eps": "0.1"}, TypeError, "eps must be a real number"),
        ({"eps": True}, TypeError, "eps must be a real number"),
        ({"eps": torch.tensor(DEFAULT_EPS)}, TypeError, "eps must be a real number"),
        ({"dim": 1.0}, TypeError, "dim must be an int"),
        ({"mask": [True, False, True]}, TypeError, "mask must be None or a bool torch.Tensor"),
        ({"mask": torch.ones(2, 3, dtype=torch.uint8)}, TypeError, "mask must be a bool tensor"),
        ({"mask": torch.ones(2, 3, dtype=torch.bool, device="meta")}, ValueError, "mask must be on"),
        ({"mask": torch.ones(3, 2, dtype=torch.bool)}, ValueError, "must broadcast to"),
    ],
)
def test_bad_softpick_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        msp.softpick(torch.randn(2, 3), **kwargs)


@pytest.mark.parametrize("sink", ["0.5", None, True, float("nan"), torch.tensor([1, 2])])
def test_a_bad_sink_is_named(sink):
    with pytest.raises(TypeError, match="sink must be"):
        msp.sink_softmax(torch.randn(2, 3), sink)


def test_every_registered_normalizer_is_described():
    for name, spec in NORMALIZERS.items():
        assert spec.name == name and callable(spec.fn)
        assert spec.fused in (None, "flash", "sdpa")
    assert NORMALIZERS["softpick"].fused == NORMALIZERS["scaled_softpick"].fused == "flash"
    assert NORMALIZERS["softmax"].fused == "sdpa" and NORMALIZERS["softmax1"].fused is None
    assert dict(NORMALIZERS["sink"].head_parameters) == {"sink": 0.0}
    assert NORMALIZERS["scaled_softpick"].learned_per_head == ("query_scale",)
    assert NORMALIZERS["softpick"].learned_per_head == ()


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("softpick", {}, ValueError, "already registered"),
        ("", {}, TypeError, "name must be a non-empty str"),
        ("x_test", {"fused": "cuda"}, ValueError, "fused must be None or one of"),
        ("x_test", {"head_parameters": {"query_scale": 1.0}}, ValueError, "identifiers other than"),
        ("x_test", {"head_parameters": {"t": float("nan")}}, TypeError, "finite real number"),
        ("x_test", {"query_scale_init": "0.3"}, TypeError, "query_scale_init must be"),
    ],
)
def test_bad_registrations_are_refused(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        msp.register_normalizer(name, **kwargs)(lambda scores, mask: scores)
    assert "x_test" not in NORMALIZERS


# --------------------------------------------------------------------------- attention entry points


def naive(q, k, v, **kwargs):
    return msp.naive_attention(q, k, v, **kwargs)


def online(q, k, v, **kwargs):
    return msp.online_softpick_attention(q, k, v, block_size=3, **kwargs)


def flash(q, k, v, **kwargs):
    return msp.flash_softpick_attention(q, k, v, **kwargs)


ENTRY_POINTS = {"naive": naive, "online": online, "flash": flash}


def qkv(b=1, hq=2, hkv=1, tq=5, tk=5, d=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, tq, d, generator=g).to(dtype),
        torch.randn(b, hkv, tk, d, generator=g).to(dtype),
        torch.randn(b, hkv, tk, d, generator=g).to(dtype),
    )


def future_key_scoring(score, dtype=torch.float32, d=4):
    """q, k, v of 4 positions where every query scores `score` against key 3 and ~1 against the rest."""
    q = torch.zeros(1, 1, 4, d, dtype=dtype)
    q[..., 0] = 1.0
    k = torch.full((1, 1, 4, d), 0.0, dtype=dtype)
    k[..., :3, 0] = torch.tensor([1.0, -0.5, 2.0], dtype=dtype) * math.sqrt(d)
    k[..., 3, 0] = score * math.sqrt(d)
    v = torch.randn(1, 1, 4, d, generator=torch.Generator().manual_seed(0)).to(dtype)
    return q, k, v


def attention_and_grads(fn, q, k, v, rows=None, **kwargs):
    """out and the gradients of a fixed weighted sum of out's first ``rows`` query rows (all by default)."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kwargs)
    upstream = torch.linspace(-1, 1, out.numel()).view_as(out).to(out.device)
    if rows is not None:
        upstream[..., rows:, :] = 0
    (out.float() * upstream).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


CAUSAL_CASES = [("naive", {"normalizer": n}) for n in ("softpick", "softmax", "softmax1")]
CAUSAL_CASES += [("online", {}), ("flash", {})]


@pytest.mark.parametrize(("entry", "kwargs"), CAUSAL_CASES)
@pytest.mark.parametrize("score", [400.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_huge_future_score_changes_nothing(entry, kwargs, score, dtype):
    """Key 3 is hidden from queries 0-2; its score must reach neither their outputs nor the gradient of
    a loss on them (dk and dv of key 3 exactly 0), and nothing may be inf or NaN."""
    if entry == "flash":
        from minisoftpick.kernels import interpreting

        if not (torch.cuda.is_available() or interpreting()):
            pytest.skip("the kernel needs a GPU or the Triton interpreter")
    device = "cuda" if entry == "flash" and torch.cuda.is_available() else "cpu"
    q, k, v = (t.to(device) for t in future_key_scoring(score, dtype))
    out, *grads = attention_and_grads(ENTRY_POINTS[entry], q, k, v, rows=3, **kwargs)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    k_harmless = future_key_scoring(0.0, dtype)[1].to(device)
    expected_out, *expected_grads = attention_and_grads(
        ENTRY_POINTS[entry], q, k_harmless, v, rows=3, **kwargs
    )
    torch.testing.assert_close(out[..., :3, :], expected_out[..., :3, :], rtol=0, atol=0)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.all(grads[1][..., 3, :] == 0) and torch.all(grads[2][..., 3, :] == 0)


@pytest.mark.parametrize("entry", ["naive", "online"])
@pytest.mark.parametrize("eps", [0.0, DEFAULT_EPS])
@pytest.mark.parametrize("tk", [1, 2])
def test_rows_that_see_no_key_give_zero(entry, eps, tk):
    """Tq = 5 > Tk under a causal mask: the first 5 - Tk rows see nothing, for any eps, with finite gradients."""
    q, k, v = qkv(tq=5, tk=tk, dtype=torch.float64)
    out, *grads = attention_and_grads(ENTRY_POINTS[entry], q, k, v, eps=eps)
    assert out.shape == (1, 2, 5, 4)
    assert torch.equal(out[..., : 5 - tk, :], torch.zeros_like(out[..., : 5 - tk, :]))
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out, naive(q, k, v, eps=eps))


@pytest.mark.parametrize("entry", ["naive", "online"])
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_with_large_scores(entry, dtype):
    """Scores of a few hundred in fp16/bf16 inputs: computed in fp32 inside, as fp32 inputs are."""
    q, k, v = qkv(tq=9, tk=9, d=8, seed=3)
    q, k = q * 12, k * 12
    q, k, v = (t.to(dtype) for t in (q, k, v))
    out = ENTRY_POINTS[entry](q, k, v)
    assert out.dtype == dtype and torch.isfinite(out).all()
    expected = naive(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.float(), expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("tk", [1, 63, 100])
@pytest.mark.parametrize("tq", [1, 7, 100])
@pytest.mark.parametrize("block_size", [1, 16, 64])
def test_online_equals_naive_for_ragged_lengths(tq, tk, block_size):
    q, k, v = qkv(hq=4, hkv=2, tq=tq, tk=tk, d=4, dtype=torch.float64, seed=tq + tk)
    for causal in (True, False):
        torch.testing.assert_close(
            msp.online_softpick_attention(q, k, v, causal=causal, block_size=block_size),
            naive(q, k, v, causal=causal),
        )


def test_eps_reaches_the_softpick_of_both_entry_points():
    q, k, v = qkv(dtype=torch.float64)
    for eps in (0.0, 0.5):
        torch.testing.assert_close(online(q, k, v, eps=eps), naive(q, k, v, eps=eps))
    assert (naive(q, k, v, eps=0.5) - naive(q, k, v)).abs().amax() > 1e-3


def test_check_attention_inputs_resolves_scale_groups_and_eps():
    q, k, v = qkv(hq=4, hkv=2, d=16)
    assert check_attention_inputs(q, k, v) == AttentionInputs(scale=0.25, groups=2, eps=DEFAULT_EPS)
    assert check_attention_inputs(q, k, v, causal=False, scale=2, eps=0) == (2.0, 2, 0.0)


BAD_ARGUMENTS = [  # (what to change, error, message): both entry points must say the same
    ({"q": [[1.0]]}, TypeError, "q must be a torch.Tensor"),
    ({"k": torch.randn(1, 1, 5)}, ValueError, "k must have 4 dims"),
    ({"v": torch.ones(1, 1, 5, 4, dtype=torch.long)}, TypeError, "v must be float16"),
    ({"k": torch.randn(1, 1, 5, 4, dtype=torch.float64)}, TypeError, "share a dtype"),
    ({"v": torch.randn(1, 1, 5, 4, device="meta")}, ValueError, "one device"),
    ({"v": torch.randn(1, 1, 6, 4)}, ValueError, "same shape"),
    ({"k": torch.randn(2, 1, 5, 4), "v": torch.randn(2, 1, 5, 4)}, ValueError, "batch size"),
    ({"k": torch.randn(1, 1, 5, 3), "v": torch.randn(1, 1, 5, 3)}, ValueError, "head_dim"),
    # One rule for empty inputs: every size of q, k and v at least 1 (head_dim, batch, heads, lengths).
    *(
        (
            {name: torch.randn(*shape) for name, shape in zip("qkv", shapes, strict=True)},
            ValueError,
            "non-empty",
        )
        for shapes in (
            ((1, 2, 5, 0), (1, 1, 5, 0), (1, 1, 5, 0)),
            ((0, 2, 5, 4), (0, 1, 5, 4), (0, 1, 5, 4)),
            ((1, 0, 5, 4), (1, 1, 5, 4), (1, 1, 5, 4)),
            ((1, 2, 0, 4), (1, 1, 5, 4), (1, 1, 5, 4)),
            ((1, 2, 5, 4), (1, 1, 0, 4), (1, 1, 0, 4)),
        )
    ),
    (
        {"q": torch.randn(1, 3, 5, 4), "k": torch.randn(1, 2, 5, 4), "v": torch.randn(1, 2, 5, 4)},
        ValueError,
        "multiple",
    ),
    ({"k": torch.randn(1, 0, 5, 4), "v": torch.randn(1, 0, 5, 4)}, ValueError, "multiple"),
    ({"causal": "yes"}, TypeError, "causal must be a bool"),
    ({"causal": 1}, TypeError, "causal must be a bool"),
    ({"scale": "0.5"}, TypeError, "scale must be None or a real number"),
    ({"scale": True}, TypeError, "scale must be None or a real number"),
    ({"scale": torch.tensor(0.5)}, TypeError, "scale must be None or a real number"),
    ({"scale": 0.0}, ValueError, "scale must be positive and finite"),
    ({"scale": -1.0}, ValueError, "scale must be positive and finite"),
    ({"scale": float("inf")}, ValueError, "scale must be positive and finite"),
    ({"scale": float("nan")}, ValueError, "scale must be positive and finite"),
    ({"eps": -1.0}, ValueError, "eps must be >= 0"),
    ({"eps": float("nan")}, ValueError, "eps must be >= 0 and finite"),
    ({"eps": None}, TypeError, "eps must be a real number"),
]


@pytest.mark.parametrize("entry", [naive, online, flash], ids=["naive", "online", "flash"])
@pytest.mark.parametrize(("change", "error", "match"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_the_same_way_by_every_entry_point(entry, change, error, match):
    """The kernel too: these are refused before it looks at the device or launches anything."""
    q, k, v = qkv()
    args = {"q": q, "k": k, "v": v, **change}
    tensors = {name: args.pop(name) for name in ("q", "k", "v")}
    with pytest.raises(error, match=match):
        entry(**tensors, **args)
    with pytest.raises(error, match=match):
        check_attention_inputs(**tensors, **args)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mask": [[True] * 5] * 5}, TypeError, "mask must be None or a bool torch.Tensor"),
        ({"mask": torch.ones(5, 5)}, TypeError, "mask must be a bool tensor"),
        ({"mask": torch.ones(5, 5, dtype=torch.bool, device="meta")}, ValueError, "mask must be on"),
        ({"mask": torch.ones(4, 5, dtype=torch.bool)}, ValueError, r"must broadcast to \(1, 2, 5, 5\)"),
        ({"mask": torch.ones(3, 1, 5, 5, dtype=torch.bool)}, ValueError, "must broadcast"),
        ({"normalizer": "sink"}, TypeError, "learns sink per head"),
        ({"normalizer": "scaled_softpick"}, TypeError, "learns query_scale per head"),
        ({"normalizer": "sparsemax"}, ValueError, "normalizer must be one of"),
        ({"normalizer": ["softpick"]}, ValueError, "normalizer must be one of"),
    ],
)
def test_bad_naive_only_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        naive(*qkv(), **kwargs)


@pytest.mark.parametrize("block_size", [0, -1, 1.5, True, None])
def test_bad_block_size(block_size):
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        msp.online_softpick_attention(*qkv(), block_size=block_size)
