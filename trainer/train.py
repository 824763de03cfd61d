"""A small GPT trained for a fixed time budget. The model program edits this file.

    ARX_RUN_DIR=state/runs/try ARX_BUDGET_S=60 python -m trainer.train

The architecture is the autoresearch/nanochat baseline: value embeddings gated into alternate
layers, rotary positions, RMS-normalised queries and keys, parameter-free RMSNorm, ReLU^2 MLP,
logit soft-cap, zero-initialised output projections, an untied head. Attention is causal in every
layer and scaled by 1/sqrt(head_dim). Muon trains the hidden matrices, AdamW the rest; every
schedule follows the elapsed fraction of the time budget and is written into the optimizers.

Environment: ARX_RUN_DIR (outputs), ARX_PREPARED_DIR (tokenizer and token cache, made by
`arx-daemon prepare`), ARX_BUDGET_S (training seconds, default 300), ARX_DATASET (its name, for
the record), ARX_SEED (default 0), ARX_MAX_STEPS (optional: stop after this many steps, the
schedules then following steps instead of seconds, so that a test sees the same schedule on a fast
or a loaded machine; the daemon never sets it). Exit 0 on success, 3 on a non-finite loss, 2 on
bad input.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx import nn
from mlx.utils import tree_flatten, tree_map

from inside import blas
from inside import loader as data  # the trusted loader: no data-program code runs in the trainer
from inside.device import backend

GPU = backend() != "cpu"

# ---------------------------------------------------------------------------------------------
# Hyperparameters (GPU value if GPU else CPU value)
# ---------------------------------------------------------------------------------------------
DEPTH = 4 if GPU else 2  # transformer blocks
MODEL_DIM = 256 if GPU else 128  # residual width
HEAD_DIM = 128 if GPU else 32  # width of one attention head
KV_HEAD_RATIO = 1  # query heads per key/value head (grouped-query attention when > 1)
MLP_RATIO = 4  # MLP hidden width / MODEL_DIM
WINDOW_PATTERN = "SSSL"  # per layer, cycled: S = short sliding window, L = full context
SHORT_WINDOW_FRAC = 0.5  # short window as a fraction of SEQ_LEN
VE_GATE_CHANNELS = 32  # channels of the residual that gate the value embeddings
LOGIT_SOFTCAP = 15.0  # logits = cap * tanh(logits / cap)
ROPE_BASE = 10000.0

SEQ_LEN = 2048 if GPU else 256  # tokens per row
DEVICE_BATCH = 32 if GPU else 16  # rows per micro-batch
TOTAL_BATCH_TOKENS = 2**16 if GPU else 2**12  # tokens per optimizer step (gradient accumulation)

EMBEDDING_LR = 0.6  # AdamW, token and value embeddings
UNEMBEDDING_LR = 0.004  # AdamW, output head
SCALAR_LR = 0.5  # AdamW, per-layer residual scalars
MATRIX_LR = 0.04  # Muon, hidden matrices
ADAM_BETA1 = 0.8
ADAM_BETA2 = 0.95
WEIGHT_DECAY = 0.2  # Muon, decoupled, decays linearly to 0 over the budget
WARMUP_FRAC = 0.0  # LR warmup, fraction of the budget
WARMDOWN_FRAC = 0.5  # LR linear decay at the end, fraction of the budget
FINAL_LR_FRAC = 0.0  # LR at the end / peak LR
MOMENTUM_START = 0.85  # Muon momentum ramps from here ...
MOMENTUM_END = 0.95  # ... to here ...
MOMENTUM_RAMP_FRAC = 0.1  # ... over this fraction of the budget
COMPILE = True  # mx.compile the forward/backward pass (CPU: +25-30% tok/s; its C++ kernels are compiled once per
#                version of this file, in the daemon's compile phase, and reach every run as a read-only cache)
STREAMS = 1 if GPU else 2  # each micro-batch is split across this many parallel streams (CPU: one per core)
PRINT_EVERY_S = 1.0  # progress line interval (the watchdog treats silence as a stall)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def norm(x: mx.array) -> mx.array:
    return mx.fast.rms_norm(x, None, 1e-6)


def has_value_embedding(layer: int, depth: int) -> bool:
    return layer % 2 == (depth - 1) % 2


def window_sizes(config: dict) -> list[int]:
    """Attention window per layer; the last layer always sees the whole context."""
    short = max(1, int(config["seq_len"] * config["short_window_frac"]))
    pattern = config["window_pattern"]
    sizes = [short if pattern[i % len(pattern)] == "S" else config["seq_len"] for i in range(config["depth"])]
    sizes[-1] = config["seq_len"]
    return sizes


def attention_mask(seq_len: int, window: int) -> mx.array | str:
    """Causal mask, banded to `window` keys. Full windows use MLX's built-in causal mask."""
    if window >= seq_len:
        return "causal"
    i = mx.arange(seq_len)[:, None]
    j = mx.arange(seq_len)[None, :]
    return (j <= i) & (i - j < window)


