"""Data preparation: download, tokenizer, token cache. The data program edits this file.

    python -m trainer.prepare --dataset stdlib

Prepared data lives in ARX_DATA_DIR (default ~/.cache/arx) under prepared/<dataset>-<key>, where
the key hashes this file, data_sources.py and the backend. A data campaign's edits therefore get
a folder of their own, and unchanged code finds its folder already built (a no-op).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from . import data_sources as ds

# ---------------------------------------------------------------------------------------------
# Data knobs (the data program tunes these)
# ---------------------------------------------------------------------------------------------
VOCAB_SIZE_GPU = 8192  # BPE vocabulary (without BOS) on Metal/CUDA
VOCAB_SIZE_CPU = 2048  # smaller on CPU, where the softmax over the vocabulary dominates
TOKENIZER_TRAIN_CHARS = 50_000_000  # at most this much training text teaches the tokenizer

BOS = "<|bos|>"
DOWNLOAD_RETRIES = 5
DOWNLOAD_TIMEOUT_S = 30


def data_root() -> Path:
    return Path(os.environ.get("ARX_DATA_DIR", "~/.cache/arx")).expanduser()


def backend() -> str:
    import mlx.core as mx

    for name in ("metal", "cuda"):  # either module may be missing from a given MLX build
        module = getattr(mx, name, None)
        if module is not None and module.is_available():
            return name
    return "cpu"


def vocab_size() -> int:
    return VOCAB_SIZE_CPU if backend() == "cpu" else VOCAB_SIZE_GPU


def code_key(dataset: str) -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("prepare.py", "data_sources.py"):
        h.update((here / name).read_bytes())
    h.update(f"{dataset}|{backend()}".encode())
    return h.hexdigest()[:12]


def prepared_dir(dataset: str) -> Path:
    ds.dataset_info(dataset)
    return data_root() / "prepared" / f"{dataset}-{code_key(dataset)}"


def is_prepared(dataset: str) -> bool:
    return (prepared_dir(dataset) / "meta.json").exists()


# ---------------------------------------------------------------------------------------------
# Download with resume, retries and checks
# ---------------------------------------------------------------------------------------------
class DownloadError(RuntimeError):
    pass


def shard_url(dataset: str, shard: str) -> str:
    base = os.environ.get("ARX_DATA_BASE_URL") or ds.dataset_info(dataset)["base_url"]
    return f"{base.rstrip('/')}/{shard}"


def download(url: str, dest: Path, progress=None) -> None:
    """Fetch url to dest, resuming a partial file, retrying with backoff, checking size and sha256.

    The server's Content-Length fixes the size; an ETag (or X-Linked-ETag, as the Hugging Face
    hub sends for large files) that is a sha256 digest fixes the content.
    """
    if dest.exists():
        return
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(DOWNLOAD_RETRIES):
        if attempt:
            time.sleep(min(0.5 * 2**attempt, 30))
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
                if have and response.status != 206:
                    have = 0  # the server ignored the range: start over
                total = expected_size(response, have)
                digest = expected_sha256(response)
                with open(part, "ab" if have else "wb") as f:
                    while block := response.read(1 << 20):
                        f.write(block)
                        if progress:
                            progress(len(block))
            size = part.stat().st_size
            if total is not None and size != total:
                raise DownloadError(f"{url}: got {size} bytes, expected {total}")
            if digest and file_sha256(part) != digest:
                part.unlink()
                raise DownloadError(f"{url}: sha256 mismatch, discarded")
            part.rename(dest)
            return
        except urllib.error.HTTPError as e:
            if e.code == 416:  # asked past the end: the part file is complete or bad; restart
                part.unlink(missing_ok=True)
            elif 400 <= e.code < 500 and e.code != 429:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
            last_error = e
        except (urllib.error.URLError, OSError, DownloadError) as e:
            last_error = e
    reason = getattr(last_error, "reason", last_error)
    raise DownloadError(f"cannot download {url} after {DOWNLOAD_RETRIES} tries ({reason}); are you offline?")


def expected_size(response, have: int) -> int | None:
    length = response.headers.get("Content-Length")
    return have + int(length) if length is not None else None


def expected_sha256(response) -> str | None:
    for header in ("X-Linked-ETag", "ETag"):
        tag = (response.headers.get(header) or "").strip('W/"')
        if len(tag) == 64 and all(c in "0123456789abcdef" for c in tag):
            return tag
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def fetch_raw(dataset: str, console) -> Path:
    raw = data_root() / "raw" / dataset
    if ds.dataset_info(dataset)["kind"] == "stdlib":
        return raw
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
        for shard in ds.shard_names(dataset):
            task = bar.add_task(f"download {shard}", total=None)
            download(shard_url(dataset, shard), raw / shard, progress=lambda n, t=task: bar.advance(t, n))
    return raw


# ---------------------------------------------------------------------------------------------
# Tokenizer: BPE trained here (rustbpe), saved as ranks that tiktoken loads (trainer/evaluate.py)
# ---------------------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], size: int) -> dict:
    import rustbpe

    def limited():
        used = 0
        for t in texts:
            if used >= TOKENIZER_TRAIN_CHARS:
                return
            used += len(t)
            yield t

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(limited(), size)
    ranks = sorted(tok.get_mergeable_ranks(), key=lambda r: r[1])
    return {
        "pattern": tok.get_pattern(),
        "ranks": [base64.b64encode(b).decode() for b, _ in ranks],
        "bos": BOS,
        "bos_id": len(ranks),
        "vocab_size": len(ranks) + 1,
    }


# ---------------------------------------------------------------------------------------------
# The whole preparation
# ---------------------------------------------------------------------------------------------
def prepare(dataset: str, console=None) -> Path:
    """Build the prepared folder once; later calls with the same code and dataset return at once."""
    from rich.console import Console

    from .evaluate import load_tokenizer

    console = console or Console(stderr=True)
    out = prepared_dir(dataset)
    if (out / "meta.json").exists():
        console.print(f"prepared data is up to date: {out}")
        return out
    started = time.time()
    raw = fetch_raw(dataset, console)

    with console.status(f"reading {dataset} documents"):
        docs = list(ds.documents(dataset, raw))
    first_shard = None if ds.dataset_info(dataset)["kind"] == "stdlib" else ds.shard_names(dataset)[0] + "/"
    candidates: dict[str, int] = {}
    for key, kind, text in docs:
        if kind in ds.EVAL_KINDS and (first_shard is None or key.startswith(first_shard)):
            candidates[key] = candidates.get(key, 0) + len(text.encode())
    assigned = ds.split_keys(candidates)
    evaluation = {"val": [], "test": []}
    train: list[tuple[str, str]] = []
    for key, kind, text in docs:
        split = assigned.get(key)
        if split is None:
            train.append((kind, text))
        elif kind in ds.EVAL_KINDS:
            evaluation[split].append({"key": key, "text": text})
    train_docs = ds.training_documents(train, [row["text"] for rows in evaluation.values() for row in rows])
    if not train_docs or not evaluation["val"] or not evaluation["test"]:
        raise SystemExit(f"error: {dataset} yielded too little text (train {len(train_docs)}, val {len(evaluation['val'])}, test {len(evaluation['test'])})")

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with console.status(f"training a {vocab_size()}-token BPE on {len(train_docs):,} documents"):
        spec = train_tokenizer(train_docs, vocab_size())
        (tmp / "tokenizer.json").write_text(json.dumps(spec))
        enc = load_tokenizer(tmp / "tokenizer.json")

    from rich.progress import Progress

    dtype = np.uint16 if spec["vocab_size"] <= 1 << 16 else np.uint32
    lengths = []
    with open(tmp / "train.bin", "wb") as f, Progress(console=console) as bar:
        task = bar.add_task("tokenizing", total=len(train_docs))
        for i in range(0, len(train_docs), 1024):
            batch = enc.encode_ordinary_batch(train_docs[i : i + 1024], num_threads=os.cpu_count() or 1)
            for ids in batch:
                np.array([spec["bos_id"], *ids], dtype=dtype).tofile(f)
                lengths.append(len(ids) + 1)
            bar.advance(task, len(batch))
    np.save(tmp / "train_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    for split, rows in evaluation.items():
        with open(tmp / f"{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    meta = {
        "dataset": dataset,
        "key": code_key(dataset),
        "backend": backend(),
        "dtype": np.dtype(dtype).name,
        "vocab_size": spec["vocab_size"],
        "bos_id": spec["bos_id"],
        "train_docs": len(train_docs),
        "train_tokens": int(sum(lengths)),
        "val_docs": len(evaluation["val"]),
        "test_docs": len(evaluation["test"]),
        "seconds": round(time.time() - started, 2),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    console.print(f"prepared {dataset}: {meta['train_tokens']:,} training tokens, vocab {meta['vocab_size']} -> {out}")
    return out


def load_train_tokens(folder: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Memory-mapped training tokens, document offsets and the metadata of a prepared folder."""
    meta = json.loads((folder / "meta.json").read_text())
    tokens = np.memmap(folder / "train.bin", dtype=meta["dtype"], mode="r")
    return tokens, np.load(folder / "train_offsets.npy"), meta


def prune(keep_current: bool = True) -> list[Path]:
    """Remove prepared folders other than those the current code would use."""
    root = data_root() / "prepared"
    current = {prepared_dir(name).name for name in ds.DATASETS} if keep_current else set()
    removed = [p for p in root.glob("*") if p.is_dir() and p.name not in current] if root.exists() else []
    for p in removed:
        shutil.rmtree(p)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.prepare", description="Download, tokenize and cache a dataset for training.")
    parser.add_argument("--dataset", default="stdlib", help=f"one of: {', '.join(sorted(ds.DATASETS))} (default stdlib)")
    parser.add_argument("--list", action="store_true", help="list datasets and whether each is prepared")
    parser.add_argument("--prune", action="store_true", help="delete prepared folders the current code no longer uses")
    parser.add_argument("--path", action="store_true", help="print the prepared folder of --dataset and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, info in sorted(ds.DATASETS.items()):
            print(f"{name:12} {'prepared' if is_prepared(name) else 'not prepared':13} {info['about']}")
        return 0
    if args.prune:
        for p in prune():
            print(f"removed {p}")
        return 0
    try:
        if args.path:
            print(prepared_dir(args.dataset))
            return 0
        prepare(args.dataset)
    except (ds.UnknownDataset, DownloadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
