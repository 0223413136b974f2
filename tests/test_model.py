"""The Llama-style model: shapes, capture, causality for every normalizer, every backend the same function."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import minisoftpick as msp
from minisoftpick import model as model_module
from minisoftpick.attention import repeat_kv
from minisoftpick.data import DATA_DIR, load_tokens
from minisoftpick.model import (
    Attention,
    ModelConfig,
    Transformer,
    apply_rope,
    attention_names,
    generate,
    rope_angles,
)
from minisoftpick.normalizers import NORMALIZERS
from minisoftpick.train import evaluate, load_checkpoint, read_checkpoint

ATTENTIONS = attention_names()
VOCAB = 23


def tiny(attention="softpick", dtype=torch.float64, seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(
        vocab_size=VOCAB, seq_len=16, n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, attention=attention
    )
    return Transformer(ModelConfig(**{**config, **overrides})).to(dtype)


def tokens(b=2, t=12, seed=1):
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def test_every_name_in_the_registry_is_an_attention():
    assert {"softmax", "softpick", "softmax1", "sink", "scaled_softpick"} <= set(ATTENTIONS)
    assert set(NORMALIZERS) <= set(ATTENTIONS)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_shapes_and_capture(attention):
    model = tiny(attention)
    idx = tokens()
    logits = model(idx)
    assert logits.shape == (2, 12, VOCAB)
    captured_logits, capture = model(idx, capture=True)
    torch.testing.assert_close(captured_logits, logits)
    assert len(capture.attn) == len(capture.hidden) == 2
    assert all(w.shape == (2, 4, 12, 12) for w in capture.attn)
    assert all(h.shape == (2, 12, 32) for h in capture.hidden)
    future = torch.triu(torch.ones(12, 12, dtype=torch.bool), diagonal=1)
    assert all((w[..., future] == 0).all() for w in capture.attn)
    assert all((w.sum(-1) <= 1 + 1e-9).all() for w in capture.attn)


def test_capture_hidden_is_the_residual_stream():
    model = tiny()
    idx = tokens()
    _, capture = model(idx, capture=True)
    torch.testing.assert_close(model.lm_head(model.norm(capture.hidden[-1])), model(idx))


@pytest.mark.parametrize(
    ("attention", "backend"),
    [(a, backend) for a in ATTENTIONS for backend in ("auto", "naive")] + [("softmax", "sdpa")],
)
def test_changing_a_future_token_never_changes_earlier_logits(attention, backend):
    model = tiny(attention)
    idx = tokens(t=10)
    changed = idx.clone()
    changed[:, 6] = (idx[:, 6] + 1) % VOCAB
    before, after = model(idx, backend=backend), model(changed, backend=backend)
    torch.testing.assert_close(after[:, :6], before[:, :6], rtol=0, atol=1e-12)
    assert (after[:, 6:] - before[:, 6:]).abs().amax() > 1e-6  # the change does reach later positions


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_sdpa_and_naive_compute_the_same_softmax_model(n_kv_heads):
    model = tiny("softmax", n_kv_heads=n_kv_heads)
    idx = tokens()
    torch.testing.assert_close(
        model(idx, backend="sdpa"), model(idx, backend="naive"), rtol=1e-10, atol=1e-10
    )


@pytest.mark.skipif(
    importlib.util.find_spec("minisoftpick.kernels.flash_softpick") is None,
    reason="the Triton kernel is not written yet",
)
@pytest.mark.parametrize("attention", ["softpick", "scaled_softpick"])
def test_flash_kernel_computes_the_same_softpick_model(attention):
    if not torch.cuda.is_available() and not msp.kernels.interpreting():
        pytest.skip("needs a GPU or the Triton interpreter")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny(attention, dtype=torch.float32, n_heads=2, n_kv_heads=1).to(device)
    idx = tokens(b=1, t=10).to(device)
    flash = model(idx, backend="flash")
    naive = model(idx, backend="naive")
    torch.testing.assert_close(flash, naive, rtol=1e-4, atol=1e-4)
    flash.square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    naive.square().mean().backward()
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-3, atol=1e-5)


def layer_inputs(attention, t=6):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, n_heads=2, d_model=16, attention=attention)
    layer = Attention(config).double()
    x = torch.randn(1, t, 16, dtype=torch.float64)
    cos, sin = rope_angles(t, config.head_dim, config.rope_base)
    heads = lambda w: (x @ w.weight.T).view(1, t, 2, 8).transpose(1, 2)  # noqa: E731
    q, k = apply_rope(heads(layer.wq), cos, sin), apply_rope(heads(layer.wk), cos, sin)
    return layer, x, cos, sin, q, k


def test_sink_attention_is_softmax_with_an_extra_logit():
    layer, x, cos, sin, q, k = layer_inputs("sink")
    with torch.no_grad():
        layer.sink.copy_(torch.tensor([0.5, -1.0]))
    _, weights = layer(x, cos, sin, "naive", True)
    scores = (q @ k.mT) / 8**0.5
    scores = scores.masked_fill(~msp.causal_mask(6, 6), float("-inf"))
    with_sink = torch.cat([scores, layer.sink.detach().view(1, 2, 1, 1).expand(1, 2, 6, 1)], dim=-1)
    torch.testing.assert_close(weights, torch.softmax(with_sink, -1)[..., :-1])


def test_scaled_softpick_multiplies_queries_by_scale_times_log_position():
    layer, x, cos, sin, q, k = layer_inputs("scaled_softpick")
    torch.testing.assert_close(layer.query_scale.detach(), torch.full((2,), 0.3, dtype=torch.float64))
    _, weights = layer(x, cos, sin, "naive", True)
    factor = 0.3 * torch.log(torch.arange(6, dtype=torch.float64) + 2)
    scores = (q * factor[:, None]) @ k.mT / 8**0.5
    torch.testing.assert_close(weights, msp.softpick(scores, mask=msp.causal_mask(6, 6)))


@pytest.mark.parametrize(("attention", "parameter"), [("sink", "sink"), ("scaled_softpick", "query_scale")])
def test_per_head_parameters_learn(attention, parameter):
    model = tiny(attention)
    model(tokens()).logsumexp(-1).mean().backward()
    for block in model.blocks:
        grad = getattr(block.attn, parameter).grad
        assert grad.shape == (4,) and (grad != 0).all()


@pytest.fixture
def registered():
    """Names registered by a test are removed from the registry after it."""
    before = set(NORMALIZERS)
    yield
    for name in set(NORMALIZERS) - before:
        del NORMALIZERS[name]


def relu_attention(scores, mask):
    return torch.relu(scores).masked_fill(~mask, 0.0) / scores.shape[-1]


def tempered_softpick(scores, mask, temperature):
    """softpick(scores / t_h): a normalizer that learns one scalar per head."""
    return msp.softpick(scores / temperature, mask=mask)


def train_a_few_steps(model, steps=8):
    """AdamW on one fixed batch of random tokens; the losses of every step."""
    idx = tokens(b=4, t=16, seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("fn", "kwargs"), [(relu_attention, {}), (tempered_softpick, {"head_parameters": {"temperature": 2.0}})]
)
def test_one_registration_makes_a_trainable_attention(registered, fn, kwargs):
    msp.register_normalizer("mine_test", **kwargs)(fn)
    assert "mine_test" in attention_names()
    model = tiny("mine_test", dtype=torch.float32)
    for name, init in kwargs.get("head_parameters", {}).items():
        torch.testing.assert_close(getattr(model.blocks[0].attn, name).detach(), torch.full((4,), init))
    _, capture = model(tokens(), capture=True)
    assert (capture.attn[0] >= 0).all() and (capture.attn[0] == 0).any()
    losses = train_a_few_steps(model)
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0] - 0.1
    for name in kwargs.get("head_parameters", {}):  # the per-head parameter learned too
        assert not torch.equal(getattr(model.blocks[0].attn, name).detach(), torch.full((4,), 2.0))


def test_the_registry_views_kept_under_their_old_names(registered):
    assert model_module.PARAMETRIC_ATTENTIONS == ("scaled_softpick", "sink")
    assert model_module.KERNEL_ATTENTIONS == ("scaled_softpick", "softpick")
    msp.register_normalizer("mine_test", head_parameters={"temperature": 1.0}, fused="flash")(
        tempered_softpick
    )
    assert "mine_test" in model_module.PARAMETRIC_ATTENTIONS and "mine_test" in model_module.KERNEL_ATTENTIONS


RESULTS = Path(__file__).parents[1] / "results"
STUDY = RESULTS / "study"  # the GPU study's seed-0 weights, trained with BOS (notebooks 07-10)
COMMITTED = sorted([*STUDY.glob("*.pt"), *(RESULTS / "gpu_runs").glob("*.pt")])


def test_the_study_checkpoints_are_committed():
    assert {p.stem for p in STUDY.glob("*.pt")} == {
        f"study-{a}" for a in ("softmax", "softpick", "sink", "scaled_softpick")
    }


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_checkpoints_keep_their_parameter_names_and_shapes(path):
    state = read_checkpoint(path)
    fresh = Transformer(ModelConfig(**state["model_config"])).state_dict()
    assert {n: t.shape for n, t in fresh.items()} == {n: t.shape for n, t in state["model"].items()}
    load_checkpoint(path)  # load_state_dict is strict


@pytest.mark.parametrize(("attention", "parameter"), [("sink", "sink"), ("scaled_softpick", "query_scale")])
def test_committed_per_head_parameters_are_used(attention, parameter):
    """The learned sink logits and query scales of the committed runs reach the logits."""
    model = load_checkpoint(STUDY / f"study-{attention}.pt")
    idx = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(idx)
        getattr(model.blocks[0].attn, parameter).add_(0.5)
        assert (model(idx) - before).abs().amax() > 1e-3


@pytest.mark.skipif(not (DATA_DIR / "meta.json").exists(), reason="run `make data` first")
def test_a_committed_checkpoint_reproduces_its_logged_validation_loss():
    """Two batches of four BOS-first windows (the run used 40 of 32): the logged loss within that sample's noise."""
    logged = [
        json.loads(line)
        for line in (STUDY / "logs" / "study-scaled_softpick-s0.jsonl").read_text().splitlines()
    ]
    final = [row["val_loss"] for row in logged if row["val_loss"] is not None][-1]
    model = load_checkpoint(STUDY / "study-scaled_softpick.pt")
    assert model.config.bos_id is not None  # evaluate puts BOS in front of every window, as in training
    with torch.no_grad():
        loss = evaluate(model, load_tokens("val"), batch_size=4, max_batches=2)
    assert abs(loss - final) < 0.15


