"""The model: causal in every layer (and the trusted scorer catches one that is not), attention scaled
by 1/sqrt(head_dim), built from config."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from conftest import tiny_texts, write_corpus, write_model_config, write_tokenizer
from orchestrator.scoring import scorer
from trainer import train


def tiny_config(**over) -> dict:
    config = train.model_config(vocab_size=97) | {
        "depth": 4,
        "model_dim": 64,
        "head_dim": 16,
        "seq_len": 32,
        "window_pattern": "SSSL",
        "short_window_frac": 0.25,
    }
    return config | over


def randomized(config: dict):
    """A model with every weight random: zero-initialised projections would hide a leak."""
    mx.random.seed(0)
    model = train.build_model(config)
    model.update(tree_map(lambda p: 0.3 * mx.random.normal(p.shape), model.parameters()))
    return model


def future_leak(model, vocab: int, seq_len: int, seed: int = 0) -> float:
    """Largest change of any logit at or before t when only the tokens after t change, over every t."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(1, seq_len))
    rows = np.repeat(x, seq_len - 1, axis=0)
    for t in range(seq_len - 1):
        rows[t, t + 1 :] = (
            x[0, t + 1 :] + rng.integers(1, vocab, size=seq_len - t - 1)
        ) % vocab  # every later token differs
    base = np.array(model(mx.array(x)).astype(mx.float32))[0]
    out = np.array(model(mx.array(rows)).astype(mx.float32))
    return max(float(np.abs(out[t, : t + 1] - base[: t + 1]).max()) for t in range(seq_len - 1))


