"""A small Llama-style decoder whose attention normalizer is chosen by name.

Pre-norm blocks x + Attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); rotary position embeddings
(RoPE) on q and k; untied input embedding and output head; optional grouped-query attention
(``n_kv_heads`` < ``n_heads``). ``attention`` is a name in ``NORMALIZERS`` ("softmax", "softpick",
"softmax1", "sink", "scaled_softpick", or one added with ``register_normalizer``); its
``NormalizerSpec`` says everything a layer needs: the reference function, the scalars learned per
head (the sink logit s_h; scaled softpick's query scale s_h, which multiplies query i by
s_h * log(i + 2)) and which fused backend computes it.

Backends (``backend="auto"`` picks): "naive" (``naive_attention``, materialises the weights; the
only one that can capture them and the one for every normalizer without a fused kernel), "sdpa"
(torch's fused softmax attention) and "flash" (the Triton softpick kernel; auto uses it on CUDA).
A fused backend computes the normalizers whose spec names it.

    model = Transformer(ModelConfig(vocab_size=84, attention="softpick"))
    logits = model(idx)                                  # idx [B, T] -> [B, T, vocab]
    logits, capture = model(idx, capture=True)           # capture.attn[l]: [B, H, T, T]
                                                         # capture.hidden[l]: [B, T, d_model]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import naive_attention, repeat_kv
from .normalizers import (
    NORMALIZERS,
    QUERY_SCALE,
    SCALED_SOFTPICK_INIT,  # noqa: F401  (kept importable from here)
    NormalizerSpec,
    log_position_scale,
)

BACKENDS = ("auto", "naive", "sdpa", "flash")
IGNORE_INDEX = -100  # a target that lm_loss does not score (synthetic tasks score their answers only)


def attention_names() -> list[str]:
    """Every value ``ModelConfig.attention`` accepts: the registered normalizers."""
    return sorted(NORMALIZERS)


def __getattr__(name: str) -> tuple[str, ...]:
    """Views of the registry kept under their old names: the normalizers that learn something per head
    (PARAMETRIC_ATTENTIONS) and those the Triton kernel computes (KERNEL_ATTENTIONS)."""
    if name == "PARAMETRIC_ATTENTIONS":
        return tuple(n for n, spec in sorted(NORMALIZERS.items()) if spec.learned_per_head)
    if name == "KERNEL_ATTENTIONS":
        return tuple(n for n, spec in sorted(NORMALIZERS.items()) if spec.fused == "flash")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class ModelConfig:
    vocab_size: int
    seq_len: int = 256  # the training context; RoPE itself works at any length
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: as many as n_heads (no GQA)
    d_model: int = 128
    ffn_hidden: int | None = None  # None: 8/3 * d_model rounded up to a multiple of 64 (a quantization group)
    attention: str = "softpick"
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    bos_id: int | None = None  # the token every training window started with (None: no BOS, e.g. passkey)

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "n_layers", "n_heads", "d_model"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.d_model % self.n_heads != 0 or (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be n_heads ({self.n_heads}) times an even head_dim "
                "(RoPE rotates pairs)"
            )
        if self.ffn_hidden is None:
            self.ffn_hidden = 64 * math.ceil(8 * self.d_model / 3 / 64)
        if self.attention not in attention_names():
            raise ValueError(f"attention must be one of {attention_names()}, got {self.attention!r}")
        if self.bos_id is not None and (
            isinstance(self.bos_id, bool)
            or not isinstance(self.bos_id, int)
            or not 0 <= self.bos_id < self.vocab_size
        ):
            raise ValueError(
                f"bos_id must be None or a token id in [0, {self.vocab_size}), got {self.bos_id!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass
class Capture:
    """What ``model(idx, capture=True)`` records, one entry per layer."""

    attn: list[Tensor]  # attention weights [B, H, T, T]
    hidden: list[Tensor]  # residual stream after the block [B, T, d_model]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rope_angles(seq_len: int, head_dim: int, base: float, device=None) -> tuple[Tensor, Tensor]:
    """cos and sin of position * base^(-2k / head_dim), each [seq_len, head_dim / 2], fp32."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.arange(seq_len, device=device, dtype=torch.float32)[:, None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the pairs (x[..., k], x[..., k + D/2]) of x [B, H, T, D] by the position's angles."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    """Multi-head (or grouped-query) attention whose normalizer is ``NORMALIZERS[config.attention]``;
    each scalar that normalizer learns per head is a parameter [n_heads] of this name."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.spec: NormalizerSpec = NORMALIZERS[c.attention]
        self.wq = nn.Linear(c.d_model, c.n_heads * c.head_dim, bias=False)
        self.wk = nn.Linear(c.d_model, c.n_kv_heads * c.head_dim, bias=False)
        self.wv = nn.Linear(c.d_model, c.n_kv_heads * c.head_dim, bias=False)
        self.wo = nn.Linear(c.n_heads * c.head_dim, c.d_model, bias=False)
        inits = dict(self.spec.head_parameters)
        if self.spec.query_scale_init is not None:
            inits[QUERY_SCALE] = self.spec.query_scale_init
        for name, init in inits.items():
            self.register_parameter(name, nn.Parameter(torch.full((c.n_heads,), float(init))))

    def normalizer(self):
        """The ``fn(scores, mask)`` naive_attention uses for this layer, head parameters bound."""
        per_head = {name: getattr(self, name)[:, None, None] for name in self.spec.head_parameters}
        return functools.partial(self.spec.fn, **per_head) if per_head else self.spec.fn

    def backend(self, requested: str, capture: bool, device: torch.device) -> str:
        fused = self.spec.fused
        if requested == "auto":
            if capture or fused is None or (fused == "flash" and device.type != "cuda"):
                return "naive"
            return fused
        if capture and requested != "naive":
            raise ValueError(
                f"capture=True needs the weights, which only backend='naive' forms, got {requested!r}"
            )
        if requested != "naive" and requested != fused:
            computes = [name for name, spec in sorted(NORMALIZERS.items()) if spec.fused == requested]
            raise ValueError(
                f"backend {requested!r} computes only {', '.join(computes)} attention, not {self.config.attention!r}"
            )
        return requested

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, backend: str, capture: bool):
        b, t, _ = x.shape
        c = self.config
        q = self.wq(x).view(b, t, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, t, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, t, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.spec.query_scale_init is not None:  # e.g. scaled_softpick: q_i * s_h * log(i + 2)
            q = q * log_position_scale(self.query_scale, t).to(q.dtype)
        weights = None
        backend = self.backend(backend, capture, x.device)
        if backend == "naive":
            result = naive_attention(q, k, v, normalizer=self.normalizer(), return_weights=capture)
            out, weights = result if capture else (result, None)
        elif backend == "sdpa":
            groups = c.n_heads // c.n_kv_heads
            out = F.scaled_dot_product_attention(
                q, repeat_kv(k, groups), repeat_kv(v, groups), is_causal=True
            )
        else:
            from minisoftpick.kernels.flash_softpick import flash_softpick_attention

            out = flash_softpick_attention(q, k, v, causal=True)
        out = self.wo(out.transpose(1, 2).reshape(b, t, c.n_heads * c.head_dim))
        return out, weights


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.w3 = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.w2 = nn.Linear(config.ffn_hidden, config.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = FeedForward(config)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, backend: str, capture: bool):
        attn_out, weights = self.attn(self.attn_norm(x), cos, sin, backend, capture)
        x = x + attn_out
        return x + self.ffn(self.ffn_norm(x)), weights


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual branches shrink with depth
            if name.endswith(("attn.wo.weight", "ffn.w2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, *, capture: bool = False, backend: str = "auto"):
        """Logits [B, T, vocab] for token ids idx [B, T]; with ``capture`` also a ``Capture``."""
        if not isinstance(idx, Tensor) or idx.dtype != torch.long or idx.dim() != 2:
            got = (
                f"{idx.dtype} of shape {tuple(idx.shape)}" if isinstance(idx, Tensor) else type(idx).__name__
            )
            raise TypeError(f"idx must be a LongTensor [batch, seq], got {got}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        # An id out of range would be an obscure IndexError on the CPU. On a GPU the embedding's own
        # device assert reports it, and reading the range back here would stall every training step.
        if idx.numel() and idx.device.type == "cpu":
            low, high = (int(t) for t in torch.aminmax(idx))
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"idx must hold token ids in [0, {self.config.vocab_size}), got {low}..{high}"
                )
        cos, sin = rope_angles(idx.shape[1], self.config.head_dim, self.config.rope_base, idx.device)
        x = self.embed(idx)
        recorded = Capture(attn=[], hidden=[])
        for block in self.blocks:
            x, weights = block(x, cos, sin, backend, capture)
            if capture:
                recorded.attn.append(weights)
                recorded.hidden.append(x)
        logits = self.lm_head(self.norm(x))
        return (logits, recorded) if capture else logits


@contextmanager
def evaluating(model: nn.Module) -> Iterator[torch.device]:
    """``with evaluating(model) as device:`` runs the block with ``model`` in eval mode and gives the
    device of its parameters; the model's own mode comes back afterwards, also after an exception."""
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters(), torch.empty(0)).device
    finally:
        model.train(was_training)


def lm_loss(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits [B, T, V] against targets [B, T]; targets of ``IGNORE_INDEX`` are not scored."""
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
    )


@torch.no_grad()
def generate(
    model: Transformer, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, generator=None
) -> Tensor:
    """Append ``max_new_tokens`` sampled tokens to idx [B, T], seeing at most ``seq_len`` tokens back.

    idx holds text tokens only. A model trained with BOS (``config.bos_id``) sees what it saw in
    training: BOS, then the last ``seq_len - 1`` tokens; BOS is not part of the returned ids.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    bos = model.config.bos_id
    if bos is not None and bool((idx == bos).any()):
        raise ValueError(f"idx must hold text tokens only: generate puts BOS (id {bos}) in front itself")
    context = model.config.seq_len - (bos is not None)
    for _ in range(max_new_tokens):
        window = idx[:, -context:]
        if bos is not None:
            window = torch.cat((torch.full_like(window[:, :1], bos), window), dim=1)
        logits = model(window)[:, -1].float()
        probs = torch.softmax(logits / temperature, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
    return idx
