"""Data: the trusted corpus and its held-out split, the masked stdlib files, prepared folders keyed by
the data code, packing invariants, and downloads that resume."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, edit_constant, make_spec, run_module
from inside import loader
from orchestrator.measure import experiment
from orchestrator.scoring import corpus, scorer
from trainer import data_sources as ds

RUN_BYTES = 48  # no held-out run this long may reach the training material


def training_texts(found: corpus.Corpus) -> list[dict]:
    return [
        json.loads(line)
        for shard in sorted(found.train_dir.glob("docs-*.jsonl"))
        for line in shard.read_text().splitlines()
    ]


def heldout_rows(found: corpus.Corpus, split: str) -> list[dict]:
    return [json.loads(line) for line in (found.heldout_dir / f"{split}.jsonl").read_text().splitlines()]


def shared_run(texts: list[str], heldout: list[str], n: int = RUN_BYTES) -> bytes | None:
    """A run of n bytes of a held-out text that also occurs in one of `texts`, or None.

    Independent of leakcheck's hashing: any such run contains a whole block of n - 8 bytes that starts
    at a multiple of 8 in its held-out text, so every window of the training bytes is looked up among
    those blocks (a filter on a key of their 8-byte words, in chunks), and each hit is checked byte by byte and
    extended both ways."""
    step, block = 8, n - 8
    assert block > 0 and block % 8 == 0
    blocks: dict[bytes, list[tuple[bytes, int]]] = {}
    for text in heldout:
        raw = text.encode()
        for start in range(0, len(raw) - block + 1, step):
            blocks.setdefault(raw[start : start + block], []).append((raw, start))
    if not blocks:
        return None
    mult = np.random.default_rng(0).integers(1, 1 << 63, block // 8, dtype=np.uint64) | np.uint64(1)

    def keys(buf: bytes, count: int, stride: int = 1) -> np.ndarray:
        key = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for w in range(block // 8):
                key += np.ndarray((count,), dtype="<u8", buffer=buf, offset=8 * w, strides=(stride,)) * mult[w]
        return key

    table = np.zeros(1 << 24, dtype=bool)  # a one-hash Bloom filter of the blocks' keys
    table[keys(b"".join(blocks), len(blocks), block) >> np.uint64(40)] = True
    blob = "\x00".join(texts).encode()  # a run never spans two documents
    chunk = 1 << 21
    for begin in range(0, max(0, len(blob) - block + 1), chunk):
        count = min(chunk, len(blob) - block + 1 - begin)
        hits = np.flatnonzero(table[keys(blob[begin : begin + count + block], count) >> np.uint64(40)])
        for pos in (begin + hits).tolist():
            for raw, start in blocks.get(blob[pos : pos + block], []):
                left = 0
                while left < min(pos, start) and blob[pos - left - 1] == raw[start - left - 1]:
                    left += 1
                right = block
                while pos + right < len(blob) and start + right < len(raw) and blob[pos + right] == raw[start + right]:
                    right += 1
                if left + right >= n:
                    return blob[pos - left : pos + right]
    return None


def test_shared_run_finds_what_it_should():
    held = ["x" * 10 + "".join(chr(65 + i % 26) for i in range(100))]
    assert shared_run(["....." + held[0][30:78] + "....."], held) == held[0][30:78].encode()
    assert shared_run(["....." + held[0][30:77] + "....."], held) is None
    assert shared_run([held[0][30:60], held[0][60:90]], held) is None


# ---------------------------------------------------------------------------------------------
# The corpus: held-out documents never reach the training material
# ---------------------------------------------------------------------------------------------
def test_heldout_documents_are_not_in_the_training_material(stdlib):
    train = training_texts(stdlib.corpus)
    held = {split: heldout_rows(stdlib.corpus, split) for split in ("val", "test")}
    assert held["val"] and held["test"] and train
    held_keys = {r["key"] for rows in held.values() for r in rows}
    assert not held_keys & {d["key"] for d in train}
    texts = [r["text"] for rows in held.values() for r in rows]
    assert not set(texts) & {d["text"] for d in train}
    assert shared_run([d["text"] for d in train], texts) is None
    assert not {r["key"] for r in held["val"]} & {r["key"] for r in held["test"]}
    assert json.loads((stdlib.corpus.heldout_dir / "keys.json").read_text()) == sorted(held_keys)
    for split, rows in held.items():
        assert sum(len(r["text"].encode()) for r in rows) >= corpus.EVAL_BYTES, split


def test_materialize_is_a_no_op_the_second_time(stdlib):
    folders = [stdlib.corpus.train_dir, stdlib.corpus.heldout_dir]
    before = {p: p.stat().st_mtime_ns for f in folders for p in [f, *f.iterdir()]}
    assert corpus.materialize("stdlib") == stdlib.corpus
    assert {p: p.stat().st_mtime_ns for f in folders for p in [f, *f.iterdir()]} == before


def stdlib_folders_on_this_machine() -> list[Path]:
    """Every folder named like this Python's stdlib, found by walking the filesystem (not corpus's guesses)."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    skip = " -o ".join(f"-path {p}" for p in ("/proc", "/sys", "/dev", "/run"))
    prune = ["(", *skip.split(), ")", "-prune", "-o"]
    out = subprocess.run(
        ["find", "/", *prune, "-type", "d", "-name", name, "-print"], capture_output=True, text=True, check=False
    )
    return sorted({Path(line).resolve() for line in out.stdout.splitlines()})


