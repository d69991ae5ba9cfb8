"""KV-cache generation engine (docs/eval_protocol.md §1, docs/checkpoints.md §9): cached decoding == full PrefixLM
forward, batching and padding invariance, over-long prompts, EOA stop, seeded sampling, data-parallel mesh, model
loading."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrm.config import MeshConfig, ModelConfig
from hrm.eval.generate import Generator, bucket
from hrm.mesh import make_mesh
from hrm.model import build_model

CTX = 48


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(vocab_size=256, hidden_size=64, num_heads=2, n_layers=4, max_seq_len=128,
                      compute_dtype="float32")
    return build_model(cfg, seed=1)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    return [rng.integers(12, 256, size=n).tolist() for n in (5, 17, 3, 9, 12)]


def _gen(model, **kw):
    """A float32 generator; min_bucket 32 keeps every test prompt in one shape bucket (fewer compiles)."""
    args = dict(eoa_id=None, max_context=CTX, batch_size=8, cache_dtype=jnp.float32, min_bucket=32)
    args.update(kw)
    return Generator(model, **args)


def _full_logits(model, prompts, outs):
    """Per row: logits of one full forward over prompt + out[:-1] with the prompt as the PrefixLM prefix
    (rows right-padded into one batch; padding is segment 0)."""
    seqs = [p + o[:-1] for p, o in zip(prompts, outs)]
    T = max(map(len, seqs))
    ids, seg, prefix = (np.zeros((len(seqs), T), np.int32) for _ in range(3))
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, :len(s)], seg[i, :len(s)], prefix[i, :len(p)] = s, 1, 1
    pos = np.broadcast_to(np.arange(T, dtype=np.int32), ids.shape)
    out = np.asarray(jax.jit(model.__call__)(*(jnp.asarray(a) for a in (ids, pos, seg, prefix))))
    return [out[i, len(p) - 1:len(s)] for i, (p, s) in enumerate(zip(prompts, seqs))]


def test_bucket():
    assert [bucket(n) for n in (0, 1, 16, 17, 33, 64)] == [16, 16, 16, 32, 64, 64]
    assert bucket(100, cap=96) == 96


@pytest.mark.parametrize("arch", ["hrm", "transformer"])
def test_cached_decoding_matches_full_forward(arch, model, prompts):
    if arch == "transformer":
        model = build_model(ModelConfig(arch="transformer", vocab_size=256, hidden_size=64, num_heads=2, n_layers=2,
                                        compute_dtype="float32"), seed=2)
    gen = _gen(model)
    outs, logits = gen.generate(prompts, 10, return_logits=True)
    for out, lg, ref in zip(outs, logits, _full_logits(model, prompts, outs)):
        assert len(out) == 10
        np.testing.assert_allclose(lg, ref, atol=1e-5, rtol=0)
        assert (ref.argmax(-1) == np.array(out)).all()


def test_batching_and_padding_do_not_change_results(model, prompts):
    # min_bucket 16: batched and single calls use different prompt/cache buckets and batch sizes.
    batched, blog = _gen(model, batch_size=3, min_bucket=16).generate(prompts, [4, 9, 6, 12, 3], return_logits=True)
    single = _gen(model, batch_size=1, min_bucket=16)
    for i, p in enumerate(prompts):
        alone, alog = single.generate([p], [4, 9, 6, 12, 3][i], return_logits=True)
        assert alone[0] == batched[i]
        np.testing.assert_allclose(alog[0], blog[i], atol=1e-5, rtol=0)
    assert [len(o) for o in batched] == [4, 9, 6, 12, 3]


def test_python_loop_equals_while_loop(model, prompts):
    a = _gen(model, loop="while").generate(prompts, 7)
    b = _gen(model, loop="python").generate(prompts, 7)
    assert a == b


def test_overlong_prompts_and_context_cap(model):
    gen = _gen(model, max_context=16, batch_size=8)
    p16, p15, p12 = list(range(20, 36)), list(range(20, 35)), list(range(20, 32))
    outs = gen.generate([p16, p15, p12, list(range(20, 60))], 100)
    # >= max_context: not run, empty (docs/eval_protocol.md §1); otherwise prompt + generated <= max_context.
    assert outs[0] == [] and outs[3] == []
    assert len(outs[1]) == 1 and len(outs[2]) == 4
    assert gen.generate([p12], 0) == [[]]
    with pytest.raises(ValueError):
        gen.generate([[]], 3)


def test_stops_at_eoa_and_drops_it(model, prompts):
    free = _gen(model).generate(prompts, 12)
    eoa = free[1][3]
    stopped = _gen(model, eoa_id=eoa).generate(prompts, 12)
    for f, s in zip(free, stopped):
        expect = f[:f.index(eoa)] if eoa in f else f
        assert s == expect
    assert len(stopped[1]) <= 3


def test_valid_vocab_never_emits_padded_ids(model, prompts):
    """A model whose vocabulary is padded past the tokenizer's never emits an id the tokenizer cannot decode."""
    free = _gen(model).generate(prompts, 12)
    limit = min(min(o) for o in free if o)  # every free-running token sits at or above this id
    assert limit > 0
    for temperature in (0.0, 1.0):
        outs = _gen(model, valid_vocab=limit).generate(prompts, 12, temperature=temperature, seed=0)
        assert all(o and max(o) < limit for o in outs), outs