def test_gqa_shares_key_value_heads():
    model = tiny(n_kv_heads=1)
    assert model.blocks[0].attn.wk.weight.shape == (8, 32)  # one key head of head_dim 8
    assert repeat_kv(torch.zeros(1, 1, 3, 8), 4).shape == (1, 4, 3, 8)


def test_untied_embeddings_and_default_ffn_width():
    model = tiny()
    assert model.embed.weight.data_ptr() != model.lm_head.weight.data_ptr()
    assert model.config.ffn_hidden % 64 == 0 and model.config.ffn_hidden >= 8 * 32 / 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(n_heads=4, n_kv_heads=3), "multiple of n_kv_heads"),
        (dict(d_model=36, n_heads=4), "even head_dim"),
        (dict(attention="sigmoid"), "attention must be one of"),
        (dict(n_layers=0), "n_layers"),
    ],
)
def test_bad_config_is_rejected(overrides, message):
    config = dict(vocab_size=VOCAB, d_model=32, n_heads=4)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**config, **overrides})


def test_bad_input_and_backend_are_rejected():
    model = tiny()
    with pytest.raises(TypeError, match="idx must be a LongTensor"):
        model(tokens().float())
    with pytest.raises(TypeError, match="idx must be a LongTensor"):
        model(tokens()[0])
    for bad_id, match in (
        (VOCAB, r"idx must hold token ids in \[0, 23\), got \d+\.\.23"),
        (-1, r"got -1\.\."),
    ):
        idx = tokens()
        idx[1, 3] = bad_id
        with pytest.raises(ValueError, match=match):
            model(idx)
    with pytest.raises(ValueError, match="backend must be one of"):
        model(tokens(), backend="fast")
    with pytest.raises(ValueError, match="backend 'sdpa' computes only softmax attention, not 'softpick'"):
        model(tokens(), backend="sdpa")
    with pytest.raises(ValueError, match="capture=True"):
        tiny("softmax")(tokens(), capture=True, backend="sdpa")
    with pytest.raises(ValueError, match="computes only scaled_softpick, softpick attention, not 'softmax'"):
        tiny("softmax")(tokens(), backend="flash")