def softmax_attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask) -> mx.array:
    """Attention for the CPU, written so that each [T, T] array is made in one pass and then only read by matmuls.

    On CPU, MLX's fast attention falls back to its softmax primitive (the wheel's scalar exp, without FMA), and the
    autodiff of a written-out softmax adds a max, a sum, a division and their gradients: a pass over [B, H, T, T]
    each. Here q and k are RMS-normalised, so no score exceeds `scale * head_dim`: exp(score - that) needs no max
    (a change that drops those norms must bring one back). The row sums come out of the value matmul, from a column
    of ones beside v; the gradient uses rowsum(p * dp) = rowsum(dy * y), subtracted inside a matmul the same way.
    One layer of 8 rows, forward + backward: 18 ms instead of 30 (docs/results.md). `mask`: boolean [T, T],
    "causal", or None (no mask)."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention: key/value head h // ratio serves query head h
        k, v = (mx.repeat(t, q.shape[1] // t.shape[1], axis=1) for t in (k, v))
    T, shift = q.shape[-2], scale * q.shape[-1]
    if isinstance(mask, str):  # "causal"
        mask = mx.arange(T)[None, :] <= mx.arange(T)[:, None]
    bias = mx.array(0.0) if mask is None else mx.where(mask, 0.0, -mx.inf)  # exp(-inf) = 0: a masked key weighs 0
    ones = mx.ones((*v.shape[:-1], 1), v.dtype)

    def weights(q, k):  # exp(score - shift), unnormalised. addmm writes the scores over the mask in one pass, and
        # the subtraction puts exp into a compiled kernel (a lone exp is MLX's own, scalar and without FMA)
        return mx.exp(mx.addmm(bias, q * scale, k.swapaxes(-1, -2)) - shift)

    @mx.custom_function
    def attend(q, k, v):
        out = weights(q, k) @ mx.concatenate([v, ones], -1)  # [..., :-1]: weights @ v; [..., -1:]: the row sums
        return out[..., :-1] / out[..., -1:]

    @attend.vjp
    def attend_vjp(primals, dy, y):
        q, k, v = primals
        e = weights(q, k)
        v1 = mx.concatenate([v, ones], -1)
        rows = (e @ v1)[..., -1:]
        du = dy / rows
        ds = e * (mx.concatenate([du, -(dy * y).sum(-1, keepdims=True) / rows], -1) @ v1.swapaxes(-1, -2))
        return (ds @ k) * scale, ds.swapaxes(-1, -2) @ (q * scale), e.swapaxes(-1, -2) @ du

    return attend(q, k, v)


class Attention(nn.Module):
    def __init__(self, config: dict, layer: int):
        super().__init__()
        dim, self.head_dim = config["model_dim"], config["head_dim"]
        self.n_head = dim // self.head_dim
        self.n_kv_head = self.n_head // config["kv_head_ratio"]
        self.c_q = nn.Linear(dim, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(dim, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(dim, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(self.n_head * self.head_dim, dim, bias=False)
        if has_value_embedding(layer, config["depth"]):
            self.ve_gate = nn.Linear(config["ve_gate_channels"], self.n_kv_head, bias=False)
        self.rope_base = config["rope_base"]

    def __call__(self, x: mx.array, ve: mx.array | None, mask) -> mx.array:
        B, T, _ = x.shape

        def heads(t, n):
            return t.reshape(B, T, n, self.head_dim).transpose(0, 2, 1, 3)

        q = heads(self.c_q(x), self.n_head)
        k = heads(self.c_k(x), self.n_kv_head)
        v = heads(self.c_v(x), self.n_kv_head)
        if ve is not None:
            gate = 2 * mx.sigmoid(self.ve_gate(x[..., : self.ve_gate.weight.shape[1]]))  # [B, T, kv]
            v = v + gate.transpose(0, 2, 1)[..., None] * heads(ve, self.n_kv_head)
        q = norm(mx.fast.rope(q, self.head_dim, traditional=False, base=self.rope_base, scale=1.0, offset=0))
        k = norm(mx.fast.rope(k, self.head_dim, traditional=False, base=self.rope_base, scale=1.0, offset=0))
        scale = 1.0 / math.sqrt(self.head_dim)
        if GPU:  # Metal's fused kernel
            y = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        else:
            y = softmax_attention(q, k, v, scale, mask)
        return self.c_proj(y.transpose(0, 2, 1, 3).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.c_fc = nn.Linear(config["model_dim"], config["mlp_ratio"] * config["model_dim"], bias=False)
        self.c_proj = nn.Linear(config["mlp_ratio"] * config["model_dim"], config["model_dim"], bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.c_proj(mx.square(nn.relu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: dict, layer: int):
        super().__init__()
        self.attn = Attention(config, layer)
        self.mlp = MLP(config)

    def __call__(self, x: mx.array, ve: mx.array | None, mask) -> mx.array:
        x = x + self.attn(norm(x), ve, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        object.__setattr__(
            self, "config", dict(config)
        )  # a plain attribute: an assigned dict would join the parameters
        depth, dim, vocab = config["depth"], config["model_dim"], config["vocab_size"]
        kv_dim = dim // config["kv_head_ratio"]
        self.wte = nn.Embedding(vocab, dim)
        self.value_embeds = {
            f"layer{i}": nn.Embedding(vocab, kv_dim) for i in range(depth) if has_value_embedding(i, depth)
        }
        self.blocks = [Block(config, i) for i in range(depth)]
        self.resid_lambdas = mx.ones((depth,))
        self.x0_lambdas = mx.full((depth,), 0.1)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def raw_logits(self, idx: mx.array) -> mx.array:
        """Logits before the soft-cap: training fuses the cap into its loss."""
        T = idx.shape[1]
        masks = [attention_mask(T, min(w, T)) for w in window_sizes(self.config)]
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[f"layer{i}"](idx) if f"layer{i}" in self.value_embeds else None
            x = block(x, ve, masks[i])
        return self.lm_head(norm(x))

    def __call__(self, idx: mx.array) -> mx.array:
        logits = self.raw_logits(idx)
        cap = self.config["logit_softcap"]
        return cap * capped_tanh(logits, cap) if cap else logits


def capped_tanh(logits: mx.array, cap: float) -> mx.array:
    """tanh(logits / cap), written with exp (1 - 2 / (1 + e^2u)), saturating to +-1 at any size: MLX's CPU tanh is
    the C library's, scalar (19 ns an element here), while its exp is a polynomial that the kernel cache compiles
    with FMA and vectorises (7 ns or less); the same values to 1e-6."""
    return 1 - 2 / (1 + mx.exp(logits * (2.0 / cap)))


def capped_cross_entropy(cap: float):
    """Per-token cross-entropy of cap * tanh(logits / cap), the model's soft-capped logits.

    On CPU the elementwise tanh and exp over [tokens, vocab] cost more than every matmul of a
    small model, and MLX's generic path runs them again in the backward pass. This custom VJP
    uses the same expressions as the forward, which mx.compile computes once. The cap bounds the
    logits, so exp needs no max-subtraction; tanh is `capped_tanh` (2.5x faster for the loss).
    """
    if not cap:
        return lambda logits, targets: nn.losses.cross_entropy(logits, targets)

    def parts(logits: mx.array) -> tuple[mx.array, mx.array]:
        t = capped_tanh(logits, cap)
        return t, mx.exp(cap * t)

    @mx.custom_function
    def loss(logits: mx.array, targets: mx.array) -> mx.array:
        t, e = parts(logits)
        picked = mx.take_along_axis(t, targets[..., None], axis=-1)[..., 0]
        return mx.log(e.sum(-1)) - cap * picked

    @loss.vjp
    def loss_vjp(primals, cotangent, output):
        logits, targets = primals
        t, e = parts(logits)
        onehot = mx.arange(logits.shape[-1]) == targets[..., None]
        grad = (e / e.sum(-1, keepdims=True) - onehot) * (1 - t * t) * cotangent[..., None]
        return grad, mx.zeros_like(targets)

    return loss


def param_key(seed: int, name: str) -> mx.array:
    """The random key of one parameter: seed s gives a parameter of a given name and shape the same initial values
    whatever else a change adds, removes or draws (common random numbers: a change's paired runs differ by the
    change, not by a reshuffled init)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return mx.random.key(int.from_bytes(digest[:4], "little"))