def test_sampling_is_seeded_and_batch_independent(model, prompts):
    gen = _gen(model)
    a = gen.generate(prompts, 8, temperature=1.0, seed=3)
    assert a == gen.generate(prompts, 8, temperature=1.0, seed=3)
    assert a != gen.generate(prompts, 8, temperature=1.0, seed=4)
    assert a != gen.generate(prompts, 8, temperature=0.0)
    assert a == _gen(model, batch_size=2).generate(prompts, 8, temperature=1.0, seed=3)


def test_mesh_data_parallel_equals_single_device(model, prompts):
    mesh = make_mesh(MeshConfig(data=4, fsdp=2, tensor=1))
    gen = _gen(model, batch_size=6, mesh=mesh)
    assert gen.batch_size == 8
    outs, logits = gen.generate(prompts, 6, return_logits=True)
    ref, ref_logits = _gen(model).generate(prompts, 6, return_logits=True)
    assert outs == ref
    for a, b in zip(logits, ref_logits):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def _bf16_copy(model):
    """The model with bf16 weights and compute, built the way eval loads a checkpoint (`model_from_flat`)."""
    import dataclasses

    from flax import nnx

    from hrm.convert.ckpt_io import flatten, model_from_flat

    cfg = dataclasses.replace(model.cfg, compute_dtype="bfloat16", param_dtype="bfloat16")
    params = flatten(nnx.state(model, nnx.Param).to_pure_dict())
    buffers = flatten(nnx.state(model, nnx.Not(nnx.Param)).to_pure_dict())
    return model_from_flat(cfg, params, buffers, dtype=jnp.bfloat16)


def test_bf16_greedy_decoding_tracks_fp32(model):
    """Eval's default (bf16 weights, compute and KV cache, docs/eval_protocol.md §1) against the fp32 full forward,
    teacher-forced on the bf16 tokens: 8 prompts x 16 greedy tokens.

    Free-running token agreement is the wrong measure: random-init logits have near-ties (top-2 margins down to
    0.002 here), one flipped tie changes every later token, and a correct bf16 engine matched only 91-103 of 128
    tokens over three random models. Measured instead, per generated step (HRM seeds 1 and 5, a transformer;
    the released-format hf_tiny checkpoint gives the same picture): max |bf16 logit - fp32 logit| 0.030-0.052 at
    a logit scale of about 4.5, and the bf16 token equals the fp32 argmax at 123-125 of 128 steps, every miss a
    near-tie. The bounds below allow 2x the measured logit error and 5 more misses; a cache/position/mask bug
    or a wrong dtype path moves logits by O(1) and fails both.
    """
    rng = np.random.default_rng(0)
    prompts = [rng.integers(12, 256, size=n).tolist() for n in (5, 17, 3, 9, 12, 20, 7, 30)]
    outs, logits = Generator(_bf16_copy(model), eoa_id=None, max_context=64, batch_size=8,
                             min_bucket=32).generate(prompts, 16, return_logits=True)
    ref = _full_logits(model, prompts, outs)
    err = max(float(np.abs(lg - r).max()) for lg, r in zip(logits, ref))
    assert err <= 0.1, err
    agree = sum(int((r.argmax(-1) == np.array(o)).sum()) for r, o in zip(ref, outs))
    assert agree >= 118, agree
    for r, o in zip(ref, outs):
        regret = r.max(-1) - r[np.arange(len(o)), o]   # fp32 logit lost by the bf16 choice: only near-ties
        assert float(regret.max()) <= 2 * err


def test_load_generator_random_init(tmp_path, repo_root):
    from hrm.data.tokenizer import train_sentencepiece
    from hrm.eval.model_loading import load_generator, size_label

    tok_path = tmp_path / "tok.model"
    train_sentencepiece([f"what is {i} plus {i + 1}? it is {2 * i + 1}." for i in range(300)], tok_path,
                        vocab_size=300)
    args = types.SimpleNamespace(tokenizer=str(tok_path), batch_size=2, dtype="float32", max_context=64)
    gen, tok, size = load_generator(f"random:{repo_root / 'configs/tiny.yaml'}", args)
    assert size is None and gen.eoa_id == tok.special.eoa and gen.max_context == 64
    outs = gen.generate([tok.encode_instruction("what is 1 plus 2?")], 5)
    assert len(outs) == 1 and len(outs[0]) <= 5
    assert size_label(ModelConfig(hidden_size=1536, num_heads=12, n_layers=32)) == "XL"
    assert jax.device_count() == 8


def test_generate_cli_uses_the_checkpoint_eval_dtype(tmp_path, repo_root, capsys, monkeypatch):
    """`python -m hrm.tools.generate`: raw ids in and out; dtype from the config's eval.dtype (tiny: float32)."""
    import hrm.eval.model_loading as model_loading
    from hrm.data.tokenizer import train_sentencepiece
    from hrm.tools.generate import main

    tok_path = tmp_path / "tok.model"
    train_sentencepiece([f"what is {i} plus {i + 1}?" for i in range(300)], tok_path, vocab_size=300)
    seen = {}
    real = model_loading.load_generator

    def spy(checkpoint, args):
        seen["dtype"] = args.dtype
        return real(checkpoint, args)

    monkeypatch.setattr(model_loading, "load_generator", spy)
    assert main(["--checkpoint", f"random:{repo_root / 'configs/tiny.yaml'}", "--ids", "6,8,100,7",
                 "--max_new_tokens", "3", "--tokenizer", str(tok_path), "--batch_size", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert seen["dtype"] == "float32" and out[0] == "### ids [6, 8, 100, 7]"
    ids = json.loads(out[1])
    assert len(ids) <= 3 and all(isinstance(i, int) for i in ids)
