"""Benchmarks of the trainer, printed as JSON (never timed assertions in tests).

    ARX_PREPARED_DIR=... python -m trainer.bench   # MLX with and without OpenBLAS, PyTorch side by side
    python -m trainer.bench --budget 60     # longer runs
    python -m trainer.bench --matmul        # one line: backend, MLX version, fp32 matmul GFLOP/s, BLAS
    python -m trainer.bench --blas 3        # the trainer on each BLAS this machine offers, alternated 3 times

The PyTorch reference is the same model (same config, same data, Muon + AdamW) in eager mode on
the same cores; install it with `pip install torch==2.13.0` (a benchmark-only extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 300  # the evaluation-cost target is a fraction of the default training budget


def matmul_probe(n: int = 512, repeats: int = 20) -> dict:
    import mlx.core as mx

    from . import blas, prepare

    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a @ b)
    t = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    seconds = (time.perf_counter() - t) / repeats
    gflops = round(2 * n**3 / seconds / 1e9, 1)
    return {"backend": prepare.backend(), "mlx_version": mx.__version__, "gflops": gflops, "blas": blas.in_use()}


def run_module(module: str, env: dict, args: list[str] | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env)
    if (
        full.get("ARX_NO_FAST_BLAS") == "1"
    ):  # this process was started with OpenBLAS preloaded; its children must not inherit it
        full.pop("LD_PRELOAD", None)
    return subprocess.run(
        [sys.executable, "-m", module, *(args or [])], cwd=ROOT, env=full, capture_output=True, text=True
    )


def mlx_run(budget: float, fast_blas: bool) -> dict:
    """The real trainer, as the daemon runs it (the sealed evaluation's cost: `python -m orchestrator.bench --eval`)."""
    if not os.environ.get("ARX_PREPARED_DIR"):
        raise SystemExit(
            "error: set ARX_PREPARED_DIR to the folder `uv run arx-daemon prepare --dataset stdlib` prints"
        )
    with tempfile.TemporaryDirectory() as run_dir:
        env = {"ARX_RUN_DIR": run_dir, "ARX_BUDGET_S": str(budget)} | ({} if fast_blas else {"ARX_NO_FAST_BLAS": "1"})
        train = run_module("trainer.train", env)
        if train.returncode:
            raise RuntimeError(train.stderr[-2000:])
        info = json.loads(Path(run_dir, "train.json").read_text())
        probe = json.loads(run_module("trainer.bench", env, ["--matmul"]).stdout.strip().splitlines()[-1])
        return {
            k: info[k]
            for k in ("tok_per_sec", "startup_seconds", "peak_memory_mb", "steps", "num_params", "final_loss")
        } | {"matmul_gflops": probe["gflops"], "blas": probe["blas"]}


def blas_choices() -> dict[str, str | None]:
    """Every BLAS this machine offers a trainer: the system's, the wheel's, the reference."""
    from . import blas

    found: dict[str, str | None] = {}
    system = [p for p in blas.SYSTEM if os.path.exists(p)]
    if system:
        found["system"] = system[0]
    try:
        found[blas.WHEEL] = blas.unprefixed_wheel()[0]
    except blas.Unavailable:
        pass
    return found | {"reference": None}


def compare_blas(budget: float, rounds: int) -> dict:
    """The default trainer on each BLAS in turn, `rounds` times, alternated so that a changing
    load on the machine falls on each alike. tok/s is wall-clock; tok per CPU-second (the trainer's
    whole process, start-up included) is what a busy machine changes least."""
    choices = blas_choices()
    runs: dict[str, list[dict]] = {name: [] for name in choices}
    for _ in range(rounds):
        for name, lib in choices.items():
            env = {"ARX_BLAS_LIB": lib} if lib else {"ARX_NO_FAST_BLAS": "1"}
            with tempfile.TemporaryDirectory() as run_dir:
                load = os.getloadavg()[0]
                before = os.times()
                done = run_module("trainer.train", env | {"ARX_RUN_DIR": run_dir, "ARX_BUDGET_S": str(budget)})
                after = os.times()
                if done.returncode:
                    raise RuntimeError(done.stderr[-2000:])
                info = json.loads(Path(run_dir, "train.json").read_text())
            cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
            run = {
                "tok_per_sec": info["tok_per_sec"],
                "tok_per_cpu_s": round(info["tokens"] / cpu, 1),
                "steps": info["steps"],
            }
            runs[name].append(run | {"load_avg_1m": round(load, 2)})
    report: dict = {"budget_s": budget, "rounds": rounds, "libraries": choices, "runs": runs}
    for metric in ("tok_per_sec", "tok_per_cpu_s"):
        report[f"median_{metric}"] = {name: sorted(r[metric] for r in rs)[len(rs) // 2] for name, rs in runs.items()}
    return report


# ---------------------------------------------------------------------------------------------
# The same model in PyTorch eager (benchmark only)
# ---------------------------------------------------------------------------------------------
def torch_run(budget: float) -> dict:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    from . import data_sources, prepare, train

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    tokens, offsets, meta = prepare.load_train_tokens(prepare.prepared_dir(os.environ.get("ARX_DATASET", "stdlib")))
    cfg = train.model_config(meta["vocab_size"])
    V, D, L, T, Hd = cfg["vocab_size"], cfg["model_dim"], cfg["depth"], cfg["seq_len"], cfg["head_dim"]
    H = D // Hd
    windows = train.window_sizes(cfg)

    def rms(x):
        return F.rms_norm(x, (x.shape[-1],), eps=1e-6)

    inv_freq = cfg["rope_base"] ** (-torch.arange(0, Hd // 2, dtype=torch.float32) / (Hd // 2))
    angles = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None]
    cos, sin = angles.cos(), angles.sin()

    def rope(x):
        x1, x2 = x[..., : Hd // 2], x[..., Hd // 2 :]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    class Block(tnn.Module):
        def __init__(self, layer):
            super().__init__()
            self.c_q, self.c_k, self.c_v, self.c_proj = (tnn.Linear(D, D, bias=False) for _ in range(4))
            self.c_fc, self.mlp_proj = (
                tnn.Linear(D, cfg["mlp_ratio"] * D, bias=False),
                tnn.Linear(cfg["mlp_ratio"] * D, D, bias=False),
            )
            self.ve_gate = (
                tnn.Linear(cfg["ve_gate_channels"], H, bias=False) if train.has_value_embedding(layer, L) else None
            )
            i, j = torch.arange(T)[:, None], torch.arange(T)[None]
            self.register_buffer("mask", (j <= i) & (i - j < windows[layer]), persistent=False)
            self.full = windows[layer] >= T

        def forward(self, x, ve):
            B = x.shape[0]
            h = rms(x)
            q, k, v = (t(h).view(B, T, H, Hd).transpose(1, 2) for t in (self.c_q, self.c_k, self.c_v))
            if ve is not None:
                v = v + 2 * torch.sigmoid(self.ve_gate(h[..., : cfg["ve_gate_channels"]])).transpose(1, 2)[
                    ..., None
                ] * ve.view(B, T, H, Hd).transpose(1, 2)
            q, k = rms(rope(q)), rms(rope(k))
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=self.full, attn_mask=None if self.full else self.mask, scale=1 / math.sqrt(Hd)
            )
            x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, D))
            return x + self.mlp_proj(F.relu(self.c_fc(rms(x))).square())

    class GPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wte = tnn.Embedding(V, D)
            self.ve = tnn.ModuleDict({str(i): tnn.Embedding(V, D) for i in range(L) if train.has_value_embedding(i, L)})
            self.blocks = tnn.ModuleList(Block(i) for i in range(L))
            self.resid = tnn.Parameter(torch.ones(L))
            self.x0 = tnn.Parameter(torch.full((L,), 0.1))
            self.lm_head = tnn.Linear(D, V, bias=False)

        def forward(self, idx):
            x = x0 = rms(self.wte(idx))
            for i, block in enumerate(self.blocks):
                x = self.resid[i] * x + self.x0[i] * x0
                x = block(x, self.ve[str(i)](idx) if str(i) in self.ve else None)
            logits = self.lm_head(rms(x))
            cap = cfg["logit_softcap"]
            return cap * torch.tanh(logits / cap) if cap else logits

    model = GPT()
    matrices = [p for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2]
    others = [p for n, p in model.named_parameters() if not (n.startswith("blocks.") and p.ndim == 2)]
    adam = torch.optim.AdamW(others, lr=1e-3, betas=(train.ADAM_BETA1, train.ADAM_BETA2), eps=1e-10, weight_decay=0.0)
    momentum = [torch.zeros_like(p) for p in matrices]

    @torch.no_grad()
    def muon_step(lr=train.MATRIX_LR, mu=train.MOMENTUM_END):
        for p, buf in zip(matrices, momentum):
            buf.mul_(mu).add_(p.grad, alpha=1 - mu)
            X = p.grad * (1 - mu) + buf * mu
            X = X / (X.norm() + 1e-7)
            transposed = X.shape[0] > X.shape[1]
            X = X.T if transposed else X
            for _ in range(5):
                A = X @ X.T
                X = 3.4445 * X + (-4.7750 * A + 2.0315 * A @ A) @ X
            p.add_(X.T if transposed else X, alpha=-lr)

    loader = data_sources.batches(tokens, offsets, train.DEVICE_BATCH, T, 0)
    accum = max(1, train.TOTAL_BATCH_TOKENS // (train.DEVICE_BATCH * T))
    steps, trained, t_start = 0, 0.0, time.time()
    while trained < budget:
        t0 = time.time()
        for _ in range(accum):
            x, y = (torch.from_numpy(a.astype("int64")) for a in next(loader))
            loss = F.cross_entropy(model(x).view(-1, V), y.reshape(-1)) / accum
            loss.backward()
        adam.step()
        muon_step()
        model.zero_grad(set_to_none=True)
        if steps:
            trained += time.time() - t0
        steps += 1
    return {
        "tok_per_sec": round((steps - 1) * train.TOTAL_BATCH_TOKENS / trained, 1),
        "steps": steps,
        "final_loss": round(loss.item() * accum, 4),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_seconds": round(time.time() - t_start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=30, help="training seconds per measured run (default 30)")
    parser.add_argument("--matmul", action="store_true", help="only probe the backend and matmul speed")
    parser.add_argument(
        "--blas", type=int, metavar="ROUNDS", help="compare every BLAS this machine offers, alternated ROUNDS times"
    )
    parser.add_argument(
        "--torch-only", action="store_true", help="(internal) run the PyTorch reference in this process"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = parser.parse_args(argv)
    if args.matmul:
        print(json.dumps(matmul_probe()))
        return 0
    if args.blas:
        print(json.dumps(compare_blas(args.budget, args.blas), indent=2))
        return 0
    if args.torch_only:
        print(json.dumps(torch_run(args.budget)))
        return 0
    report = {
        "budget_s": args.budget,
        "mlx_openblas": mlx_run(args.budget, fast_blas=True),
        "mlx_reference_blas": mlx_run(args.budget, fast_blas=False),
    }
    if not args.no_torch:
        done = run_module(
            "trainer.bench", {"ARX_NO_FAST_BLAS": "1"}, ["--torch-only", "--budget", str(args.budget)]
        )  # torch brings its own BLAS
        if done.returncode == 0:
            report["torch_eager"] = json.loads(done.stdout.strip().splitlines()[-1])
            report["mlx_vs_torch"] = round(
                report["mlx_openblas"]["tok_per_sec"] / report["torch_eager"]["tok_per_sec"], 3
            )
        else:
            report["torch_eager"] = {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    from . import blas

    blas.reexec_with_openblas()
    sys.exit(main())