def test_generate_appends_tokens_reproducibly():
    model = tiny(dtype=torch.float32)
    prompt = tokens(b=2, t=4)
    out = generate(model, prompt, 20, generator=torch.Generator().manual_seed(0))
    again = generate(model, prompt, 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 24) and torch.equal(out[:, :4], prompt) and torch.equal(out, again)
    assert ((out >= 0) & (out < VOCAB)).all()
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 1, temperature=0)


def test_generate_puts_bos_in_front_of_the_last_seq_len_minus_one_tokens(monkeypatch):
    bos = VOCAB - 1
    model = tiny(dtype=torch.float32, bos_id=bos)
    prompt = tokens(b=2, t=20) % bos  # text only, longer than seq_len (16)
    seen = []
    forward = Transformer.forward

    def recording(self, idx, **kwargs):
        seen.append(idx.clone())
        return forward(self, idx, **kwargs)

    monkeypatch.setattr(Transformer, "forward", recording)
    out = generate(model, prompt, 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 23) and torch.equal(out[:, :20], prompt)
    assert all(idx.shape == (2, 16) and (idx[:, 0] == bos).all() for idx in seen)
    assert torch.equal(seen[0][:, 1:], prompt[:, -15:])
    with pytest.raises(ValueError, match="text tokens only"):
        generate(model, torch.full((1, 3), bos), 1)


@pytest.mark.parametrize("bos_id", [-1, VOCAB, True, 1.0])
def test_bos_id_must_be_a_token_of_the_vocabulary(bos_id):
    with pytest.raises(ValueError, match="bos_id"):
        ModelConfig(vocab_size=VOCAB, bos_id=bos_id)


@pytest.mark.parametrize("training", [True, False])
def test_evaluating_gives_eval_mode_and_the_device_then_restores_the_mode(training):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train(training)
    with pytest.raises(RuntimeError, match="inside"):
        with model_module.evaluating(model) as device:
            assert device == torch.device("cpu") and not model.training and not model[1].training
            raise RuntimeError("inside")
    assert model.training is training and model[1].training is training
    with model_module.evaluating(torch.nn.ReLU()) as device:  # no parameters: the CPU
        assert device == torch.device("cpu")