def build_model(config: dict, seed: int = 0) -> GPT:
    """The model for `config` (model_config.json), initialised as nanochat does, each parameter from its own key."""
    model = GPT(config)
    bound = math.sqrt(3) * 0.5 * config["model_dim"] ** -0.5

    def uniform(name: str, w: mx.array) -> mx.array:
        return mx.random.uniform(-bound, bound, w.shape, key=param_key(seed, name))

    model.wte.weight = mx.random.normal(model.wte.weight.shape, key=param_key(seed, "wte.weight"))
    model.lm_head.weight = 0.001 * mx.random.normal(model.lm_head.weight.shape, key=param_key(seed, "lm_head.weight"))
    for layer, emb in model.value_embeds.items():
        emb.weight = uniform(f"value_embeds.{layer}.weight", emb.weight)
    for i, block in enumerate(model.blocks):
        hidden = {"attn.c_q": block.attn.c_q, "attn.c_k": block.attn.c_k, "attn.c_v": block.attn.c_v}
        for part, lin in (hidden | {"mlp.c_fc": block.mlp.c_fc}).items():
            lin.weight = uniform(f"blocks.{i}.{part}.weight", lin.weight)
        block.attn.c_proj.weight = mx.zeros_like(block.attn.c_proj.weight)
        block.mlp.c_proj.weight = mx.zeros_like(block.mlp.c_proj.weight)
        if "ve_gate" in block.attn:
            block.attn.ve_gate.weight = mx.zeros_like(block.attn.ve_gate.weight)
    return model


