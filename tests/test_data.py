"""Data: packing invariants, no leakage, idempotent prepare, downloads that resume."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, run_module
from trainer import data_sources as ds
from trainer import evaluate, prepare


def test_rows_start_at_bos_and_targets_shift(data_dir):
    tokens, offsets, meta = prepare.load_train_tokens(prepare.prepared_dir("stdlib"))
    batches = ds.batches(tokens, offsets, batch_size=8, seq_len=64, seed=3)
    for _ in range(20):
        x, y = next(batches)
        assert x.shape == y.shape == (8, 64)
        assert (x[:, 0] == meta["bos_id"]).all()
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_packing_places_whole_documents():
    # documents of lengths 3, 5, 2, 9 (BOS = 0 at each start); a row of 8 takes 5+3 or 5+2 whole
    docs = [[0, 1, 1], [0, 2, 2, 2, 2], [0, 3], [0, 4, 4, 4, 4, 4, 4, 4, 4]]
    tokens = np.array([t for d in docs for t in d])
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    x, y = next(ds.batches(tokens, offsets, batch_size=4, seq_len=7, seed=0))
    rows = np.concatenate([x, y[:, -1:]], axis=1)
    for row in rows:
        starts = np.flatnonzero(row == 0)
        assert starts[0] == 0
        pieces = np.split(row, starts[1:])
        assert all(p.tolist() in docs for p in pieces[:-1]), row  # all but the last piece are whole


def test_shuffle_is_seeded(data_dir):
    tokens, offsets, _ = prepare.load_train_tokens(prepare.prepared_dir("stdlib"))
    a = next(ds.batches(tokens, offsets, 4, 32, seed=1))[0]
    b = next(ds.batches(tokens, offsets, 4, 32, seed=1))[0]
    c = next(ds.batches(tokens, offsets, 4, 32, seed=2))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_no_val_or_test_text_in_training_data(data_dir):
    folder = prepare.prepared_dir("stdlib")
    tokens, offsets, meta = prepare.load_train_tokens(folder)
    enc = evaluate.load_tokenizer(folder / "tokenizer.json")
    train = {ds.fingerprint(enc.decode(tokens[offsets[i] + 1 : offsets[i + 1]].tolist())) for i in range(len(offsets) - 1)}
    for split in ("val", "test"):
        rows = [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]
        assert rows
        for row in rows:
            for piece in ds.chunk(row["text"]):
                assert ds.fingerprint(piece) not in train, (split, row["key"])
    val_keys = {json.loads(line)["key"] for line in (folder / "val.jsonl").read_text().splitlines()}
    test_keys = {json.loads(line)["key"] for line in (folder / "test.jsonl").read_text().splitlines()}
    assert not val_keys & test_keys


def test_prepare_is_idempotent(data_dir):
    folder = prepare.prepared_dir("stdlib")
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    result = run_module("trainer.prepare", ROOT, {}, ["--dataset", "stdlib"])
    assert result.returncode == 0 and "up to date" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before, "nothing is rebuilt or rewritten"


def test_changed_data_code_gets_its_own_folder(data_dir, worktree):
    from conftest import edit_constant

    result = run_module("trainer.prepare", worktree, {}, ["--path"])
    assert result.stdout.strip() == str(prepare.prepared_dir("stdlib"))
    edit_constant(worktree, "MIN_DOC_CHARS", "100", file="data_sources.py")
    result = run_module("trainer.prepare", worktree, {}, ["--path"])
    assert result.stdout.strip() != str(prepare.prepared_dir("stdlib"))


def test_bad_dataset_name_lists_valid_ones():
    result = run_module("trainer.prepare", ROOT, {}, ["--dataset", "wikipedia"])
    assert result.returncode == 2 and "climbmix, stdlib, tinystories" in result.stderr


# ---------------------------------------------------------------------------------------------
# Downloads against a local server of generated parquet shards
# ---------------------------------------------------------------------------------------------
def make_shard(seed: int, rows: int = 400) -> bytes:
    rng = np.random.default_rng(seed)
    words = ["once", "upon", "a", "time", "there", "was", "little", "cat", "who", "liked", "to", "run", "and", "play", "in", "the", "sun", "."]
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
    server = ShardServer({"0000.parquet": make_shard(0, rows=2500)})
    yield server
    server.close()


def test_download_resumes_after_a_dropped_connection(shard_server, tmp_path):
    dest = tmp_path / "0000.parquet"
    prepare.download(f"{shard_server.url}/0000.parquet", dest)
    assert dest.read_bytes() == shard_server.files["0000.parquet"]
    ranges = [r for name, r in shard_server.requests]
    assert ranges[0] is None and ranges[1] and ranges[1] != "bytes=0-", "second request resumes"


def test_prepare_downloads_and_builds_a_parquet_dataset(shard_server, tmp_path):
    env = {"ARX_DATA_DIR": str(tmp_path), "ARX_DATA_BASE_URL": shard_server.url}
    result = run_module("trainer.prepare", ROOT, env, ["--dataset", "tinystories"])
    assert result.returncode == 0, result.stderr
    meta = json.loads(next(tmp_path.glob("prepared/tinystories-*/meta.json")).read_text())
    assert meta["train_tokens"] > 1000 and meta["val_docs"] > 0 and meta["test_docs"] > 0
    assert (tmp_path / "raw" / "tinystories" / "0000.parquet").exists()
    assert not list(tmp_path.glob("raw/tinystories/*.part"))


def test_corrupt_download_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "DOWNLOAD_RETRIES", 2)
    server = ShardServer({"x.parquet": make_shard(1)}, etag="0" * 64)  # a checksum the body does not have
    server.dropped.add("x.parquet")
    try:
        with pytest.raises(prepare.DownloadError):
            prepare.download(f"{server.url}/x.parquet", tmp_path / "x.parquet")
        assert not (tmp_path / "x.parquet").exists()
    finally:
        server.close()


def test_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "DOWNLOAD_RETRIES", 2)
    with pytest.raises(prepare.DownloadError, match="are you offline"):
        prepare.download("http://127.0.0.1:9/none.parquet", tmp_path / "none.parquet")