def test_masked_lists_every_copy_of_each_heldout_file_and_its_bytecode(stdlib):
    keys = json.loads((stdlib.corpus.heldout_dir / "keys.json").read_text())
    rels = {Path(k.removeprefix("stdlib/")) for k in keys if k.startswith("stdlib/")}
    rels |= {Path("pydoc_data/topics.py")} if any(k.startswith("topics/") for k in keys) else set()
    masked = {p.resolve() for p in stdlib.corpus.masked}
    roots = stdlib_folders_on_this_machine()
    assert corpus.stdlib_root().resolve() in roots
    copies = 0
    for root in roots:
        for rel in rels:
            for path in (root / rel, *(root / rel.parent / "__pycache__").glob(f"{rel.stem}.*.pyc")):
                if path.exists():
                    copies += 1
                    assert path.resolve() in masked, f"{path} holds held-out text but the sandbox would show it"
    assert copies >= len(rels)
    held_texts = {r["text"] for split in ("val", "test") for r in heldout_rows(stdlib.corpus, split)}
    here = corpus.stdlib_root()
    assert all(
        (here / rel).read_text(encoding="utf-8", errors="replace") in held_texts
        for rel in rels
        if rel.name != "topics.py"
    )


IMPORTS_PROBE = """
import importlib, json, sys
masked = set(json.loads(sys.argv[1]))
opened = []
def hook(event, args):
    if event == "open" and str(args[0]) in masked:
        opened.append(str(args[0]))
sys.addaudithook(hook)
for name in sys.argv[2:]:
    importlib.import_module(name)
files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
print(json.dumps(sorted(set(opened) | {f for f in files if f in masked})))
"""


def test_honest_sandboxed_code_never_opens_a_masked_file(stdlib):
    """The sandbox hides the held-out stdlib files; what an honest phase imports must not need them.
    An audit hook records every file opened while the sandbox's imports and the trainer load."""
    keys = json.loads((stdlib.corpus.heldout_dir / "keys.json").read_text())
    assert not any(k.endswith("__init__.py") for k in keys)
    masked = sorted({str(p) for p in stdlib.corpus.masked} | {str(p.resolve()) for p in stdlib.corpus.masked})
    modules = [
        *corpus.SANDBOX_IMPORTS,
        "trainer.data_sources",
        "trainer.prepare",
        "trainer.train",
        "inside.evaluate",
        "inside.loader",
    ]
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS_PROBE, json.dumps(masked), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []
    imported = corpus.imported_stdlib_files()
    assert not {k.removeprefix("stdlib/") for k in keys} & imported


# ---------------------------------------------------------------------------------------------
# Prepared folders
# ---------------------------------------------------------------------------------------------
def test_prepared_training_stream_holds_no_heldout_document(stdlib):
    prepared = loader.open_prepared(stdlib.prepared, every_token=True)
    tokens, offsets, meta = prepared.tokens, prepared.offsets, prepared.meta
    enc = scorer.load_tokenizer(stdlib.prepared / "tokenizer.json")
    starts = offsets[:-1]
    assert (np.asarray(tokens[starts]) == meta["bos_id"]).all() and offsets[-1] == len(tokens) == meta["train_tokens"]
    assert prepared.pack_buffer_docs == ds.PACK_BUFFER_DOCS  # the data program's knob, through meta.json
    train = {
        ds.fingerprint(enc.decode(tokens[offsets[i] + 1 : offsets[i + 1]].tolist())) for i in range(len(offsets) - 1)
    }
    for split in ("val", "test"):
        for text in stdlib.corpus.heldout(split):
            for piece in ds.chunk(text):
                assert ds.fingerprint(piece) not in train, split


