"""The raw text of each dataset and its held-out split: trusted, never run inside a sandbox.

The daemon materializes a dataset once, before any candidate code runs:

    data_root/raw/<dataset>/          downloaded shards (they still hold the held-out rows): hidden
    data_root/heldout/<corpus id>/    val.jsonl and test.jsonl: hidden from every sandbox
    data_root/corpus/<corpus id>/     the training material, held-out documents removed:
                                      what the sandboxed `trainer/prepare.py` reads (ARX_CORPUS_DIR)

The held-out split is defined here (not in the editable `trainer/` files), so a data program
cannot move val documents into training or choose an easier test set. For the embedded `stdlib`
dataset the held-out source files also exist in the installed Python (and in other Python
installations on the machine): `Corpus.masked` lists every copy found, and the sandbox covers
them, under `Corpus.mask_roots` (the library folders that hold them) with one overlay per folder,
so that no list of the jail's mounts names them. Held-out files are chosen among modules that no
honest sandboxed process imports, so masking them breaks nothing.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

DATASETS: dict[str, dict] = {
    "stdlib": {
        "kind": "stdlib",
        "about": "Python's own standard-library sources, docstrings and pydoc topics (offline)",
    },
    "climbmix": {
        "kind": "parquet",
        "about": "ClimbMix 400B web text, shuffled parquet shards",
        "base_url": "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main",
        "shard": "shard_{index:05d}.parquet",
        "shards": 4,
        "text_column": "text",
    },
    "tinystories": {
        "kind": "parquet",
        "about": "TinyStories short stories, parquet shards",
        "base_url": "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/refs%2Fconvert%2Fparquet/default/train",
        "shard": "{index:04d}.parquet",
        "shards": 2,
        "text_column": "text",
    },
}
EVAL_BYTES = 96_000  # bytes of documents in each of val and test
EVAL_MAX_DOC_BYTES = 24_000  # longer documents never join val/test (one file must not dominate)
EVAL_KINDS = {"code", "topics", "text"}
EVAL_SKIP_PREFIXES = ("stdlib/encodings/",)  # generated codec tables: near-free to predict, they would flatter val_bpb
STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo"}
# what an honest sandboxed phase may import; held-out stdlib files are never among these modules (nor packages'
# __init__.py), so masking them inside the sandbox breaks no honest code
SANDBOX_IMPORTS = (
    "numpy",
    "mlx.core",
    "mlx.nn",
    "mlx.optimizers",
    "mlx.utils",
    "tiktoken",
    "rustbpe",
    "pyarrow.parquet",
    "rich.console",
    "rich.progress",
    "multiprocessing.pool",
    "concurrent.futures",
    "asyncio",
    "urllib.request",
    "xml.etree.ElementTree",
    "email.message",
    "http.client",
    "sqlite3",
    "unittest",
    "argparse",
    "logging.handlers",
    "csv",
    "gzip",
    "zipfile",
    "importlib.metadata",
    "importlib.resources",
    "importlib.resources.abc",
    "importlib.util",
    "ctypes",
    "sysconfig",
    "multiprocessing.popen_spawn_posix",
    "multiprocessing.forkserver",
    "multiprocessing.sharedctypes",
    "unittest._log",
)
DOWNLOAD_RETRIES = 5
DOWNLOAD_TIMEOUT_S = 30


class UnknownDataset(ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")


class DownloadError(RuntimeError):
    pass


@dataclass(frozen=True)
class Doc:
    key: str  # documents that share a key always share a split (a source file and its docstrings)
    kind: str
    text: str


@dataclass(frozen=True)
class Corpus:
    dataset: str
    id: str  # names the corpus and held-out folders; changes when the documents change
    train_dir: Path  # training material for the sandboxed prepare (ARX_CORPUS_DIR)
    heldout_dir: Path  # val.jsonl, test.jsonl: trusted side only
    masked: tuple[Path, ...]  # files outside data_root that hold held-out text and must be hidden
    mask_roots: tuple[Path, ...] = ()  # the library folders that hold them (sandbox.Jail.mask_roots)

    def heldout(self, split: str) -> list[str]:
        return [
            json.loads(line)["text"] for line in (self.heldout_dir / f"{split}.jsonl").read_text().splitlines() if line
        ]


def data_root() -> Path:
    return Path(os.environ.get("ARX_DATA_DIR", "~/.cache/arx")).expanduser()


def dataset_info(name: str) -> dict:
    if name not in DATASETS:
        raise UnknownDataset(name)
    return DATASETS[name]


def docs_sha256(texts: list[str]) -> str:
    """The pin of a held-out split: its documents in order."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\x00")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The held-out split