@pytest.mark.parametrize("pattern", ["SSSL", "L", "S", "SL"])
@pytest.mark.parametrize("kv_ratio", [1, 2])
def test_every_layer_is_causal(pattern, kv_ratio):
    model = randomized(tiny_config(window_pattern=pattern, kv_head_ratio=kv_ratio))
    assert future_leak(model, 97, 32) < 1e-5
    # and each layer on its own: perturbing the future of a block's input changes no earlier output
    x = mx.random.normal((1, 32, 64))
    y = mx.concatenate([x[:, :10], mx.random.normal((1, 22, 64))], axis=1)
    for i, block in enumerate(model.blocks):
        mask = train.attention_mask(32, train.window_sizes(model.config)[i])
        ve = mx.random.normal((1, 32, 64 // kv_ratio)) if "ve_gate" in block.attn else None
        a, b = block(x, ve, mask), block(y, ve, mask)
        assert float(mx.abs(a[:, :10] - b[:, :10]).max()) < 1e-5, f"layer {i} sees the future"


class InProcessModel:
    """A `scorer.ModelProcess` around a real MLX model in this process (the sandboxed one runs inside/evaluate.py)."""

    def __init__(self, model):
        self.model = model

    def logits(self, batches):
        for batch in batches:
            yield np.array(self.model(mx.array(batch)).astype(mx.float32))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    return (
        write_tokenizer(root / "prepared"),
        write_corpus(root / "data", *tiny_texts()),
        write_model_config(root / "run", 32),
    )


def test_the_scorer_catches_a_model_that_sees_the_future(monkeypatch, held_out):
    prepared, corpus, run_dir = held_out
    model = randomized(tiny_config(vocab_size=300))  # the tiny tokenizer has 264 ids
    scores = scorer.evaluate(
        run_dir, prepared, corpus, lambda vocab: InProcessModel(model), rng=np.random.default_rng(0)
    )
    assert scores.detail["causality_max_diff"] < scorer.CAUSALITY_TOLERANCE
    monkeypatch.setattr(train, "attention_mask", lambda seq_len, window: None)  # the known MLX-port bug
    assert future_leak(model, 97, 32) > 1e-3
    for seed in range(2):
        with pytest.raises(scorer.Invalid, match="causality probe failed"):
            scorer.evaluate(
                run_dir, prepared, corpus, lambda vocab: InProcessModel(model), rng=np.random.default_rng(seed)
            )


def test_short_windows_really_limit_context():
    config = tiny_config(window_pattern="S", short_window_frac=0.25, depth=2)
    assert train.window_sizes(config) == [8, 32]  # the last layer always sees everything
    mask = np.array(train.attention_mask(32, 8))
    assert mask[20, 13] and not mask[20, 12] and not mask[20, 21]


@pytest.mark.parametrize("mask", ["band", "causal", None])
@pytest.mark.parametrize("kv_ratio", [1, 2])
@pytest.mark.parametrize("compiled", [False, True])
def test_cpu_attention_equals_mlx_fused_attention(mask, kv_ratio, compiled):
    """The CPU's written-out attention (`softmax_attention`, for speed: no max, row sums from a matmul, a gradient of
    its own) computes what MLX's own does, forward and backward, on RMS-normalised q and k as the model gives it."""
    q = train.norm(mx.random.normal((2, 4, 32, 16), key=mx.random.key(1)))
    k = train.norm(mx.random.normal((2, 4 // kv_ratio, 32, 16), key=mx.random.key(2)))
    v = mx.random.normal((2, 4 // kv_ratio, 32, 16), key=mx.random.key(3))
    dy = mx.random.normal((2, 4, 32, 16), key=mx.random.key(4))
    m = train.attention_mask(32, 8) if mask == "band" else mask

    def value_and_grads(attention):
        f = mx.value_and_grad(lambda q, k, v: (attention(q, k, v) * dy).sum(), argnums=(0, 1, 2))
        return (mx.compile(f) if compiled else f)(q, k, v)

    got = value_and_grads(lambda q, k, v: train.softmax_attention(q, k, v, 0.25, m))
    want = value_and_grads(lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=m))
    np.testing.assert_allclose(got[0].item(), want[0].item(), rtol=1e-5)
    for name, g, w in zip("qkv", got[1], want[1]):
        np.testing.assert_allclose(np.array(g), np.array(w), atol=1e-5, err_msg=f"gradient of {name}")
    y = train.softmax_attention(q, k, v, 0.25, m)
    np.testing.assert_allclose(
        np.array(y), np.array(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=m)), atol=1e-5
    )


def test_attention_scale_is_one_over_sqrt_head_dim():
    config = tiny_config(depth=2, head_dim=32)
    model = randomized(config)
    attn = model.blocks[0].attn  # layer 0 has no value embedding at depth 2
    assert "ve_gate" not in attn
    x = mx.random.normal((1, 8, 64))
    got = np.array(attn(x, None, "causal"))

    def heads(t):
        return np.array(t).reshape(1, 8, 2, 32).transpose(0, 2, 1, 3)

    def rope(t):
        return mx.fast.rope(mx.array(t), 32, traditional=False, base=config["rope_base"], scale=1.0, offset=0)

    q = np.array(train.norm(rope(heads(attn.c_q(x)))))
    k = np.array(train.norm(rope(heads(attn.c_k(x)))))
    v = heads(attn.c_v(x))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(32)
    scores = np.where(np.tril(np.ones((8, 8), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    want = np.array(attn.c_proj(mx.array((weights @ v).transpose(0, 2, 1, 3).reshape(1, 8, 64))))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_build_model_shapes_and_zero_init():
    model = train.build_model(tiny_config())
    logits = model(mx.zeros((2, 32), dtype=mx.int32))
    assert logits.shape == (2, 32, 97)
    for block in model.blocks:
        assert float(mx.abs(block.attn.c_proj.weight).max()) == 0.0
        assert float(mx.abs(block.mlp.c_proj.weight).max()) == 0.0
    assert set(model.value_embeds) == {"layer1", "layer3"}  # alternate layers, the last included
    names = [k for k, _ in tree_flatten(model.parameters())]
    assert "lm_head.weight" in names and "wte.weight" in names  # untied head
    assert float(mx.abs(logits).max()) <= model.config["logit_softcap"]


def test_the_forward_soft_caps_as_tanh_does_compiled_or_not():
    """The model process's forward (compiled with the daemon's kernels) gives cap * tanh(logits / cap)."""
    model = train.build_model(tiny_config())
    model.lm_head.weight = 40 * mx.random.normal(model.lm_head.weight.shape, key=mx.random.key(3))  # past the cap
    idx = mx.random.randint(0, 97, (4, 32), key=mx.random.key(4))
    cap = model.config["logit_softcap"]
    want = np.array(cap * mx.tanh(model.raw_logits(idx) / cap))
    assert np.abs(want).max() > 0.99 * cap  # saturated: the exp form must not overflow into NaN
    np.testing.assert_allclose(np.array(model(idx)), want, atol=1e-4)
    np.testing.assert_allclose(np.array(mx.compile(model, inputs=model.state)(idx)), want, atol=1e-4)


@pytest.mark.parametrize("cap", [15.0, 0.0])
def test_fused_capped_cross_entropy_matches_autodiff(cap):
    logits = 8 * mx.random.normal((3, 5, 97))
    logits[0, 0, :4] = mx.array([1e4, -1e4, 1e-4, 0.0])  # saturated both ways, and near zero
    targets = mx.random.randint(0, 97, (3, 5))

    def reference(z):
        capped = cap * mx.tanh(z / cap) if cap else z
        return mx.mean(mx.logsumexp(capped, axis=-1) - mx.take_along_axis(capped, targets[..., None], axis=-1)[..., 0])

    fused = train.capped_cross_entropy(cap)
    value, grad = mx.value_and_grad(lambda z: fused(z, targets).mean())(logits)
    want_value, want_grad = mx.value_and_grad(reference)(logits)
    assert abs(value.item() - want_value.item()) < 1e-5
    np.testing.assert_allclose(np.array(grad), np.array(want_grad), atol=1e-6)


def test_common_random_numbers_every_shared_parameter_starts_the_same():
    """Seed s gives every parameter that keeps its name and shape the same initial values, whatever else a change
    adds (a layer) or draws (extra random numbers before init): paired runs differ by the change, not by the init."""
    from mlx.utils import tree_flatten

    two = dict(tree_flatten(train.build_model(tiny_config(depth=2), seed=5).parameters()))
    mx.random.seed(123)
    mx.eval(mx.random.uniform(shape=(7,)))  # a change that draws before init
    three = dict(tree_flatten(train.build_model(tiny_config(depth=3), seed=5).parameters()))
    shared = [k for k in two if k in three and two[k].shape == three[k].shape]
    assert {"wte.weight", "lm_head.weight", "blocks.0.attn.c_q.weight", "blocks.1.mlp.c_fc.weight"} <= set(shared)
    random_ones = [k for k in shared if mx.abs(two[k]).max().item() > 0 and "lambdas" not in k]
    assert len(random_ones) >= 8
    for k in shared:
        assert mx.array_equal(two[k], three[k]).item(), k
    other = dict(tree_flatten(train.build_model(tiny_config(depth=2), seed=6).parameters()))
    assert not mx.array_equal(two["wte.weight"], other["wte.weight"]).item()  # another seed, other weights