def test_prepare_again_reuses_the_folder(stdlib, tmp_path):
    meta = stdlib.prepared / "meta.json"
    before = meta.stat().st_mtime_ns
    result = run_module("orchestrator.cli", ROOT, {"ARX_STATE_DIR": str(tmp_path)}, ["prepare", "--dataset", "stdlib"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(stdlib.prepared)
    assert meta.stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_data_program_that_trains_on_heldout_text_is_invalid(stdlib, worktree, tmp_path):
    """The sandbox keeps held-out files out of reach, but a proposal can still carry held-out text in its
    own code (an LLM may have memorised a stdlib file). Written as it is, the check of the candidate's files
    refuses it before anything runs (tests/hostile/test_hidden_leaks.py); encoded, it passes that check, and the
    leak check of train.bin after prepare refuses it."""
    import base64

    source = worktree / "trainer" / "prepare.py"
    line = "    train_docs = ds.training_documents([(kind, text) for _, kind, text in docs])\n"
    assert source.read_text().count(line) == 1
    leaked = base64.b64encode(max(stdlib.corpus.heldout("val"), key=len).encode()).decode()
    decoded = f"__import__('base64').b64decode({leaked!r}).decode()"
    source.write_text(source.read_text().replace(line, f"{line}    train_docs.append({decoded})\n"))
    spec = make_spec(worktree, tmp_path / "run", stdlib, program="data")
    result = experiment.measure(spec)
    assert result.status == "invalid" and "leaked into training" in result.reason, result
    assert not (stdlib.data_dir / "prepared" / f"stdlib-{experiment.prepared_key(spec)}").exists()
    assert not list((stdlib.data_dir / "prepared").glob("*.tmp-*")) and not (spec.run_dir / "train.log").exists()


def test_changed_data_code_gets_its_own_folder(stdlib, worktree, tmp_path):
    def key(wt):
        return experiment.prepared_key(make_spec(wt, tmp_path / "run", stdlib))

    assert stdlib.prepared.name.endswith(key(ROOT)) and key(worktree) == key(ROOT)
    edit_constant(worktree, "MIN_DOC_CHARS", "100", file="data_sources.py")
    assert key(worktree) != key(ROOT)


def test_bad_dataset_name_lists_valid_ones(tmp_path):
    result = run_module(
        "orchestrator.cli", ROOT, {"ARX_STATE_DIR": str(tmp_path)}, ["prepare", "--dataset", "wikipedia"]
    )
    assert result.returncode == 2 and "climbmix, stdlib, tinystories" in result.stderr
    with pytest.raises(corpus.UnknownDataset, match="valid: climbmix, stdlib, tinystories"):
        corpus.materialize("wikipedia")


def test_prepare_without_training_material_is_one_clear_error(tmp_path):
    result = run_module("trainer.prepare", ROOT, {}, ["--out", str(tmp_path)])
    assert (
        result.returncode == 2
        and "arx-daemon prepare" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )


# ---------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------
def test_rows_start_at_bos_and_targets_shift(stdlib):
    prepared = loader.open_prepared(stdlib.prepared)
    batches = loader.batches(prepared, batch_size=8, seq_len=64, seed=3)
    for _ in range(20):
        x, y = next(batches)
        assert x.shape == y.shape == (8, 64)
        assert (x[:, 0] == prepared.bos_id).all()
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_the_data_order_does_not_depend_on_the_batch_size(stdlib):
    """Common random numbers: for one seed, trainers that differ only in DEVICE_BATCH (or TOTAL_BATCH_TOKENS, which
    only changes how many batches a step takes) read the same rows in the same order."""
    prepared = loader.open_prepared(stdlib.prepared)

    def rows(batch_size: int, seed: int, n: int = 24) -> np.ndarray:
        stream = loader.batches(prepared, batch_size, 64, seed)
        got = np.concatenate([np.concatenate(next(stream), axis=1) for _ in range(-(-n // batch_size))])
        return got[:n]

    np.testing.assert_array_equal(rows(8, 5), rows(3, 5))
    np.testing.assert_array_equal(rows(8, 5), rows(24, 5))
    assert not np.array_equal(rows(8, 5), rows(8, 6))


def test_packing_places_whole_documents():
    # documents of lengths 3, 5, 2, 9 (BOS = 0 at each start); a row of 8 takes 5+3 or 5+2 whole
    docs = [[0, 1, 1], [0, 2, 2, 2, 2], [0, 3], [0, 4, 4, 4, 4, 4, 4, 4, 4]]
    tokens = np.array([t for d in docs for t in d])
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    prepared = loader.Prepared(tokens, offsets, {}, 5, 0, loader.KNOBS["pack_buffer_docs"][0])
    x, y = next(loader.batches(prepared, batch_size=4, seq_len=7, seed=0))
    rows = np.concatenate([x, y[:, -1:]], axis=1)
    for row in rows:
        starts = np.flatnonzero(row == 0)
        assert starts[0] == 0
        pieces = np.split(row, starts[1:])
        assert all(p.tolist() in docs for p in pieces[:-1]), row  # all but the last piece are whole


def test_shuffle_is_seeded(stdlib):
    prepared = loader.open_prepared(stdlib.prepared)
    a = next(loader.batches(prepared, 4, 32, seed=1))[0]
    b = next(loader.batches(prepared, 4, 32, seed=1))[0]
    c = next(loader.batches(prepared, 4, 32, seed=2))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------------------------------------
# Downloads against a local server of generated parquet shards
# ---------------------------------------------------------------------------------------------
def make_shard(seed: int, rows: int = 400) -> bytes:
    rng = np.random.default_rng(seed)
    words = [
        "once",
        "upon",
        "a",
        "time",
        "there",
        "was",
        "little",
        "cat",
        "who",
        "liked",
        "to",
        "run",
        "and",
        "play",
        "in",
        "the",
        "sun",
        ".",
    ]
    texts = [" ".join(rng.choice(words, size=rng.integers(20, 80))) for _ in range(rows)]
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), buf)
    return buf.getvalue()


class ShardServer:
    """Serves {name: bytes} with Range support; the first GET of each file drops mid-body."""

    def __init__(self, files: dict[str, bytes], etag: str | None = None):
        self.files, self.requests, self.dropped, self.etag = files, [], set(), etag
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[name]
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", f'"{outer.etag or hashlib.sha256(body).hexdigest()}"')
                self.end_headers()
                if name not in outer.dropped:
                    outer.dropped.add(name)
                    self.wfile.write(body[start : start + len(body) // 3])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # a dropped connection mid-file
                    return
                self.wfile.write(body[start:])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/data"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def shard_server():
    server = ShardServer({"0000.parquet": make_shard(0, rows=2500), "0001.parquet": make_shard(1, rows=600)})
    yield server
    server.close()


def test_download_resumes_after_a_dropped_connection(shard_server, tmp_path):
    dest = tmp_path / "0000.parquet"
    corpus.download(f"{shard_server.url}/0000.parquet", dest)
    assert dest.read_bytes() == shard_server.files["0000.parquet"]
    ranges = [r for name, r in shard_server.requests]
    assert ranges[0] is None and ranges[1] and ranges[1] != "bytes=0-", "second request resumes"


def test_materialize_downloads_and_splits_a_parquet_dataset(shard_server, tmp_path, monkeypatch):
    monkeypatch.setenv("ARX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ARX_DATA_BASE_URL", shard_server.url)
    found = corpus.materialize("tinystories")
    for shard in ("0000.parquet", "0001.parquet"):
        assert (tmp_path / "raw" / "tinystories" / shard).read_bytes() == shard_server.files[shard]
    assert not list(tmp_path.glob("raw/tinystories/*.part")) and found.masked == ()
    held = heldout_rows(found, "val") + heldout_rows(found, "test")
    assert held and all(r["key"].startswith("0000.parquet/") for r in held)  # the split is drawn from shard 0 only
    train = training_texts(found)
    assert not {r["key"] for r in held} & {d["key"] for d in train}
    assert not {r["text"] for r in held} & {d["text"] for d in train}
    assert shared_run([d["text"] for d in train], [r["text"] for r in held]) is None
    shard0 = pq.read_table(tmp_path / "raw" / "tinystories" / "0000.parquet").column("text").to_pylist()
    kept = {d["key"] for d in train if d["key"].startswith("0000.parquet/")}
    assert len(kept) + len(held) <= len(shard0) and len(kept) > len(shard0) // 2  # the rest of shard 0 trains
    requests = len(shard_server.requests)
    assert corpus.materialize("tinystories") == found and len(shard_server.requests) == requests  # no second download

    out = tmp_path / "prepared"
    result = run_module("trainer.prepare", ROOT, {}, ["--corpus", str(found.train_dir), "--out", str(out)])
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "meta.json").read_text())["train_tokens"] > 1000


def test_corrupt_download_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "DOWNLOAD_RETRIES", 2)
    server = ShardServer({"x.parquet": make_shard(1)}, etag="0" * 64)  # a checksum the body does not have
    server.dropped.add("x.parquet")
    try:
        with pytest.raises(corpus.DownloadError):
            corpus.download(f"{server.url}/x.parquet", tmp_path / "x.parquet")
        assert not (tmp_path / "x.parquet").exists()
    finally:
        server.close()


def test_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "DOWNLOAD_RETRIES", 2)
    with pytest.raises(corpus.DownloadError, match="are you offline"):
        corpus.download("http://127.0.0.1:9/none.parquet", tmp_path / "none.parquet")
