"""Sink rate, attention sparsity, kurtosis: against brute-force references (the notebook-08 checks are
tested in tests/test_checks.py's table)."""

import numpy as np
import pytest
import torch

import minisoftpick as msp
from minisoftpick import metrics
from minisoftpick.metrics import analyze
from minisoftpick.model import ModelConfig, Transformer


def attention_maps(normalizer, b=2, h=3, t=7, seed=0, std=2.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, 8, generator=g, dtype=torch.float64) * std for _ in range(3))
    return msp.naive_attention(q, k, v, normalizer=normalizer, return_weights=True)[1]


def brute_force_sink_rate(weights, threshold):
    sinks = heads = 0
    for w in weights:
        b, h, t, _ = w.shape
        for head in range(h):
            mean = sum(float(w[i, head, row, 0]) for i in range(b) for row in range(t)) / (b * t)
            sinks += mean > threshold
            heads += 1
    return sinks / heads


def brute_force_sparsity(weights, tol):
    zeros = total = 0
    for w in weights:
        b, h, tq, tk = w.shape
        for row in range(tq):
            for col in range(row + tk - tq + 1):
                zeros += int((w[:, :, row, col] <= tol).sum())
                total += b * h
    return zeros / total


# ---- sink rate ----------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5])
def test_sink_rate_matches_brute_force(threshold):
    weights = [attention_maps(name, seed=s) for s, name in enumerate(["softmax", "softpick", "softmax1"])]
    for w in weights:  # plant a sink in head 0 of every layer
        w[:, 0] = 0.0
        w[:, 0, :, 0] = 0.9
    expected = brute_force_sink_rate(weights, threshold)
    assert metrics.sink_rate(weights, threshold) == pytest.approx(expected)
    assert expected >= 1 / 3  # the planted heads count


def test_sink_must_exceed_threshold_and_zero_rows_count_as_no_sink():
    w = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    w[0, 0, :, 0] = torch.tensor([1.0, 0.5, 0.5, 0.0])  # mean exactly 0.5
    w[0, 1, 1::2, 0] = 0.9  # rows 0 and 2 attend nowhere: mean 0.45
    w[0, 2, :, 0] = 0.75
    assert metrics.sink_rate([w], threshold=0.5) == pytest.approx(1 / 3)


def test_first_token_attention_averages_batch_and_rows():
    w = attention_maps("softmax", b=3, h=2, t=5)
    expected = w[..., 0].permute(1, 0, 2).reshape(2, -1).mean(-1)
    torch.testing.assert_close(metrics.first_token_attention(w), expected)


@pytest.mark.parametrize(
    "bad", [[], torch.zeros(1, 1, 2, 2), [torch.zeros(2, 2, 2)], [torch.full((1, 1, 2, 2), float("nan"))]]
)
def test_metrics_reject_bad_maps(bad):
    with pytest.raises((TypeError, ValueError), match="weights"):
        metrics.sink_rate(bad)
    with pytest.raises((TypeError, ValueError), match="weights"):
        metrics.attention_sparsity(bad)


# ---- attention sparsity ---------------------------------------------------------------------------


@pytest.mark.parametrize("normalizer", ["softpick", "softmax"])
def test_sparsity_matches_brute_force(normalizer):
    weights = [
        attention_maps(normalizer, seed=s, std=2.0 if normalizer == "softpick" else 0.5) for s in range(2)
    ]
    expected = brute_force_sparsity(weights, 1e-5)
    assert metrics.attention_sparsity(weights) == pytest.approx(expected)
    if normalizer == "softpick":
        assert 0.2 < expected < 0.9  # about half the scores are <= 0
    else:
        assert expected == 0.0  # the masked upper triangle (all zeros) is not counted


def test_sparsity_with_fewer_queries_than_keys_uses_bottom_right_mask():
    w = attention_maps("softpick", t=6)[:, :, 2:, :]  # Tq = 4, Tk = 6: the last 4 query rows
    assert metrics.attention_sparsity([w]) == pytest.approx(brute_force_sparsity([w], 1e-5))


def test_zero_fraction_per_head_averages_to_sparsity():
    w = attention_maps("softpick", h=4)
    assert metrics.zero_fraction(w).mean().item() == pytest.approx(metrics.attention_sparsity([w]))


# ---- kurtosis and max |x| ------------------------------------------------------------------------


def test_kurtosis_is_pearson_over_all_elements():
    x = torch.tensor([[0.0, 1.0, 1.0], [2.0, 9.0, -3.0]])
    a = x.double().numpy().ravel()
    expected = np.mean((a - a.mean()) ** 4) / np.mean((a - a.mean()) ** 2) ** 2
    assert metrics.kurtosis(x) == pytest.approx(expected)


def test_kurtosis_of_a_gaussian_is_three_and_outliers_raise_it():
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    assert metrics.kurtosis(x) == pytest.approx(3.0, abs=0.05)
    assert metrics.kurtosis(3 * x + 5) == pytest.approx(metrics.kurtosis(x), rel=1e-6)
    x[7] = 300.0
    assert metrics.kurtosis(x) > 100


def test_kurtosis_rejects_constant_or_bad_input():
    with pytest.raises(ValueError, match="constant"):
        metrics.kurtosis(torch.ones(5))
    with pytest.raises(ValueError, match="x must"):
        metrics.kurtosis(torch.arange(5))


