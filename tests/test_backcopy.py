"""The Bigram-Backcopy preset end to end: the trainer's probe logs the sink metrics, analyze reports them, and
the committed runs (results/backcopy/) show the sink with softmax and none with softpick."""

import json
from pathlib import Path

import pytest
import torch

from minisoftpick import analyze, metrics, synthetic, train
from minisoftpick.model import ModelConfig, Transformer
from minisoftpick.train import load_checkpoint, preset

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "backcopy"
SINK_THRESHOLD = 0.3


def test_preset_is_the_measured_recipe():
    cfg = preset("backcopy")
    train.check_config(cfg)
    vocab_size, bos, sample, val = train.load_task(cfg)
    assert vocab_size == synthetic.BACKCOPY_VOCAB_SIZE and bos is None  # the task's BOS is its own token
    x, y = sample(train.step_generator(cfg.seed, 0))
    assert x.shape == y.shape == (64, 64) and torch.all(x[:, 0] == synthetic.BACKCOPY_BOS)
    assert len(val) == cfg.eval_batches
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.lr, cfg.min_lr, cfg.weight_decay) == (
        1,
        1,
        64,
        3e-4,
        3e-4,
        1e-4,
    )
    assert Transformer(train.model_config(cfg, vocab_size)).num_params() < 100_000


def test_value_states_are_what_the_attention_averages():
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(vocab_size=65, seq_len=16, n_layers=2, n_heads=4, n_kv_heads=2, d_model=32)
    )
    x, _ = synthetic.backcopy_batch(3, 16, generator=torch.Generator().manual_seed(0))
    seen = []
    hooks = [
        block.attn.wv.register_forward_hook(lambda m, i, out: seen.append(out)) for block in model.blocks
    ]
    with torch.no_grad():
        _, capture = model(x, capture=True)
        for hook in hooks:
            hook.remove()
        values = metrics.value_states(model, x, capture)
    assert [v.shape for v in values] == [(3, 2, 16, 8)] * 2
    for v, out in zip(values, seen, strict=True):
        torch.testing.assert_close(v, out.view(3, 16, 2, 8).transpose(1, 2))


def test_backcopy_report_is_the_metrics_of_the_capture():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=65, seq_len=32, n_layers=2, n_heads=2, d_model=32)).train()
    x, _ = synthetic.backcopy_batch(8, 32, generator=torch.Generator().manual_seed(1))
    report = metrics.backcopy_report(model, x)
    assert model.training  # mode restored
    task = synthetic.bigram_backcopy_task()
    dormant, active = synthetic.backcopy_roles(x, task.triggers)
    with torch.no_grad():
        logits, capture = model.eval()(x, capture=True)
    layer = report["layers"][1]
    assert layer["bos_attention_dormant"] == metrics.bos_attention(capture.attn[1], dormant).tolist()
    assert (
        layer["previous_token_attention_active"]
        == metrics.previous_token_attention(capture.attn[1], active).tolist()
    )
    assert layer["residual_norm_ratio"] == metrics.first_token_norm_ratio(capture.hidden[1]).item()
    assert report["triggers"] == list(task.triggers) and report["active_queries"] == int(active.sum())
    predicted = logits.argmax(-1)
    copies = active.nonzero().tolist()
    expected = sum(int(predicted[b, t] == x[b, t - 1]) for b, t in copies) / len(copies)
    assert report["copy_accuracy"] == pytest.approx(expected)


def test_a_backcopy_run_logs_the_sink_metrics_and_analyze_reports_them(tmp_path, capsys):
    out = tmp_path / "run"
    train.train(
        preset(
            "backcopy",
            max_steps=4,
            eval_interval=2,
            probe_interval=2,
            eval_batches=1,
            out=str(out),
            device="cpu",
        )
    )
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [("probe" in r) for r in log] == [True, True]  # probe_interval 2: every line here
    probe = log[-1]["probe"]
    assert probe["dormant_queries"] + probe["active_queries"] == train.PROBE_BATCH * 63
    capsys.readouterr()
    analyze.main([str(out), "--out", str(tmp_path / "analysis"), "--batch-size", "4"])
    report = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert report["batch"] == [4, 64] and len(report["backcopy"]["layers"]) == 1
    printed = capsys.readouterr().out
    assert "layer 0 head 0: BOS gets" in printed and "at dormant (non-trigger) queries" in printed


@pytest.mark.parametrize("attention", ["softmax", "softpick"])
def test_committed_runs_show_the_sink_with_softmax_only(attention):
    path = COMMITTED / attention / "checkpoint.pt"
    model = load_checkpoint(path)
    x, _ = analyze.analysis_batch(analyze.run_config(train.read_checkpoint(path)), "val", 64)
    report = metrics.backcopy_report(model, x)
    layer = report["layers"][0]
    assert report["copy_accuracy"] > 0.8  # the head copies after triggers, with either normalizer
    if attention == "softmax":
        assert layer["bos_attention_dormant"][0] > SINK_THRESHOLD and layer["row_mass_dormant"][0] > 0.99
        assert layer["previous_token_attention_active"][0] > 0.5
    else:
        assert layer["bos_attention_dormant"][0] < 0.05 and layer["row_mass_dormant"][0] < 0.1
