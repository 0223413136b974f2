"""naive_attention and online_softpick_attention against a float64 loop-over-rows reference."""

import math

import pytest
import torch

import minisoftpick as msp
from minisoftpick.normalizers import DEFAULT_EPS


def rowwise_softpick_attention(q, k, v, causal=True, scale=None):
    """One query row at a time, visible keys sliced out explicitly: no mask ever enters a sum."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = torch.zeros(b, hq, tq, d, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            kh = h // (hq // hkv)
            for i in range(tq):
                last = i + tk - tq if causal else tk - 1
                if last < 0:
                    continue
                s = (k[bi, kh, : last + 1].double() @ q[bi, h, i].double()) * scale
                e = torch.expm1(s)
                w = torch.relu(e) / (e.abs().sum() + DEFAULT_EPS)
                out[bi, h, i] = w @ v[bi, kh, : last + 1].double()
    return out


SHAPES = [  # (B, Hq, Hkv, Tq, Tk, D)
    (2, 2, 2, 7, 7, 8),
    (1, 4, 2, 5, 9, 16),  # GQA, Tq < Tk
    (1, 2, 1, 9, 4, 8),  # Tq > Tk: the first rows see nothing under a causal mask
    (1, 1, 1, 1, 1, 4),
]


def qkv(b, hq, hkv, tq, tk, d, std=1.5, dtype=torch.float64):
    g = torch.Generator().manual_seed(b * 1000 + tq * 10 + tk)
    q = torch.randn(b, hq, tq, d, generator=g, dtype=dtype) * std
    k = torch.randn(b, hkv, tk, d, generator=g, dtype=dtype) * std
    v = torch.randn(b, hkv, tk, d, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
def test_naive_matches_rowwise_reference(shape, causal):
    q, k, v = qkv(*shape)
    torch.testing.assert_close(
        msp.naive_attention(q, k, v, causal=causal), rowwise_softpick_attention(q, k, v, causal)
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block_size", [1, 3, 16, 64])
def test_online_matches_naive_for_every_block_size(shape, causal, block_size):
    q, k, v = qkv(*shape)
    torch.testing.assert_close(
        msp.online_softpick_attention(q, k, v, causal=causal, block_size=block_size),
        msp.naive_attention(q, k, v, causal=causal),
    )


def test_online_first_block_far_below_zero_in_float32():
    """Keys 0..15 score about -300, later keys are positive: shifting by m alone would give NaN."""
    d = 16
    q = torch.zeros(1, 1, 8, d)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, 32, d)
    k[..., :16, 0] = -300.0 * math.sqrt(d)
    k[..., 16:, 0] = torch.linspace(-1, 2, 16) * math.sqrt(d)
    v = torch.randn(1, 1, 32, d)
    out = msp.online_softpick_attention(q, k, v, causal=False, block_size=16)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, msp.naive_attention(q, k, v, causal=False), atol=1e-5, rtol=1e-4)


def test_online_state_gives_weights_back():
    """out = sum_j relu(exp(s_j - L) - exp(-L)) v_j with L = shift + log(denominator)."""
    q, k, v = qkv(1, 2, 2, 6, 6, 8)
    state = msp.online_softpick_attention(q, k, v, block_size=4, return_state=True)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    log_term = (state.shift + state.denominator.log())[..., None]
    weights = torch.relu(torch.exp(scores - log_term) - torch.exp(-log_term)).masked_fill(
        ~msp.causal_mask(6, 6), 0
    )
    torch.testing.assert_close(weights @ v, state.out)
    assert state.shift.shape == state.denominator.shape == (1, 2, 6)


def test_weights_are_returned_and_zero_above_the_diagonal():
    q, k, v = qkv(1, 2, 2, 5, 5, 8)
    out, w = msp.naive_attention(q, k, v, return_weights=True)
    assert w.shape == (1, 2, 5, 5)
    assert torch.all(w[..., ~msp.causal_mask(5, 5)] == 0)
    torch.testing.assert_close(w @ v, out)


def test_extra_mask_combines_with_causal():
    q, k, v = qkv(2, 2, 2, 6, 6, 8)
    pad = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    pad[1, ..., :2] = False  # sequence 1 has two padding keys at the start
    _, w = msp.naive_attention(q, k, v, mask=pad, return_weights=True)
    assert torch.all(w[1, ..., :2] == 0)
    expected = rowwise_softpick_attention(q[1:, :, 2:], k[1:, :, 2:], v[1:, :, 2:])
    torch.testing.assert_close(msp.naive_attention(q, k, v, mask=pad)[1:, :, 2:], expected)


def test_softmax_normalizer_matches_sdpa():
    q, k, v = qkv(2, 4, 2, 9, 9, 16, dtype=torch.float32)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True
    )
    torch.testing.assert_close(
        msp.naive_attention(q, k, v, normalizer="softmax"), expected, atol=1e-5, rtol=1e-4
    )


def test_callable_normalizer_and_scale():
    q, k, v = qkv(1, 1, 1, 4, 4, 8)
    seen = {}

    def spy(scores, mask):
        seen["scores"] = scores
        return msp.softpick(scores, mask=mask)

    msp.naive_attention(q, k, v, normalizer=spy, scale=0.5)
    torch.testing.assert_close(seen["scores"], q @ k.transpose(-1, -2) * 0.5)


def test_half_precision_in_and_out():
    q, k, v = qkv(1, 2, 2, 16, 16, 32, dtype=torch.float32)
    out = msp.naive_attention(q.half(), k.half(), v.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), msp.naive_attention(q, k, v), atol=2e-2, rtol=2e-2)


def test_gradcheck_float64():
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 1, 5, 6, 4))
    assert torch.autograd.gradcheck(lambda a, b, c: msp.naive_attention(a, b, c), (q, k, v))
    assert torch.autograd.gradcheck(
        lambda a, b, c: msp.online_softpick_attention(a, b, c, block_size=2), (q, k, v)
    )


def test_bottom_right_causal_mask():
    assert torch.equal(
        msp.causal_mask(2, 4), torch.tensor([[True, True, True, False], [True, True, True, True]])
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (
            (torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)),
            {},
            ValueError,
            "q must have 4 dims",
        ),
        (
            (torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)),
            {},
            ValueError,
            "multiple",
        ),
        (
            (torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)),
            {},
            ValueError,
            "head_dim",
        ),
        (
            (torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 5, 8)),
            {},
            ValueError,
            "same shape",
        ),
        (
            (torch.randn(1, 2, 4, 8), torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8)),
            {},
            ValueError,
            "batch",
        ),
        ((torch.ones(1, 2, 4, 8, dtype=torch.long),) * 3, {}, TypeError, "q must be float16"),
        (
            (torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8).double(), torch.randn(1, 2, 4, 8)),
            {},
            TypeError,
            "dtype",
        ),
        (
            (torch.randn(1, 2, 4, 8),) * 3,
            {"normalizer": "sparsemax"},
            ValueError,
            "normalizer must be one of",
        ),
        ((torch.randn(1, 2, 4, 8),) * 3, {"mask": torch.ones(4, 4)}, TypeError, "mask must be a bool"),
        (
            (torch.randn(1, 2, 4, 8),) * 3,
            {"mask": torch.ones(3, 4, dtype=torch.bool)},
            ValueError,
            "broadcast",
        ),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        msp.naive_attention(*args, **kwargs)


def test_online_bad_block_size():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="block_size"):
        msp.online_softpick_attention(q, q, q, block_size=0)