# ---------------------------------------------------------------------------------------------
# Optimizer and schedules
# ---------------------------------------------------------------------------------------------
def state_value(name: str) -> property:
    """An optimizer hyperparameter kept in its state as an array: a compiled update takes the state as an input,
    so a value written between steps reaches it (a plain attribute would be frozen into the graph)."""
    return property(lambda self: self.state[name], lambda self, value: self.state.__setitem__(name, mx.array(value)))


class Muon(optim.Muon):
    """MLX's Muon with decoupled weight decay (p -= lr * wd * p, as nanochat) instead of its L2
    term, which orthogonalisation would mostly erase. Schedules write `learning_rate`,
    `momentum` and `decoupled_weight_decay`; all three live in the optimizer's state (arrays, as
    MLX keeps `learning_rate`), so the compiled update reads their values of the moment."""

    momentum = state_value("momentum")
    decoupled_weight_decay = state_value("decoupled_weight_decay")

    def __init__(self, learning_rate: float, momentum: float, weight_decay: float):
        super().__init__(learning_rate, momentum=momentum, weight_decay=0.0, nesterov=True)
        self.decoupled_weight_decay = weight_decay

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        decay = self.learning_rate.astype(parameter.dtype) * self.decoupled_weight_decay * parameter
        return super().apply_single(gradient, parameter, state) - decay