# ---------------------------------------------------------------------------------------------
def split_keys(candidates: dict[str, int]) -> dict[str, str]:
    """{split_key: bytes} -> {split_key: 'val' | 'test'}, by a stable hash of the key."""
    ranked = sorted(candidates, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    chosen: dict[str, str] = {}
    filled = {"val": 0, "test": 0}
    for key in ranked:
        if candidates[key] > EVAL_MAX_DOC_BYTES or key.startswith(EVAL_SKIP_PREFIXES):
            continue
        split = "val" if filled["val"] < EVAL_BYTES else "test" if filled["test"] < EVAL_BYTES else None
        if split is None:
            break
        chosen[key] = split
        filled[split] += candidates[key]
    return chosen


def split(docs: list[Doc], eligible: Callable[[Doc], bool]) -> tuple[list[Doc], dict[str, list[Doc]]]:
    """(training documents, {val, test}) with every document of a held-out key removed from training."""
    sizes: dict[str, int] = {}
    for d in docs:
        if d.kind in EVAL_KINDS and eligible(d):
            sizes[d.key] = sizes.get(d.key, 0) + len(d.text.encode())
    assigned = split_keys(sizes)
    heldout: dict[str, list[Doc]] = {"val": [], "test": []}
    train = []
    for d in docs:
        if d.key not in assigned:
            train.append(d)
        elif d.kind in EVAL_KINDS:
            heldout[assigned[d.key]].append(d)
    return train, heldout


# ---------------------------------------------------------------------------------------------
# stdlib: the running interpreter's library
# ---------------------------------------------------------------------------------------------
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_documents() -> Iterator[Doc]:
    root = stdlib_root()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if STDLIB_SKIP.intersection(rel.parts):
            continue
        key = f"stdlib/{rel.as_posix()}"
        source = path.read_text(encoding="utf-8", errors="replace")
        yield Doc(key, "code", source)
        docstrings = module_docstrings(source)
        if docstrings:
            yield Doc(key, "docstrings", docstrings)
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield Doc(f"topics/{name}", "topics", topics[name])


def module_docstrings(source: str) -> str:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return "\n\n".join(d for d in (ast.get_docstring(n) for n in nodes) if d)


def imported_stdlib_files() -> set[str]:
    """Stdlib files (relative paths) that an honest sandboxed phase loads, asked of a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {SANDBOX_IMPORTS!r}:\n"
        "    try: importlib.import_module(m)\n"
        "    except Exception: pass\n"
        "print(json.dumps([getattr(m, '__file__', None) for m in list(sys.modules.values())]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH="")
    )
    root = stdlib_root()
    files = {Path(f) for f in json.loads(out.stdout.splitlines()[-1]) if f}
    return {f.relative_to(root).as_posix() for f in files if f.is_relative_to(root)}


# Where Python standard libraries live, any version: most held-out files are unchanged from one version to the
# next, and interpreters come bundled with other software (a cloud SDK's under /usr/lib/<sdk>/platform/...).
STDLIB_COPY_PATTERNS = (
    "/usr/lib/python3.*",
    "/usr/local/lib/python3.*",
    "/usr/lib/*/lib/python3.*",
    "/usr/lib/*/*/lib/python3.*",
    "/usr/lib/*/*/*/lib/python3.*",
    "/usr/share/*/lib/python3.*",
    "/usr/local/*/lib/python3.*",
    "/opt/*/lib/python3.*",
    "/opt/*/*/lib/python3.*",
    "/opt/*/*/*/lib/python3.*",
    "~/.pyenv/versions/*/lib/python3.*",
    "~/.local/share/uv/python/*/lib/python3.*",
)
# distutils lives on, vendored, in setuptools
VENDORED_DISTUTILS = ("site-packages/setuptools/_distutils", "dist-packages/setuptools/_distutils")


def stdlib_copies() -> list[Path]:
    """Every stdlib folder found on the machine, of any Python 3 version (each may hold the held-out files)."""
    found = {stdlib_root().resolve()} | {
        Path(p).resolve() for pattern in STDLIB_COPY_PATTERNS for p in glob.glob(os.path.expanduser(pattern))
    }
    found |= {Path(sys.prefix).resolve() / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"}
    return sorted(p for p in found if p.is_dir())


def stdlib_masks(heldout_keys: list[str]) -> tuple[list[Path], list[Path]]:
    """The held-out source files, their bytecode, and (for held-out pydoc topics) topics.py, in every copy,
    including the distutils that setuptools vendors (in each copy's site-packages, and Debian's dist-packages);
    and the folders that hold them (each mask under the shallowest one)."""
    masks = []
    roots = stdlib_copies()
    vendored = [r / v for r in (*roots, *(p.parent / "python3" for p in roots)) for v in VENDORED_DISTUTILS]
    vendored = [v.resolve() for v in vendored if v.is_dir()]
    for key in heldout_keys:
        rel = Path("pydoc_data/topics.py") if key.startswith("topics/") else Path(key.removeprefix("stdlib/"))
        places = [root / rel for root in roots]
        if rel.parts[0] == "distutils":
            places += [v / Path(*rel.parts[1:]) for v in vendored]
        for place in places:
            for path in (place, *(place.parent / "__pycache__").glob(f"{place.stem}.*.pyc")):
                if path.exists():
                    masks.append(path)
    folders = sorted(
        {min((r for r in (*roots, *vendored) if m.is_relative_to(r)), key=lambda r: len(r.parts)) for m in masks}
    )
    return sorted(set(masks)), folders


# ---------------------------------------------------------------------------------------------
# Parquet datasets: downloads with resume, retries and checks (trusted: the sandbox has no network)
# ---------------------------------------------------------------------------------------------
def shard_names(name: str) -> list[str]:
    info = dataset_info(name)
    return [info["shard"].format(index=i) for i in range(info.get("shards", 1))]


def shard_url(dataset: str, shard: str) -> str:
    base = os.environ.get("ARX_DATA_BASE_URL") or dataset_info(dataset)["base_url"]
    return f"{base.rstrip('/')}/{shard}"


def download(url: str, dest: Path, progress: Callable[[int], None] | None = None) -> None:
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
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
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


def parquet_documents(name: str, raw_dir: Path, shard: str) -> Iterator[Doc]:
    import pyarrow.parquet as pq

    table = pq.read_table(raw_dir / shard, columns=[dataset_info(name)["text_column"]])
    for row, text in enumerate(table.column(0).to_pylist()):
        if text:
            yield Doc(f"{shard}/{row}", "text", text)


def fetch(name: str, console=None) -> Path:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    raw = data_root() / "raw" / name
    with Progress(
        *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console, transient=True
    ) as bar:
        for shard in shard_names(name):
            task = bar.add_task(f"download {shard}", total=None)
            download(shard_url(name, shard), raw / shard, progress=lambda n, t=task: bar.advance(t, n))
    return raw


# ---------------------------------------------------------------------------------------------
# Materialize
# ---------------------------------------------------------------------------------------------
def scrubbed(docs: list[Doc], heldout: dict[str, list[Doc]]) -> list[Doc]:
    """Training documents with every long run of held-out text cut out (see shingles.scrub)."""
    from .shingles import scrub  # numpy: imported only when a corpus is built

    pieces = scrub([d.text for d in docs], [d.text for split_docs in heldout.values() for d in split_docs])
    return [Doc(d.key, d.kind, piece) for d, parts in zip(docs, pieces) for piece in parts if piece.strip()]


def write_jsonl(path: Path, docs: list[Doc]) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps({"key": d.key, "kind": d.kind, "text": d.text}) + "\n" for d in docs)


def materialize(name: str, console=None) -> Corpus:
    """Build (once) the training material and the held-out split of `name`; cheap when built."""
    info = dataset_info(name)
    if info["kind"] == "stdlib":
        source_id = f"py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    else:
        raw = fetch(name, console)
        source_id = "|".join(f"{s}:{(raw / s).stat().st_size}" for s in shard_names(name))
    corpus_id = f"{name}-{hashlib.sha256((source_id + '|' + split_rule_version()).encode()).hexdigest()[:12]}"
    train_dir, heldout_dir = data_root() / "corpus" / corpus_id, data_root() / "heldout" / corpus_id
    if not (train_dir / "done").exists():
        build(name, train_dir, heldout_dir)
    keys = json.loads((heldout_dir / "keys.json").read_text())
    masked, roots = stdlib_masks(keys) if info["kind"] == "stdlib" else ([], [])
    return Corpus(name, corpus_id, train_dir, heldout_dir, tuple(masked), tuple(roots))


def build(name: str, train_dir: Path, heldout_dir: Path) -> None:
    if dataset_info(name)["kind"] == "stdlib":
        shards = [list(stdlib_documents())]
        imported = imported_stdlib_files()

        def eligible(d):
            return d.key.removeprefix("stdlib/") not in imported and not d.key.endswith("__init__.py")
    else:
        raw = data_root() / "raw" / name
        shards = [list(parquet_documents(name, raw, s)) for s in shard_names(name)]
        first = shard_names(name)[0] + "/"

        def eligible(d):
            return d.key.startswith(first)

    train, heldout = split([d for shard in shards for d in shard], eligible)
    heldout_keys = {d.key for split_docs in heldout.values() for d in split_docs}
    for folder in (train_dir, heldout_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for split_name, split_docs in heldout.items():
        write_jsonl(heldout_dir / f"{split_name}.jsonl", split_docs)
    (heldout_dir / "keys.json").write_text(json.dumps(sorted(heldout_keys)))
    for i, shard in enumerate(shards):
        write_jsonl(
            train_dir / f"docs-{i:05d}.jsonl", scrubbed([d for d in shard if d.key not in heldout_keys], heldout)
        )
    (train_dir / "done").write_text(json.dumps({"dataset": name, "train_docs": len(train)}))


def split_rule_version() -> str:
    """Changes whenever the constants that define the split change, so old held-out folders are not reused."""
    from .shingles import SCRUB_BYTES

    return json.dumps(
        [
            EVAL_BYTES,
            EVAL_MAX_DOC_BYTES,
            sorted(EVAL_KINDS),
            EVAL_SKIP_PREFIXES,
            sorted(STDLIB_SKIP),
            SANDBOX_IMPORTS,
            SCRUB_BYTES,
        ]
    )
