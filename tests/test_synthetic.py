"""Passkey and associative-recall batches, passkey accuracy and the attention-mass helper."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import minisoftpick as msp
from minisoftpick.synthetic import (
    BACKCOPY_BOS,
    BACKCOPY_TOKENS,
    BACKCOPY_TRIGGERS,
    BACKCOPY_VOCAB_SIZE,
    DIGITS,
    FILLERS,
    IGNORE_INDEX,
    KEYS,
    PASSKEY,
    QUERY,
    TOKENS,
    VOCAB_SIZE,
    BigramBackcopy,
    associative_recall_batch,
    attention_mass_by_length,
    backcopy_batch,
    backcopy_roles,
    bigram_backcopy_task,
    decode,
    passkey_accuracy,
    passkey_batch,
)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_token_table():
    assert len(TOKENS) == VOCAB_SIZE == len(DIGITS) + 2 + len(KEYS) + len(FILLERS)
    assert len(set(TOKENS)) == VOCAB_SIZE
    assert decode(torch.tensor([PASSKEY, 4, 2, QUERY, KEYS[0], FILLERS[0]])) == "<passkey> 4 2 <query> a the"


@pytest.mark.parametrize("make", [passkey_batch, associative_recall_batch])
def test_format_and_determinism(make):
    x, y = make(6, 64, generator=generator(1))
    assert x.shape == y.shape == (6, 64) and x.dtype == y.dtype == torch.long
    assert x.min() >= 0 and x.max() < VOCAB_SIZE
    again, _ = make(6, 64, generator=generator(1))
    other, _ = make(6, 64, generator=generator(2))
    assert torch.equal(x, again) and not torch.equal(x, other)
    answer = y != IGNORE_INDEX
    assert torch.equal(y[answer], x[:, 1:][answer[:, :-1]])  # y[t] = x[t + 1] where y is set
    assert not answer[:, -1].any()


@pytest.mark.parametrize("passkey_len", [1, 5])
def test_passkey_answers_are_the_passkey(passkey_len):
    seq_len = 40
    x, y = passkey_batch(32, seq_len, generator=generator(), passkey_len=passkey_len)
    query_at = seq_len - passkey_len - 1
    for row, targets in zip(x, y, strict=True):
        text = decode(row).split()
        assert text.count("<passkey>") == 1 and text.count("<query>") == 1 and text[query_at] == "<query>"
        start = text.index("<passkey>") + 1
        passkey = text[start : start + passkey_len]
        assert text[query_at + 1 :] == passkey
        assert all(t.isdigit() for t in passkey)
        assert [TOKENS[t] for t in targets[targets != IGNORE_INDEX]] == passkey
        assert torch.all(targets[query_at : seq_len - 1] != IGNORE_INDEX)
        elsewhere = row[: start - 1].tolist() + row[start + passkey_len : query_at].tolist()
        assert all(t in FILLERS for t in elsewhere)


def test_passkey_depth_is_random_over_the_whole_context():
    seq_len, passkey_len = 100, 5
    x, _ = passkey_batch(200, seq_len, generator=generator(), passkey_len=passkey_len)
    depth = (x == PASSKEY).int().argmax(-1)
    last_start = seq_len - 2 * (passkey_len + 1)
    assert depth.min() == 0 and depth.max() == last_start
    assert len(depth.unique()) > last_start // 2


def test_associative_recall_pairs_and_answer():
    seq_len, num_pairs = 48, 6
    x, y = associative_recall_batch(64, seq_len, generator=generator(), num_pairs=num_pairs)
    for row, targets in zip(x.tolist(), y.tolist(), strict=True):
        context = row[: seq_len - 3]
        key_at = [i for i, t in enumerate(context) if t in KEYS]
        assert len(key_at) == num_pairs
        pairs = {context[i]: context[i + 1] for i in key_at}
        assert len(pairs) == num_pairs and all(v in DIGITS for v in pairs.values())
        assert sum(t in DIGITS for t in context) == num_pairs  # values only right after their key
        assert row[-3] == QUERY and row[-2] in pairs and row[-1] == pairs[row[-2]]
        assert targets[-2] == pairs[row[-2]] and targets.count(IGNORE_INDEX) == seq_len - 1


def test_shortest_sequences():
    x, _ = passkey_batch(3, 12, generator=generator(), passkey_len=5)  # no filler at all
    assert torch.all(x[:, 0] == PASSKEY) and torch.equal(x[:, 1:6], x[:, 7:])
    x, _ = associative_recall_batch(3, 2 * 26 + 3, generator=generator(), num_pairs=26)
    assert torch.all(torch.isin(x[:, :-3:2], torch.tensor(KEYS)))


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "match"),
    [
        (passkey_batch, {"seq_len": 11}, ValueError, "seq_len must be >= 12 for a 5-digit passkey"),
        (passkey_batch, {"passkey_len": 0}, ValueError, "passkey_len must be a positive int"),
        (passkey_batch, {"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        (passkey_batch, {"seq_len": 32.0}, ValueError, "seq_len must be a positive int"),
        (passkey_batch, {"generator": 0}, TypeError, "generator must be a torch.Generator"),
        (associative_recall_batch, {"seq_len": 18}, ValueError, "seq_len must be >= 19 for 8 pairs"),
        (associative_recall_batch, {"num_pairs": 27}, ValueError, r"num_pairs must be an int in 1..26"),
        (associative_recall_batch, {"generator": None}, TypeError, "generator must be a torch.Generator"),
    ],
)
def test_bad_arguments(make, kwargs, error, match):
    args = {"batch_size": 2, "seq_len": 32, "generator": generator()} | kwargs
    with pytest.raises(error, match=match):
        make(args.pop("batch_size"), args.pop("seq_len"), **args)


class RetrievingOracle(nn.Module):
    """Finds "<passkey>" in each sequence and, from "<query>" on, predicts the digits that follow it."""

    def __init__(self, passkey_len):
        super().__init__()
        self.passkey_len = passkey_len
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x):
        b, t = x.shape
        logits = torch.zeros(b, t, VOCAB_SIZE)
        rows = torch.arange(b)[:, None]
        key = x[rows, (x == PASSKEY).int().argmax(-1)[:, None] + 1 + torch.arange(self.passkey_len)]
        query_at = (x == QUERY).int().argmax(-1)[:, None]
        logits[rows, query_at + torch.arange(self.passkey_len), key] = 1.0
        return logits


class Constant(nn.Module):
    def forward(self, x):
        logits = torch.zeros(*x.shape, VOCAB_SIZE)
        logits[..., 0] = 1.0
        return logits


def test_passkey_accuracy_of_an_oracle_and_a_constant_model():
    oracle = RetrievingOracle(passkey_len=3).train()
    accuracy = passkey_accuracy(oracle, [8, 24, 64], generator=generator(), n=10, batch_size=4, passkey_len=3)
    assert accuracy == {8: 1.0, 24: 1.0, 64: 1.0}
    assert oracle.training  # mode restored
    assert passkey_accuracy(Constant(), [16, 32], generator=generator(), n=32) == {16: 0.0, 32: 0.0}


def test_passkey_accuracy_counts_a_sequence_right_only_when_every_digit_is():
    class OffByOneDigit(RetrievingOracle):
        def forward(self, x):
            logits = super().forward(x)
            query_at = (x == QUERY).int().argmax(-1)
            logits[torch.arange(len(x)), query_at + self.passkey_len - 1] = torch.eye(VOCAB_SIZE)[
                VOCAB_SIZE - 1
            ]
            return logits

    assert passkey_accuracy(OffByOneDigit(5), [20], generator=generator(), n=8) == {20: 0.0}


def test_passkey_accuracy_rejects_bad_models_and_n():
    with pytest.raises(ValueError, match="model must return logits"):
        passkey_accuracy(nn.Identity(), [16], generator=generator(), n=2)
    with pytest.raises(ValueError, match="n must be a positive int"):
        passkey_accuracy(Constant(), [16], generator=generator(), n=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        passkey_accuracy(Constant(), [16], generator=generator(), batch_size=0)


def test_attention_mass_softmax_is_one_and_softpick_at_most_one():
    g = generator()
    q, k, v = (torch.randn(2, 3, 20, 8, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    _, w = msp.naive_attention(q, k, v, normalizer="softmax", return_weights=True)
    torch.testing.assert_close(attention_mass_by_length(w), torch.ones(3, 20, dtype=torch.float64))
    _, w = msp.naive_attention(q, k, v, return_weights=True)
    mass = attention_mass_by_length(w)
    assert mass.shape == (3, 20) and torch.all((mass >= 0) & (mass <= 1))
    torch.testing.assert_close(mass, w.sum(-1).mean(0))


def test_softpick_mass_shrinks_with_context_when_distractors_score_below_zero():
    """Key 0 scores +2 for every query, every other key -3: mass(n keys) = (e^2 - 1) / (e^2 - 1 + (n - 1)(1 - e^-3))."""
    t, d = 32, 4
    q = torch.zeros(1, 1, t, d, dtype=torch.float64)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, t, d, dtype=torch.float64)
    k[..., 0] = -3.0 * math.sqrt(d)
    k[..., 0, 0] = 2.0 * math.sqrt(d)
    _, w = msp.naive_attention(q, k, k, return_weights=True)
    n = torch.arange(1, t + 1, dtype=torch.float64)
    expected = math.expm1(2) / (math.expm1(2) + (n - 1) * -math.expm1(-3) + 1e-6)
    torch.testing.assert_close(attention_mass_by_length(w)[0], expected)


def test_attention_mass_bad_input():
    with pytest.raises(TypeError, match="weights must be a torch.Tensor"):
        attention_mass_by_length([torch.ones(1, 1, 2, 2)])
    with pytest.raises(ValueError, match=r"weights must be a float tensor \[B, H, Tq, Tk\]"):
        attention_mass_by_length(torch.ones(2, 2))


# ---- Bigram-Backcopy ------------------------------------------------------------------------------


def cycle_task(num_tokens=4, triggers=(2,)):
    """A chain without randomness: token a is always followed by a + 1 (mod num_tokens)."""
    transition = torch.roll(torch.eye(num_tokens, dtype=torch.float64), 1, dims=1)
    return BigramBackcopy(transition, triggers)


def test_backcopy_by_hand_on_a_deterministic_chain():
    """0 -> 1 -> 2 (trigger: copy the 1 before it) -> 1 -> 2 -> 1 ...; 3 -> 0 -> 1 -> 2 -> 1 ..."""
    x, y = backcopy_batch(64, 8, generator=generator(), task=cycle_task())
    bos = 4  # the id after the 4 ordinary tokens
    starts = {0: [0, 1, 2, 1, 2, 1, 2, 1, 2], 1: [1, 2, 1, 2, 1, 2, 1, 2, 1], 3: [3, 0, 1, 2, 1, 2, 1, 2, 1]}
    assert set(x[:, 1].tolist()) == set(starts)  # s[1] is any non-trigger token, never the trigger 2
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        expected = [bos, *starts[row_x[1]]]
        assert row_x == expected[:8] and row_y == expected[1:9]


def test_backcopy_rule_holds_exactly_at_every_trigger():
    task = bigram_backcopy_task()
    x, y = backcopy_batch(256, 64, generator=generator(3))
    assert x.shape == y.shape == (256, 64) and x.dtype == y.dtype == torch.long
    assert torch.all(x[:, 0] == BACKCOPY_BOS) and not torch.any(x[:, 1:] == BACKCOPY_BOS)
    assert x.min() >= 0 and y.max() < BACKCOPY_TOKENS and BACKCOPY_VOCAB_SIZE == BACKCOPY_BOS + 1
    assert torch.equal(y[:, :-1], x[:, 1:])  # every next token is scored
    is_trigger = torch.isin(x, torch.tensor(task.triggers))
    assert not is_trigger[:, :2].any()  # neither BOS nor s[1] is a trigger
    b, t = is_trigger.nonzero(as_tuple=True)
    assert len(t) > 500  # the rule is tested at many triggers
    assert torch.equal(y[b, t], x[b, t - 1])
    assert not torch.isin(y[b, t], torch.tensor(task.triggers)).any()  # a copy is never a trigger


def test_backcopy_chain_follows_the_bigram_rows():
    """At non-trigger positions the next token's frequencies match the row, within 5 binomial sigmas."""
    task = bigram_backcopy_task()
    x, y = backcopy_batch(2000, 64, generator=generator(4))
    chain = ~torch.isin(x, torch.tensor(task.triggers))
    counts = torch.zeros(BACKCOPY_TOKENS + 1, BACKCOPY_TOKENS, dtype=torch.float64)
    counts.index_put_(
        (x[chain], y[chain]), torch.ones(int(chain.sum()), dtype=torch.float64), accumulate=True
    )
    counts = counts[:BACKCOPY_TOKENS]  # rows of the chain (BOS is followed by a uniform non-trigger)
    seen = counts.sum(-1) >= 1000
    assert seen.sum() > BACKCOPY_TOKENS // 2
    p = task.transition[seen]
    n = counts[seen].sum(-1, keepdim=True)
    assert torch.all((counts[seen] / n - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-3)


def test_backcopy_task_rows_and_triggers():
    task = bigram_backcopy_task()
    assert bigram_backcopy_task() is task  # one cached task for every run
    assert task.transition.shape == (BACKCOPY_TOKENS, BACKCOPY_TOKENS)
    torch.testing.assert_close(task.transition.sum(-1), torch.ones(BACKCOPY_TOKENS, dtype=torch.float64))
    values, vectors = np.linalg.eig(task.transition.numpy().T)  # the stationary law: eigenvalue 1
    stationary = np.abs(vectors[:, np.argmin(np.abs(values - 1))].real)
    assert task.triggers == tuple(np.argsort(-stationary)[:BACKCOPY_TRIGGERS].tolist())
    other = bigram_backcopy_task(seed=1)
    assert not torch.equal(other.transition, task.transition)


def test_backcopy_is_seeded():
    x, _ = backcopy_batch(4, 32, generator=generator(1))
    again, _ = backcopy_batch(4, 32, generator=generator(1))
    other, _ = backcopy_batch(4, 32, generator=generator(2))
    assert torch.equal(x, again) and not torch.equal(x, other)


def test_backcopy_roles_by_hand():
    x = torch.tensor([[4, 0, 1, 2, 1], [4, 3, 0, 2, 2]])
    dormant, active = backcopy_roles(x, (2,))
    assert active.tolist() == [[False, False, False, True, False], [False, False, False, True, True]]
    assert dormant.tolist() == [[False, True, True, False, True], [False, True, True, False, False]]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: bigram_backcopy_task(num_tokens=1), ValueError, "num_tokens must be an int >= 2"),
        (lambda: bigram_backcopy_task(num_triggers=64), ValueError, r"num_triggers must be an int in 1..63"),
        (lambda: bigram_backcopy_task(alpha=0.0), ValueError, "alpha must be > 0"),
        (lambda: backcopy_batch(2, 8, generator=generator(), task="bigram"), TypeError, "task must be"),
        (
            lambda: backcopy_batch(0, 8, generator=generator()),
            ValueError,
            "batch_size must be a positive int",
        ),
        (lambda: backcopy_batch(2, 8, generator=1), TypeError, "generator must be a torch.Generator"),
        (
            lambda: backcopy_roles(torch.zeros(2, 3), (1,)),
            TypeError,
            r"x must be a LongTensor \[batch, seq\]",
        ),
    ],
)
def test_backcopy_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