def is_matrix(path: str, p: mx.array) -> bool:
    return path.startswith("blocks.") and p.ndim == 2


def is_embedding(path: str, p: mx.array) -> bool:
    return path.startswith(("wte.", "value_embeds."))


def is_head(path: str, p: mx.array) -> bool:
    return path.startswith("lm_head.")


def build_optimizer() -> optim.MultiOptimizer:
    """Muon for hidden matrices; AdamW (bias-corrected, as in PyTorch) for embeddings, head, scalars."""

    def adam():
        return optim.AdamW(0.0, betas=[ADAM_BETA1, ADAM_BETA2], eps=1e-10, weight_decay=0.0, bias_correction=True)

    return optim.MultiOptimizer(
        [Muon(MATRIX_LR, MOMENTUM_START, WEIGHT_DECAY), adam(), adam(), adam()], [is_matrix, is_embedding, is_head]
    )


def spread_updates(optimizer: optim.Optimizer, streams: list) -> None:
    """Each parameter's update on the next of `streams`, in turn. On a CPU every stream is a thread, so the update
    (Muon's Newton-Schulz matmuls above all) runs on every core instead of one: 23 -> 17 ms a step (docs/results.md)."""
    turns = itertools.cycle(streams)
    for part in getattr(optimizer, "optimizers", [optimizer]):  # a MultiOptimizer's parts, or the optimizer

        def on_a_stream(gradient, parameter, state, apply_single=part.apply_single):
            with mx.stream(next(turns)):
                return apply_single(gradient, parameter, state)

        part.apply_single = on_a_stream


def lr_multiplier(frac: float) -> float:
    if frac < WARMUP_FRAC:
        return frac / WARMUP_FRAC
    if frac > 1 - WARMDOWN_FRAC:
        return FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * max(0.0, 1 - frac) / WARMDOWN_FRAC
    return 1.0


def schedule(frac: float) -> dict:
    """Every scheduled optimizer value at `frac` of the time budget."""
    ramp = min(frac / MOMENTUM_RAMP_FRAC, 1.0) if MOMENTUM_RAMP_FRAC > 0 else 1.0
    adam_scale = (MODEL_DIM / 768) ** -0.5  # AdamW LRs were tuned at width 768
    m = lr_multiplier(frac)
    return {
        "matrix_lr": MATRIX_LR * m,
        "embedding_lr": EMBEDDING_LR * adam_scale * m,
        "unembedding_lr": UNEMBEDDING_LR * adam_scale * m,
        "scalar_lr": SCALAR_LR * m,
        "momentum": (1 - ramp) * MOMENTUM_START + ramp * MOMENTUM_END,
        "weight_decay": WEIGHT_DECAY * (1 - frac),
    }


def apply_schedule(optimizer: optim.MultiOptimizer, frac: float) -> None:
    s = schedule(frac)
    muon, embed, head, scalar = optimizer.optimizers
    muon.learning_rate = s["matrix_lr"]
    muon.momentum = s["momentum"]
    muon.decoupled_weight_decay = s["weight_decay"]
    embed.learning_rate = s["embedding_lr"]
    head.learning_rate = s["unembedding_lr"]
    scalar.learning_rate = s["scalar_lr"]