def test_max_abs():
    assert metrics.max_abs(torch.tensor([[0.5, -7.0], [3.0, 1.0]])) == 7.0


# ---- the Bigram-Backcopy metrics: sink at dormant queries, copy at active ones, drain and peak ---------


def hand_map():
    """One sequence of 4 tokens, 2 heads; query 2 is active (a trigger), queries 1 and 3 dormant.

    head 0 (softmax-like, a sink): rows 1 and 3 put 0.8 and 0.6 on BOS, row 2 copies (0.9 on key 1).
    head 1 (softpick-like): dormant rows attend nowhere, row 2 puts 0.5 on key 1.
    """
    w = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    w[0, 0] = torch.tensor([[1.0, 0, 0, 0], [0.8, 0.2, 0, 0], [0.05, 0.9, 0.05, 0], [0.6, 0.1, 0.1, 0.2]])
    w[0, 1, 0, 0] = 1.0
    w[0, 1, 2] = torch.tensor([0.0, 0.5, 0.2, 0])
    dormant = torch.tensor([[False, True, False, True]])
    active = torch.tensor([[False, False, True, False]])
    return w, dormant, active


def test_bos_attention_row_mass_and_previous_token_by_hand():
    w, dormant, active = hand_map()
    torch.testing.assert_close(
        metrics.bos_attention(w, dormant), torch.tensor([0.7, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        metrics.bos_attention(w, active), torch.tensor([0.05, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(metrics.row_mass(w, dormant), torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(
        metrics.previous_token_attention(w, active), torch.tensor([0.9, 0.5], dtype=torch.float64)
    )
    torch.testing.assert_close(  # row 1's previous token is BOS (0.8), row 3's is key 2 (0.1)
        metrics.previous_token_attention(w, dormant), torch.tensor([0.45, 0.0], dtype=torch.float64)
    )


def test_query_averages_pool_the_batch():
    """Two sequences: 1 selected query in the first, 3 in the second; each query weighs the same."""
    w = torch.zeros(2, 1, 4, 4)
    w[0, 0, 1, 0] = 1.0
    w[1, 0, 1:, 0] = 0.2
    queries = torch.tensor([[False, True, False, False], [False, True, True, True]])
    assert metrics.bos_attention(w, queries).item() == pytest.approx((1.0 + 3 * 0.2) / 4)


def test_first_token_norm_ratio_by_hand():
    residual = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]])  # norms 5, 1, 2
    assert metrics.first_token_norm_ratio(residual).item() == pytest.approx(5 / 1.5)
    values = torch.zeros(2, 2, 3, 2)  # [B, H, T, D]
    values[:, 0, 0, 0] = torch.tensor([0.1, 0.3])  # head 0: BOS norms 0.1 and 0.3, others 1
    values[:, 0, 1:, 1] = 1.0
    values[:, 1, :, 0] = 2.0  # head 1: every norm 2
    torch.testing.assert_close(
        metrics.first_token_norm_ratio(values), torch.tensor([0.2, 1.0], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda w, q: metrics.bos_attention(w, q.int()),
            r"queries must be a bool tensor \[B, Tq\] = \[1, 4\]",
        ),
        (lambda w, q: metrics.row_mass(w, q[:, :3]), r"queries must be a bool tensor"),
        (lambda w, q: metrics.bos_attention(w, q & False), "selects no query"),
        (lambda w, q: metrics.bos_attention(w[0], q), r"w must be a float tensor \[B, H, Tq, Tk\]"),
        (lambda w, q: metrics.row_mass(w * float("nan"), q), "w has NaN or inf"),
        (lambda w, q: metrics.previous_token_attention(w[..., :3], q), "w must be square"),
        (lambda w, q: metrics.previous_token_attention(w, q | True), "position 0, which has no previous"),
        (lambda w, q: metrics.first_token_norm_ratio(torch.ones(2, 1, 4)), "at least 2 positions"),
        (lambda w, q: metrics.first_token_norm_ratio(torch.ones(3, 4)), r"states must be a float tensor"),
        (lambda w, q: metrics.first_token_norm_ratio(torch.ones(1, 3, 2).long()), r"states must be a float"),
        (lambda w, q: metrics.first_token_norm_ratio(torch.zeros(1, 3, 2)), "all zero"),
        (lambda w, q: metrics.first_token_norm_ratio(torch.full((1, 3, 2), float("inf"))), "NaN or inf"),
    ],
)
def test_backcopy_metrics_reject_bad_input(call, match):
    w, dormant, _ = hand_map()
    with pytest.raises(ValueError, match=match):
        call(w, dormant)


# ---- analyze() on a model --------------------------------------------------------------------------


def test_analyze_reports_the_metrics_of_the_captured_tensors():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=20, seq_len=12, n_layers=2, n_heads=2, d_model=16))
    x = torch.randint(0, 20, (3, 12))
    report, capture = analyze(model, x, x)
    assert [layer["layer"] for layer in report["layers"]] == [0, 1]
    assert report["sink_rate"] == metrics.sink_rate(capture.attn)
    assert report["attention_sparsity"] == metrics.attention_sparsity(capture.attn)
    assert report["layers"][1]["kurtosis"] == metrics.kurtosis(capture.hidden[1])
    assert report["max_abs"] == max(metrics.max_abs(h) for h in capture.hidden)
    assert len(report["layers"][0]["first_token_attention"]) == 2
    assert np.isfinite(report["loss"])
