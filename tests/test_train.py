"""The trainer: schedule, flags, logs and checkpoints, exact resume, analysis (several processes: test_parallel.py)."""

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch

from minisoftpick import analyze, data, synthetic, train
from minisoftpick.model import ModelConfig, Transformer
from minisoftpick.train import TrainConfig, evaluate, learning_rate, load_checkpoint, parse_args, preset

LOG_FIELDS = {"step", "loss", "lr", "val_loss", "tokens", "elapsed"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny stand-in corpus, prepared like the real one (tests never depend on `make data`)."""
    line = "What light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    works = {
        name: f"{name.upper()}\n\n" + line * 12 for name in [*data.VAL_WORKS, "hamlet", "lear", "sonnets"]
    }
    out = tmp_path_factory.mktemp("data")
    data.write_dataset(works, out)
    return str(out)


def smoke(data_dir, out, **overrides):
    return preset("smoke", data_dir=data_dir, out=str(out), device="cpu", **overrides)


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    model = train.train(smoke(data_dir, out))
    return out, model


# ---- configuration -------------------------------------------------------------------------------


def test_learning_rate_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)
    rates = [learning_rate(cfg, s) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:10], strict=False))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))
    assert learning_rate(cfg, 100) == pytest.approx(1e-4) and min(rates) >= 1e-4


def test_flags_override_the_preset():
    cfg = parse_args(
        [
            "--preset",
            "smoke",
            "--attention",
            "softmax",
            "--max-steps",
            "7",
            "--tokenizer",
            "bpe",
            "--max-minutes",
            "1.5",
            "--resume",
        ]
    )
    assert cfg == preset(
        "smoke", attention="softmax", max_steps=7, tokenizer="bpe", max_minutes=1.5, resume=True
    )
    assert parse_args([]) == train.PRESETS["cpu"]
    with pytest.raises(SystemExit):
        parse_args(["--attention", "sigmoid"])


def test_presets_fit_their_purpose():
    sizes = {}
    for name, cfg in train.PRESETS.items():
        train.check_config(cfg)
        sizes[name] = Transformer(
            train.model_config(cfg, vocab_size=54 if name == "passkey" else 84)
        ).num_params()
    assert sizes["smoke"] < 100_000 < sizes["cpu"] < 2_000_000
    assert 4_000_000 <= sizes["gpu"] <= 50_000_000
    assert sizes["gpu"] == sizes["study"] < sizes["study_large"] <= 50_000_000


@pytest.mark.parametrize(
    ("overrides", "world_size", "message"),
    [
        (dict(task="wikipedia"), 1, "task must be"),
        (dict(tokenizer="word"), 1, "tokenizer must be"),
        (dict(attention="sigmoid"), 1, "attention must be"),
        (dict(max_steps=0), 1, "max_steps"),
        (dict(batch_size=6), 4, "multiple of the number of processes"),
        (dict(min_lr=1.0), 1, "min_lr"),
        (dict(device="tpu"), 1, "device must be"),
    ],
)
def test_bad_config_is_rejected(overrides, world_size, message):
    with pytest.raises(ValueError, match=message):
        train.check_config(preset("smoke", **overrides), world_size)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(TrainConfig)])
def test_every_field_is_type_checked(field):
    with pytest.raises(TypeError, match=f"^{field} must be"):
        train.check_config(preset("smoke", **{field: object()}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(grad_clip=-1.0), "grad_clip must be > 0"),
        (dict(grad_clip=float("nan")), "grad_clip must be > 0"),
        (dict(lr=float("inf")), "lr must be a finite number > 0"),
        (dict(weight_decay=float("nan")), "weight_decay"),
        (dict(seed=train.MAX_SEED + 1), "seed must be in"),
        (dict(parallel="zero"), "parallel must be one of"),
        (dict(max_minutes=-1.0), "max_minutes"),
        (dict(n_heads=3), "d_model"),
    ],
)
def test_out_of_range_values_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        train.check_config(preset("smoke", **overrides))


def test_bools_are_not_counts_and_inf_disables_clipping():
    with pytest.raises(TypeError, match="max_steps must be int"):
        train.check_config(preset("smoke", max_steps=True))
    train.check_config(preset("smoke", grad_clip=float("inf"), max_minutes=0.0, lr=1))  # 0: one step


# ---- a smoke run -----------------------------------------------------------------------------------


def test_smoke_run_logs_learns_and_checkpoints(smoke_run):
    out, model = smoke_run
    log = read_log(out)
    assert all(set(record) == LOG_FIELDS for record in log)
    assert [r["step"] for r in log] == [5, 10, 15, 20]
    assert [r["val_loss"] is not None for r in log] == [False, True, False, True]
    assert log[-1]["tokens"] == 20 * 8 * 32
    assert log[-1]["loss"] < log[0]["loss"] - 0.3 and log[-1]["val_loss"] < log[1]["val_loss"]
    state = train.read_checkpoint(out)
    assert state["step"] == 20 and state["train_config"]["attention"] == "softpick"
    assert set(state) >= {"model_config", "train_config", "model", "optimizer", "rng", "step"}


def test_load_checkpoint_and_evaluate_reproduce_the_run(smoke_run, data_dir):
    out, model = smoke_run
    loaded = load_checkpoint(out)
    assert not loaded.training
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    torch.testing.assert_close(loaded(idx), model(idx))
    val = data.load_tokens("val", "char", data_dir)
    cfg = preset("smoke")
    loss = evaluate(loaded, val, batch_size=cfg.batch_size, max_batches=cfg.eval_batches)
    assert loss == pytest.approx(read_log(out)[-1]["val_loss"], rel=1e-6)
    assert evaluate(
        loaded,
        torch.from_numpy(np.asarray(val, dtype=np.int64)),
        batch_size=cfg.batch_size,
        max_batches=cfg.eval_batches,
    ) == pytest.approx(loss, rel=1e-6)


def test_save_weights_is_a_small_loadable_copy(smoke_run, tmp_path):
    out, model = smoke_run
    compact = train.save_weights(out, tmp_path / "model.pt")
    state = train.read_checkpoint(compact)
    assert "optimizer" not in state and state["step"] == 20
    assert all(t.dtype == torch.bfloat16 for t in state["model"].values())
    assert compact.stat().st_size < (out / train.CHECKPOINT).stat().st_size / 4
    loaded = load_checkpoint(compact)
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], weight.bfloat16().float())


def test_evaluate_scores_only_targets_not_minus_100():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=11, seq_len=8, n_layers=1, n_heads=2, d_model=16))
    x = torch.randint(0, 11, (3, 8))
    y = torch.randint(0, 11, (3, 8))
    y[:, :5] = -100
    logits = model(x)
    expected = torch.nn.functional.cross_entropy(logits[:, 5:].flatten(0, 1), y[:, 5:].flatten())
    batches = [(x[:2], y[:2]), (x[2:], y[2:])]
    assert evaluate(model, batches) == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="no scored target"):
        evaluate(model, [(x, torch.full_like(y, -100))])


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    log = tmp_path / "train.txt"
    log.write_text("passkey preset, softmax attention\n")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(log)


def test_resume_continues_exactly(data_dir, tmp_path, monkeypatch):
    cfg = dict(max_steps=6, log_interval=1, eval_interval=3, checkpoint_interval=3)
    straight = train.train(smoke(data_dir, tmp_path / "straight", **cfg))

    real_generator = train.step_generator

    def interrupted_after_step_3(seed, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_generator(seed, step)

    monkeypatch.setattr(train, "step_generator", interrupted_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train.train(smoke(data_dir, tmp_path / "resumed", **cfg))
    monkeypatch.setattr(train, "step_generator", real_generator)
    resumed = train.train(smoke(data_dir, tmp_path / "resumed", resume=True, **cfg))

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    a, b = train.read_checkpoint(tmp_path / "straight"), train.read_checkpoint(tmp_path / "resumed")
    assert a["step"] == b["step"] == 6
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])

    def curve(out):
        return [(r["step"], r["loss"], r["lr"], r["val_loss"]) for r in read_log(out)]

    assert curve(tmp_path / "resumed") == curve(tmp_path / "straight")


def test_resume_refuses_another_model(data_dir, smoke_run):
    out, _ = smoke_run
    with pytest.raises(ValueError, match="--resume"):
        train.train(smoke(data_dir, out, d_model=64, resume=True))


def test_passkey_task_trains_on_scored_answers_only(tmp_path):
    cfg = preset(
        "smoke", task="passkey", seq_len=24, max_steps=4, eval_interval=4, out=str(tmp_path), device="cpu"
    )
    model = train.train(cfg)
    assert model.config.vocab_size == synthetic.VOCAB_SIZE
    log = read_log(tmp_path)
    assert np.isfinite(log[-1]["val_loss"])


# ---- the analysis command ----------------------------------------------------------------------------


def test_analyze_command_writes_json_and_plots(smoke_run, tmp_path):
    out, _ = smoke_run
    analyze.main([str(out), "--split", "val", "--out", str(tmp_path), "--batch-size", "3"])
    report = json.loads((tmp_path / "analysis.json").read_text())
    assert report["split"] == "val" and report["step"] == 20 and report["batch"] == [3, 32]
    assert len(report["layers"]) == 2 and len(report["layers"][0]["first_token_attention"]) == 2
    assert 0 <= report["sink_rate"] <= 1 and 0 <= report["attention_sparsity"] <= 1
    for plot in ("attention_maps.png", "sink_rate.png", "activations.png"):
        assert (tmp_path / plot).stat().st_size > 1000


# ---- BOS -----------------------------------------------------------------------------------------


def test_every_training_window_starts_with_bos(data_dir, monkeypatch, tmp_path):
    seen = []
    forward = Transformer.forward

    def recording(self, idx, **kwargs):
        seen.append(idx.clone())
        return forward(self, idx, **kwargs)

    monkeypatch.setattr(Transformer, "forward", recording)
    model = train.train(smoke(data_dir, tmp_path, max_steps=3, eval_interval=100))
    bos = data.bos_id("char", data_dir)
    assert model.config.bos_id == bos
    assert len(seen) >= 3 and all((idx[:, 0] == bos).all() and (idx[:, 1:] != bos).all() for idx in seen)


def test_evaluation_reads_windows_the_way_the_model_was_trained(smoke_run, data_dir):
    _, model = smoke_run
    val = data.load_tokens("val", "char", data_dir)
    bos = model.config.bos_id
    batches = list(data.evenly_spaced_batches(val, 4, model.config.seq_len, 2, bos))
    assert all((x[:, 0] == bos).all() for x, _ in batches)
    assert evaluate(model, val, batch_size=4, max_batches=2) == pytest.approx(
        evaluate(model, batches, max_batches=2), rel=1e-6
    )
    x, _ = analyze.analysis_batch(analyze.run_config(train.read_checkpoint(smoke_run[0])), "val", 3, bos)
    assert (x[:, 0] == bos).all()


def test_a_run_without_bos_has_no_bos_anywhere(data_dir, tmp_path):
    model = train.train(smoke(data_dir, tmp_path, max_steps=2, bos=False))
    assert model.config.bos_id is None


def test_a_checkpoint_from_before_bos_loads_and_is_read_without_bos(smoke_run, tmp_path):
    state = train.read_checkpoint(smoke_run[0])
    del state["model_config"]["bos_id"], state["train_config"]["bos"], state["train_config"]["probe_interval"]
    torch.save(state, tmp_path / "old.pt")
    model = load_checkpoint(tmp_path / "old.pt")
    assert model.config.bos_id is None
    assert analyze.run_config(train.read_checkpoint(tmp_path / "old.pt")).bos is False
    torch.testing.assert_close(model.state_dict(), smoke_run[1].cpu().state_dict())


def test_probes_log_sinks_and_activations_during_training(data_dir, tmp_path):
    train.train(smoke(data_dir, tmp_path, max_steps=6, probe_interval=3))
    probes = [r for r in read_log(tmp_path) if "probe" in r]
    assert [r["step"] for r in probes] == [3, 6]
    for record in probes:
        probe = record["probe"]
        assert 0 <= probe["sink_rate_short"] <= 1 and probe["kurtosis_mean"] > 0 and probe["max_abs"] > 0
        assert len(probe["layers"]) == 2 and "zero_fraction" not in probe["layers"][0]
        assert len(probe["layers"][0]["first_token_attention_short"]) == 2  # one per head


class RecordsThread(torch.autograd.Function):
    """Identity whose backward, written in Python like the kernel's, records the thread it ran on."""

    threads: list[int] = []

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        RecordsThread.threads.append(threading.get_ident())
        return grad


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
            ],
        ),
    ],
)
def test_backward_gives_loss_backwards_gradients_on_the_calling_thread(device):
    """On a GPU autograd would otherwise run the Python backward on a thread of its own."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=11, n_layers=1, n_heads=2, d_model=16, seq_len=8)).to(device)
    idx = torch.randint(0, 11, (2, 9), device=device)

    def loss_of(m):
        return train.lm_loss(RecordsThread.apply(m(idx[:, :-1])), idx[:, 1:])

    loss_of(model).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    RecordsThread.threads.clear()
    train.backward(loss_of(model))
    assert RecordsThread.threads == [threading.get_ident()]
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=0, atol=0, msg=name)