def optimizer_values(optimizer: optim.MultiOptimizer) -> dict:
    """What the optimizers hold right now, read back from them (not from `schedule`)."""
    muon, embed, head, scalar = optimizer.optimizers
    return {
        "matrix_lr": muon.learning_rate.item(),
        "embedding_lr": embed.learning_rate.item(),
        "unembedding_lr": head.learning_rate.item(),
        "scalar_lr": scalar.learning_rate.item(),
        "momentum": float(muon.momentum),
        "weight_decay": float(muon.decoupled_weight_decay),
    }


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def make_train_step(model: GPT, optimizer: optim.Optimizer, loader, accum: int, n_streams: int):
    """One optimizer step: `accum` micro-batches, each split across `n_streams` parallel streams.

    On a 2-core CPU two streams (each with single-threaded BLAS) run the elementwise-bound work
    side by side, ~1.5x faster than one stream with two BLAS threads. The gradient is a pure
    function of the weights, compiled once and called on every stream.
    """
    token_loss = capped_cross_entropy(model.config["logit_softcap"])

    def loss_of(params, x, y):
        model.update(params)
        return token_loss(model.raw_logits(x), y).mean()

    def apply(grads: list) -> None:
        optimizer.update(model, tree_map(lambda *gs: sum(gs), *grads))

    streams = [mx.new_stream(mx.default_device()) for _ in range(n_streams)]
    if n_streams > 1:
        spread_updates(optimizer, streams)
    grad_of = mx.value_and_grad(loss_of)
    if COMPILE:  # the weights are inputs of the compiled graph, never frozen constants
        grad_of = mx.compile(grad_of)
        optimizer.init(model.trainable_parameters())  # the state's shape is fixed before the update is traced
        state = [model.state, optimizer.state]  # the optimizer's many small eager ops fused into a few kernels
        apply = mx.compile(apply, inputs=state, outputs=state)

    def train_step() -> mx.array:
        params = model.trainable_parameters()
        losses, grads = [], []
        for _ in range(accum):
            x, y = next(loader)
            for stream, xs, ys in zip(streams, np.array_split(x, n_streams), np.array_split(y, n_streams)):
                weight = len(xs) / (len(x) * accum)
                with mx.stream(stream):
                    loss, grad = grad_of(params, mx.array(xs), mx.array(ys))
                    losses.append(loss * weight)
                    grads.append(tree_map(lambda g, w=weight: g * w, grad))
        model.update(params)  # tracing leaves placeholders in the model: put the weights back
        apply(grads)
        return sum(losses)

    return train_step


def model_config(vocab_size: int) -> dict:
    return {
        "vocab_size": vocab_size,
        "depth": DEPTH,
        "model_dim": MODEL_DIM,
        "head_dim": HEAD_DIM,
        "kv_head_ratio": KV_HEAD_RATIO,
        "mlp_ratio": MLP_RATIO,
        "window_pattern": WINDOW_PATTERN,
        "short_window_frac": SHORT_WINDOW_FRAC,
        "ve_gate_channels": VE_GATE_CHANNELS,
        "logit_softcap": LOGIT_SOFTCAP,
        "rope_base": ROPE_BASE,
        "seq_len": SEQ_LEN,
    }


def peak_memory_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    return round(max(mx.get_peak_memory() / (1 << 20), rss if not GPU else 0.0), 1)


