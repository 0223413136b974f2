"""Synthetic long-context tasks, generated on the fly from a torch.Generator, and what to measure.

The paper's admitted weakness (arXiv 2504.20966): in long contexts softpick's scores are
underscaled, which hurts retrieval. Two tasks probe retrieval, one helper shows the weights.

Token table (``TOKENS[i]`` is the text of token i, ``VOCAB_SIZE`` = 54):

    0-9     the digits "0" .. "9" (passkey digits, associative-recall values)
    10      "<passkey>"   announces the passkey ("the pass key is")
    11      "<query>"     asks for it ("what is the pass key?") or for a key's value
    12-37   the keys "a" .. "z" of associative recall
    38-53   16 filler words ("the", "grass", "is", "green", ...), drawn uniformly at random

Both tasks return (x, y), LongTensors [B, seq_len]: x is the whole sequence, answer included
(teacher forcing), and y[t] = x[t + 1] where x[t + 1] is an answer token, -100 everywhere else,
so ``cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)`` trains retrieval only.

A third task makes attention sinks form in minutes: Bigram-Backcopy (Guo et al., arXiv 2410.13835,
"Active-Dormant Attention Heads"), with its own vocabulary (``BACKCOPY_TOKENS`` ordinary tokens and
``BACKCOPY_BOS``) and every next token scored; see ``backcopy_batch``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .model import IGNORE_INDEX, evaluating
from .settings import progress_disabled

DIGITS = tuple(range(10))
PASSKEY = 10
QUERY = 11
KEYS = tuple(range(12, 38))
FILLERS = tuple(range(38, 54))
VOCAB_SIZE = 54
TOKENS = (
    [str(d) for d in DIGITS]
    + ["<passkey>", "<query>"]
    + [chr(ord("a") + i) for i in range(len(KEYS))]
    + "the grass is green . sky blue sun yellow here we go there and back again".split()
)


def decode(ids: Tensor) -> str:
    """The text of a 1-D sequence of token ids, tokens separated by spaces."""
    return " ".join(TOKENS[i] for i in ids.tolist())


def _check_sizes(batch_size: object, seq_len: object, generator: object) -> None:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _fillers(batch_size: int, length: int, generator: torch.Generator) -> Tensor:
    return FILLERS[0] + torch.randint(len(FILLERS), (batch_size, length), generator=generator)


def _digits(batch_size: int, length: int, generator: torch.Generator) -> Tensor:
    return torch.randint(len(DIGITS), (batch_size, length), generator=generator)


def _distinct(batch_size: int, population: int, k: int, generator: torch.Generator) -> Tensor:
    """[batch_size, k]: per row, k distinct integers drawn uniformly from range(population)."""
    return torch.rand(batch_size, population, generator=generator).argsort(-1)[:, :k]


def _targets(x: Tensor, first_answer: int) -> Tensor:
    """y with y[t] = x[t + 1] for the answer tokens x[first_answer:], -100 elsewhere."""
    y = torch.full_like(x, IGNORE_INDEX)
    y[:, first_answer - 1 : -1] = x[:, first_answer:]
    return y


def passkey_batch(
    batch_size: int, seq_len: int, *, generator: torch.Generator, passkey_len: int = 5
) -> tuple[Tensor, Tensor]:
    """Passkey retrieval: filler words, "<passkey> d1 .. dk" at a random depth, "<query> d1 .. dk" at the end.

        x:  the grass <passkey> 4 0 7 1 9 sky blue ... back <query> 4  0  7  1  9
        y:  -100 everywhere except under "<query> 4 0 7 1", where it is the next digit

    The passkey block starts at a uniformly random position of the filler context, independently
    per sequence. Needs seq_len >= 2 * (passkey_len + 1).
    """
    _check_sizes(batch_size, seq_len, generator)
    if not isinstance(passkey_len, int) or passkey_len < 1:
        raise ValueError(f"passkey_len must be a positive int, got {passkey_len!r}")
    block = passkey_len + 1
    if seq_len < 2 * block:
        raise ValueError(
            f"seq_len must be >= {2 * block} for a {passkey_len}-digit passkey (stated once, asked once), got {seq_len}"
        )
    context = seq_len - block
    key = _digits(batch_size, passkey_len, generator)
    x = _fillers(batch_size, seq_len, generator)
    start = torch.randint(context - block + 1, (batch_size, 1), generator=generator)
    rows = torch.arange(batch_size)[:, None]
    x[rows, start + torch.arange(block)] = torch.cat((torch.full((batch_size, 1), PASSKEY), key), dim=1)
    x[:, context] = QUERY
    x[:, context + 1 :] = key
    return x, _targets(x, context + 1)


def associative_recall_batch(
    batch_size: int, seq_len: int, *, generator: torch.Generator, num_pairs: int = 8
) -> tuple[Tensor, Tensor]:
    """Associative recall: key-value bigrams "k v" scattered in filler, then "<query> k" and its value.

        x:  the c 3 grass is q 8 green f 0 ... <query> q  8
        y:  -100 everywhere except under the queried key, where it is the key's value

    Keys are ``num_pairs`` distinct letters, values random digits, the query one of the pairs'
    keys chosen uniformly; the pairs sit at random non-overlapping positions of the context.
    Needs 1 <= num_pairs <= 26 and seq_len >= 2 * num_pairs + 3.
    """
    _check_sizes(batch_size, seq_len, generator)
    if not isinstance(num_pairs, int) or not 1 <= num_pairs <= len(KEYS):
        raise ValueError(f"num_pairs must be an int in 1..{len(KEYS)}, got {num_pairs!r}")
    if seq_len < 2 * num_pairs + 3:
        raise ValueError(
            f"seq_len must be >= {2 * num_pairs + 3} for {num_pairs} pairs and the query, got {seq_len}"
        )
    context = seq_len - 3
    keys = KEYS[0] + _distinct(batch_size, len(KEYS), num_pairs, generator)
    values = _digits(batch_size, num_pairs, generator)
    # Pair i starts at r_i + i, with r sorted distinct in [0, context - num_pairs): gaps >= 2, last start <= context - 2.
    starts = _distinct(batch_size, context - num_pairs, num_pairs, generator).sort(-1).values + torch.arange(
        num_pairs
    )
    x = _fillers(batch_size, seq_len, generator)
    rows = torch.arange(batch_size)[:, None]
    x[rows, starts] = keys
    x[rows, starts + 1] = values
    asked = torch.randint(num_pairs, (batch_size, 1), generator=generator)
    x[:, context] = QUERY
    x[:, context + 1] = keys.gather(1, asked)[:, 0]
    x[:, context + 2] = values.gather(1, asked)[:, 0]
    return x, _targets(x, context + 2)


def exact_match(logits: Tensor, y: Tensor) -> Tensor:
    """bool [B]: True for each sequence whose greedy prediction ``logits.argmax(-1)`` equals ``y`` at every
    position ``y`` scores (y != -100). ``logits`` [B, T, vocab] are the model's for x, so logits[:, t]
    predicts y[:, t] = x[:, t + 1]: no further shift."""
    scored = y != IGNORE_INDEX
    return ((logits.argmax(-1) == y) | ~scored).all(-1)


@torch.no_grad()
def passkey_accuracy(
    model: nn.Module,
    seq_lens: list[int],
    *,
    generator: torch.Generator,
    n: int = 64,
    batch_size: int = 16,
    passkey_len: int = 5,
) -> dict[int, float]:
    """{seq_len: exact-match accuracy} of ``model`` on ``n`` fresh passkey sequences per length.

    ``model(x)`` must return logits [B, T, vocab]. A sequence counts as right when the greedy
    prediction (argmax) at every answer position equals the passkey digit (``exact_match``; teacher
    forcing: the model sees the true earlier digits). Runs in eval mode, on the device of model's parameters,
    and puts the model back in its mode afterwards.
    """
    for name, value in (("n", n), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    accuracy = {}
    progress = tqdm(total=len(seq_lens) * n, desc="passkey", unit="seq", disable=progress_disabled())
    with evaluating(model) as device, progress as bar:
        for seq_len in seq_lens:
            correct = 0
            for done in range(0, n, batch_size):
                x, y = passkey_batch(
                    min(batch_size, n - done), seq_len, generator=generator, passkey_len=passkey_len
                )
                logits = model(x.to(device))
                if logits.dim() != 3 or logits.shape[:2] != x.shape:
                    raise ValueError(
                        f"model must return logits [B, T, vocab], got shape {tuple(logits.shape)}"
                    )
                correct += int(exact_match(logits.cpu(), y).sum())
                bar.update(x.shape[0])
            accuracy[seq_len] = correct / n
    return accuracy


def attention_mass_by_length(weights: Tensor) -> Tensor:
    """Per head and query position [H, Tq]: the total weight of the row, averaged over the batch.

    ``weights`` [B, H, Tq, Tk] as returned by ``naive_attention(..., return_weights=True)`` or
    captured from a model. Under a causal mask with Tq = Tk, query i sees i + 1 keys, so column i
    is the mass as a function of context length. Softmax rows sum to 1; softpick rows to at most
    1, and the sum shrinks when the many keys scored below zero fill the denominator
    sum_j |exp(x_j) - 1|: the underscaling the paper admits for long contexts.
    """
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights must be a torch.Tensor [B, H, Tq, Tk], got {type(weights).__name__}")
    if weights.dim() != 4 or not weights.is_floating_point():
        raise ValueError(
            f"weights must be a float tensor [B, H, Tq, Tk], got {weights.dtype} of shape {tuple(weights.shape)}"
        )
    return weights.detach().double().sum(-1).mean(0)


# ---- Bigram-Backcopy: a task that grows attention sinks ---------------------------------------------

BACKCOPY_TOKENS = 64  # ordinary tokens 0 .. 63
BACKCOPY_BOS = BACKCOPY_TOKENS  # token 64 starts every sequence
BACKCOPY_VOCAB_SIZE = BACKCOPY_TOKENS + 1
BACKCOPY_TRIGGERS = 3
BACKCOPY_ALPHA = 0.2  # Dirichlet concentration of each bigram row: small = peaked rows
BACKCOPY_SEED = 0  # the one chain every backcopy run trains and is analysed on
_STATIONARY_ITERATIONS = 1000


@dataclass(frozen=True)
class BigramBackcopy:
    """One instance of the task: the bigram chain and its trigger tokens.

    ``transition[a, b]`` is P(next = b | current = a) over the ordinary tokens (float64, rows sum
    to 1); ``triggers`` are the ``num_triggers`` tokens the chain visits most often (largest
    stationary probability), in decreasing order of frequency.
    """

    transition: Tensor
    triggers: tuple[int, ...]


@functools.cache
def bigram_backcopy_task(
    num_tokens: int = BACKCOPY_TOKENS,
    num_triggers: int = BACKCOPY_TRIGGERS,
    alpha: float = BACKCOPY_ALPHA,
    seed: int = BACKCOPY_SEED,
) -> BigramBackcopy:
    """The task drawn from ``seed``: each bigram row ~ Dirichlet(alpha), triggers the most frequent tokens.

    The default arguments are the task ``backcopy_batch`` and the ``backcopy`` training preset use.
    """
    if not isinstance(num_tokens, int) or num_tokens < 2:
        raise ValueError(f"num_tokens must be an int >= 2, got {num_tokens!r}")
    if not isinstance(num_triggers, int) or not 1 <= num_triggers < num_tokens:
        raise ValueError(f"num_triggers must be an int in 1..{num_tokens - 1}, got {num_triggers!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    rows = np.random.default_rng(seed).dirichlet(np.full(num_tokens, float(alpha)), size=num_tokens)
    transition = torch.from_numpy(rows)
    transition = transition / transition.sum(-1, keepdim=True)
    stationary = torch.full((num_tokens,), 1.0 / num_tokens, dtype=torch.float64)
    for _ in range(_STATIONARY_ITERATIONS):  # every entry of the rows is > 0: the power iteration converges
        stationary = stationary @ transition
    triggers = tuple(stationary.argsort(descending=True)[:num_triggers].tolist())
    return BigramBackcopy(transition, triggers)


def backcopy_batch(
    batch_size: int, seq_len: int, *, generator: torch.Generator, task: BigramBackcopy | None = None
) -> tuple[Tensor, Tensor]:
    """Bigram-Backcopy sequences: BOS, then a bigram chain, except that a trigger's successor copies back.

        s[0] = BOS, s[1] uniform over the non-trigger tokens, and for t >= 1
        s[t + 1] = s[t - 1]                    if s[t] is a trigger   (copy the token before it)
        s[t + 1] ~ transition[s[t]]            otherwise              (follow the chain)

    x = s[:seq_len] and y = s[1:seq_len + 1] (every next token is scored), LongTensors
    [batch_size, seq_len]. Since s[1] is no trigger, the token a trigger copies is never BOS nor a
    trigger. The copied positions are perfectly predictable by a head that looks one token back;
    at every other position the best a head can do is nothing, which softmax cannot express.
    ``task`` defaults to ``bigram_backcopy_task()``.
    """
    _check_sizes(batch_size, seq_len, generator)
    task = bigram_backcopy_task() if task is None else task
    if not isinstance(task, BigramBackcopy):
        raise TypeError(f"task must be a BigramBackcopy, got {type(task).__name__}")
    num_tokens = task.transition.shape[0]
    is_trigger = torch.zeros(num_tokens, dtype=torch.bool)
    is_trigger[list(task.triggers)] = True
    others = (~is_trigger).nonzero()[:, 0]
    s = torch.empty(batch_size, seq_len + 1, dtype=torch.long)
    s[:, 0] = num_tokens  # BOS: the id after the ordinary tokens
    s[:, 1] = others[torch.randint(len(others), (batch_size,), generator=generator)]
    # Inverse-CDF sampling of the chain: u < cdf[a, b] first at b ~ transition[a] (no per-step multinomial).
    cdf = task.transition.cumsum(-1)
    u = torch.rand(seq_len, batch_size, 1, dtype=cdf.dtype, generator=generator) * cdf[:, -1].min()
    for t in range(1, seq_len):
        chain = torch.searchsorted(cdf[s[:, t]], u[t], right=True)[:, 0]
        s[:, t + 1] = torch.where(is_trigger[s[:, t]], s[:, t - 1], chain)
    return s[:, :-1], s[:, 1:]


def backcopy_roles(x: Tensor, triggers: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """(dormant, active), bool [B, T]: the query positions holding a non-trigger token, and a trigger.

    Position 0 (BOS) is in neither: it only sees itself. At an active position a head should copy
    the previous token; at a dormant one it has nothing to do.
    """
    if not isinstance(x, Tensor) or x.dim() != 2 or x.dtype != torch.long:
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a LongTensor [batch, seq], got {got}")
    active = torch.isin(x, torch.tensor(list(triggers), dtype=torch.long, device=x.device))
    active[:, 0] = False
    dormant = ~active
    dormant[:, 0] = False
    return dormant, active


SYNTHETIC_TASKS = {  # training task name -> (batch maker, vocabulary size)
    "passkey": (passkey_batch, VOCAB_SIZE),
    "backcopy": (backcopy_batch, BACKCOPY_VOCAB_SIZE),
}
