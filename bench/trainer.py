"""Benchmarks of the trainer, printed as JSON (never timed assertions in tests).

    ARX_PREPARED_DIR=... python -m bench trainer                # MLX, PyTorch eager, torch.compile, side by side
    ARX_PREPARED_DIR=... python -m bench trainer --rounds 5 --budget 60
    python -m bench trainer --matmul        # one line: backend, MLX version, fp32 matmul GFLOP/s, BLAS
    python -m bench trainer --blas 3        # the trainer on each BLAS this machine offers, alternated 3 times

The side-by-side run trains one model (train.py's config, Muon + AdamW) on the same data and the same
cores in three fresh processes per round: `mlx` (the real trainer as the daemon runs it, its kernels
compiled beforehand once, as the daemon's compile phase does: `mlx_compile_s`), `torch_eager` (the same
model in PyTorch) and `torch_compile` (that model's loss under `torch.compile`, the inductor cache fresh
for this command, so round 1 pays the cold compile). The order rotates from round to round so that a
changing load on a shared machine falls on every side alike, and ratios are taken within a round.

Per run: `tok_per_sec` over the timed steps (the first step compiles: it is start-up), `startup_s` (after
imports, to the end of the first step), `tok_per_cpu_s` (tokens per CPU-second of that process over the
timed steps, all threads: what a busy machine changes least). PyTorch is the `bench` extra
(torch==2.13.0); without it the PyTorch sides say why they did not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("mlx", "torch_eager", "torch_compile")
TORCH_MISSING = "torch is not installed: install the bench extra (pip install torch==2.13.0)"


def matmul_probe(n: int = 512, repeats: int = 20) -> dict:
    import mlx.core as mx

    from inside import blas
    from inside.device import backend

    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a @ b)
    t = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    seconds = (time.perf_counter() - t) / repeats
    gflops = round(2 * n**3 / seconds / 1e9, 1)
    return {"backend": backend(), "mlx_version": mx.__version__, "gflops": gflops, "blas": blas.in_use()}


def run_module(module: str, env: dict, args: list[str] | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env)
    if full.get("ARX_NO_FAST_BLAS") == "1":  # this process runs with OpenBLAS preloaded; such children must not
        full.pop("LD_PRELOAD", None)
    return subprocess.run(
        [sys.executable, "-m", module, *(args or [])], cwd=ROOT, env=full, capture_output=True, text=True
    )


def prepared_dir() -> str:
    folder = os.environ.get("ARX_PREPARED_DIR")
    if not folder:
        raise SystemExit("error: set ARX_PREPARED_DIR to the folder that `uv run arx-daemon prepare` prints")
    return folder


def mlx_compile(kernels: Path) -> float:
    """Seconds to fill `kernels` (a new folder) as the daemon does for new trainer code: the trainer's
    compile-only run, then the kernel cache's checks and its own compile (`python -m orchestrator.measure.kernels`,
    run as a program: the trainer never imports the daemon)."""
    started = time.time()
    stub = f"{ROOT / 'orchestrator' / 'measure' / 'jit'}:{os.environ.get('PATH', os.defpath)}"  # the compile phase's
    # g++
    with tempfile.TemporaryDirectory() as raw:
        done = run_module("trainer.train", {"ARX_RUN_DIR": raw, "ARX_COMPILE_ONLY": "1", "TMPDIR": raw, "PATH": stub})
        if done.returncode == 0:
            done = run_module("orchestrator.measure.kernels", {}, ["--publish", raw, str(kernels)])
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
    return round(time.time() - started, 2)


def mlx_side(budget: float, kernels: Path) -> dict:
    """The real trainer, as the daemon runs it, with the kernels of `mlx_compile` in its cache."""
    with tempfile.TemporaryDirectory() as run_dir:
        env = {"ARX_RUN_DIR": run_dir, "ARX_BUDGET_S": str(budget), "TMPDIR": str(kernels)}
        done = run_module("trainer.train", env)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        info = json.loads(Path(run_dir, "train.json").read_text())
    timed_tokens = info["tok_per_sec"] * info["training_seconds"]
    return {
        "tok_per_sec": info["tok_per_sec"],
        "tok_per_cpu_s": round(timed_tokens / info["training_cpu_seconds"], 1) if info["training_cpu_seconds"] else 0,
        "startup_s": info["startup_seconds"],
        "steps": info["steps"],
        "final_loss": info["final_loss"],
        "peak_memory_mb": info["peak_memory_mb"],
    }


def torch_side(side: str, budget: float, inductor_cache: Path) -> dict:
    """A PyTorch side in a fresh process (its own BLAS: no OpenBLAS preloaded), or why it cannot run."""
    if importlib.util.find_spec("torch") is None:
        return {"error": TORCH_MISSING}
    env = {"ARX_NO_FAST_BLAS": "1", "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache)}
    done = run_module("bench.trainer", env, ["--side", side, "--budget", str(budget)])
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def side_by_side(budget: float, rounds: int) -> dict:
    """Every side once per round, the order rotated each round; medians, spreads and within-round ratios."""
    prepared_dir()
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    ratios: dict[str, list[float]] = {"mlx_vs_torch_eager": [], "mlx_vs_torch_compile": []}
    with tempfile.TemporaryDirectory() as scratch:
        kernels, inductor = Path(scratch, "kernels"), Path(scratch, "inductor")
        compile_s = mlx_compile(kernels)
        for r in range(rounds):
            order = SIDES[r % len(SIDES) :] + SIDES[: r % len(SIDES)]
            this_round = {}
            for side in order:
                load = os.getloadavg()[0]
                run = mlx_side(budget, kernels) if side == "mlx" else torch_side(side, budget, inductor)
                this_round[side] = run | {"round": r + 1, "load_avg_1m": round(load, 2)}
                runs[side].append(this_round[side])
            for name, other in (("mlx_vs_torch_eager", "torch_eager"), ("mlx_vs_torch_compile", "torch_compile")):
                if "tok_per_sec" in this_round[other]:
                    ratios[name].append(this_round["mlx"]["tok_per_sec"] / this_round[other]["tok_per_sec"])
    report: dict = {"budget_s": budget, "rounds": rounds, "mlx_compile_s": compile_s, "runs": runs, "summary": {}}
    for side, found in runs.items():
        ok = [run for run in found if "tok_per_sec" in run]
        if ok:
            report["summary"][side] = {
                metric: spread([run[metric] for run in ok]) for metric in ("tok_per_sec", "tok_per_cpu_s", "startup_s")
            }
        else:
            report["summary"][side] = {"error": found[0].get("error", "no run")}
    report["summary"] |= {name: spread(values) for name, values in ratios.items() if values}
    return report


# ---------------------------------------------------------------------------------------------
# The same model in PyTorch, eager or under torch.compile (benchmark only)
# ---------------------------------------------------------------------------------------------
def torch_train(compiled: bool, budget: float) -> dict:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    from inside import loader
    from trainer import train

    t_launch = time.time()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    prepared = loader.open_prepared(Path(prepared_dir()))
    cfg = train.model_config(prepared.vocab_size)
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
            self.c_fc = tnn.Linear(D, cfg["mlp_ratio"] * D, bias=False)
            self.mlp_proj = tnn.Linear(cfg["mlp_ratio"] * D, D, bias=False)
            has_ve = train.has_value_embedding(layer, L)
            self.ve_gate = tnn.Linear(cfg["ve_gate_channels"], H, bias=False) if has_ve else None
            i, j = torch.arange(T)[:, None], torch.arange(T)[None]
            self.register_buffer("mask", (j <= i) & (i - j < windows[layer]), persistent=False)
            self.full = windows[layer] >= T

        def forward(self, x, ve):
            B = x.shape[0]
            h = rms(x)
            q, k, v = (t(h).view(B, T, H, Hd).transpose(1, 2) for t in (self.c_q, self.c_k, self.c_v))
            if ve is not None:
                gate = 2 * torch.sigmoid(self.ve_gate(h[..., : cfg["ve_gate_channels"]])).transpose(1, 2)[..., None]
                v = v + gate * ve.view(B, T, H, Hd).transpose(1, 2)
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

    def loss_of(x, y):
        return F.cross_entropy(model(x).view(-1, V), y.reshape(-1))

    step_loss = torch.compile(loss_of) if compiled else loss_of
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

    batches = loader.batches(prepared, train.DEVICE_BATCH, T, 0)
    accum = max(1, train.TOTAL_BATCH_TOKENS // (train.DEVICE_BATCH * T))
    steps, trained, cpu, startup = 0, 0.0, 0.0, 0.0
    while trained < budget:
        t0, cpu0 = time.time(), time.process_time()
        for _ in range(accum):
            x, y = (torch.from_numpy(a.astype("int64")) for a in next(batches))
            loss = step_loss(x, y) / accum
            loss.backward()
        adam.step()
        muon_step()
        model.zero_grad(set_to_none=True)
        if steps:
            trained += time.time() - t0
            cpu += time.process_time() - cpu0
        else:
            startup = time.time() - t_launch
        steps += 1
    timed_tokens = (steps - 1) * train.TOTAL_BATCH_TOKENS
    return {
        "tok_per_sec": round(timed_tokens / trained, 1),
        "tok_per_cpu_s": round(timed_tokens / cpu, 1),
        "startup_s": round(startup, 3),
        "steps": steps,
        "final_loss": round(loss.item() * accum, 4),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------
# The trainer on each BLAS this machine offers
# ---------------------------------------------------------------------------------------------
def blas_choices() -> dict[str, str | None]:
    """Every BLAS this machine offers a trainer: the system's, the wheel's, the reference."""
    from inside import blas

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
    scratch = Path(tempfile.mkdtemp(prefix="arx-bench-"))
    kernels = scratch / "kernels"
    mlx_compile(kernels)  # compiled once beforehand, as the daemon does
    for _ in range(rounds):
        for name, lib in choices.items():
            env = ({"ARX_BLAS_LIB": lib} if lib else {"ARX_NO_FAST_BLAS": "1"}) | {"TMPDIR": str(kernels)}
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
    shutil.rmtree(scratch, ignore_errors=True)
    report: dict = {"budget_s": budget, "rounds": rounds, "libraries": choices, "runs": runs}
    for metric in ("tok_per_sec", "tok_per_cpu_s"):
        report[f"median_{metric}"] = {name: sorted(r[metric] for r in rs)[len(rs) // 2] for name, rs in runs.items()}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench trainer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=30, help="training seconds per measured run (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the side-by-side comparison (default 3)")
    parser.add_argument("--matmul", action="store_true", help="only probe the backend and matmul speed")
    parser.add_argument(
        "--blas", type=int, metavar="ROUNDS", help="compare every BLAS this machine offers, alternated ROUNDS times"
    )
    parser.add_argument("--side", choices=SIDES[1:], help="(internal) run one PyTorch side in this process")
    args = parser.parse_args(argv)
    if args.budget <= 0 or args.rounds < 1:
        parser.error("--budget must be positive and --rounds at least 1")
    if args.matmul:
        print(json.dumps(matmul_probe()))
    elif args.blas:
        print(json.dumps(compare_blas(args.budget, args.blas), indent=2))
    elif args.side:
        print(json.dumps(torch_train(args.side == "torch_compile", args.budget)))
    else:
        print(json.dumps(side_by_side(args.budget, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    from inside import blas

    blas.reexec_with_openblas()
    sys.exit(main())