def main() -> int:
    t_launch = time.time()
    run_dir = Path(os.environ.get("ARX_RUN_DIR", "state/runs/manual"))
    budget = float(os.environ.get("ARX_BUDGET_S", "300"))
    dataset = os.environ.get("ARX_DATASET", "stdlib")
    seed = int(os.environ.get("ARX_SEED", "0"))
    folder = Path(os.environ.get("ARX_PREPARED_DIR", ""))
    compile_only = os.environ.get("ARX_COMPILE_ONLY") == "1"
    if not (folder / "meta.json").exists():
        print(
            f"error: no prepared data in ARX_PREPARED_DIR={str(folder)!r}; run: uv run arx-daemon prepare "
            f"--dataset {dataset}",
            file=sys.stderr,
        )
        return 2
    max_steps = int(os.environ.get("ARX_MAX_STEPS", "0")) or None
    run_dir.mkdir(parents=True, exist_ok=True)

    if compile_only:  # no data: one document of zeros, long enough for a row
        prepared = data.placeholder(folder, SEQ_LEN)
    else:
        prepared = data.open_prepared(folder)
    if not GPU:
        blas.use_streams(STREAMS)
    config = model_config(prepared.vocab_size)
    mx.random.seed(seed)  # for draws a change adds; the weights draw from keys of their own (`param_key`)
    model = build_model(config, seed)
    mx.eval(model.parameters())
    num_params = sum(p.size for _, p in tree_flatten(model.parameters()))
    optimizer = build_optimizer()
    accum = max(1, TOTAL_BATCH_TOKENS // (DEVICE_BATCH * SEQ_LEN))
    loader = data.batches(prepared, DEVICE_BATCH, SEQ_LEN, seed)

    train_step = make_train_step(model, optimizer, loader, accum, STREAMS)
    if compile_only:  # the daemon's compile phase then traces the evaluation's forward on this model_config.json
        t0 = time.time()
        mx.eval(train_step(), model.parameters(), optimizer.state)
        print(f"compiled the training step in {time.time() - t0:.1f}s", flush=True)
        (run_dir / "model_config.json").write_text(json.dumps(config))
        return 0

    print(
        f"model: {num_params:,} params, {config}; dataset {dataset} ({len(prepared.tokens):,} tokens); budget "
        f"{budget:g}s; grad accum {accum}",
        flush=True,
    )
    status, step, training_s, training_cpu_s, startup_s = "ok", 0, 0.0, 0.0, time.time() - t_launch
    smooth, trace, last_print, last_traced = 0.0, [], 0.0, -1.0
    while training_s < budget and step != max_steps:
        frac = step / max_steps if max_steps else training_s / budget
        apply_schedule(optimizer, frac)
        t0, cpu0 = time.time(), time.process_time()
        loss = train_step()
        mx.eval(loss, model.parameters(), optimizer.state)
        loss_value = loss.item()
        dt = time.time() - t0
        if step == 0:
            startup_s += dt  # the first step compiles; it counts as startup, not training
        else:
            training_s += dt
            training_cpu_s += time.process_time() - cpu0
        step += 1
        if not math.isfinite(loss_value):
            status = "nan"
            print(f"step {step} | loss {loss_value} | non-finite loss, stopping", flush=True)
            break
        smooth = 0.9 * smooth + 0.1 * loss_value
        if frac - last_traced >= 0.1 or step == 1 or training_s >= budget or step == max_steps:  # the last step too
            trace.append({"step": step, "frac": frac} | optimizer_values(optimizer))
            last_traced = frac
        if time.time() - last_print >= PRINT_EVERY_S:
            tok_s = (step - 1) * TOTAL_BATCH_TOKENS / training_s if training_s else 0.0
            lr = schedule(frac)["matrix_lr"]
            print(
                f"step {step} | loss {loss_value:.3f} | lr {lr:.4f} | tok/s {tok_s:,.0f} | "
                f"{training_s:.1f}/{budget:g}s",
                flush=True,
            )
            last_print = time.time()

    trained_tokens = max(0, step - 1) * TOTAL_BATCH_TOKENS
    info = {
        "status": status,
        "steps": step,
        "tokens": step * TOTAL_BATCH_TOKENS,
        "tok_per_sec": round(trained_tokens / training_s, 1) if training_s else 0.0,
        "training_seconds": round(training_s, 3),
        "training_cpu_seconds": round(training_cpu_s, 3),  # CPU time of this process's counted steps, all threads
        "startup_seconds": round(startup_s, 3),
        "peak_memory_mb": peak_memory_mb(),
        "num_params": int(num_params),
        "final_loss": round(smooth / (1 - 0.9**step), 6) if step and status == "ok" else None,
        "config": config
        | {
            "device_batch": DEVICE_BATCH,
            "total_batch_tokens": TOTAL_BATCH_TOKENS,
            "grad_accum": accum,
            "compile": COMPILE,
        },
        "schedule_trace": trace,
        "dataset": dataset,
        "seed": seed,
        "backend": backend(),
        "blas": blas.in_use(),
    }
    if status == "ok":
        mx.save_safetensors(str(run_dir / "model.safetensors"), dict(tree_flatten(model.parameters())))
        (run_dir / "model_config.json").write_text(json.dumps(config, indent=2))
    (run_dir / "train.json").write_text(json.dumps(info, indent=2))
    print(
        f"done: {step} steps, {info['tok_per_sec']:,.0f} tok/s, final loss {info['final_loss']}, "
        f"{info['peak_memory_mb']} MB peak",
        flush=True,
    )
    return 0 if status == "ok" else 3


if __name__ == "__main__":
    blas.reexec_with_openblas()
    sys.exit(main())
