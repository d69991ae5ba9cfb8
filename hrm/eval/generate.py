"""KV-cache generation engine for PrefixLM inference (docs/eval_protocol.md §1 decoding, docs/checkpoints.md §9).

Per request: the prompt (BOQ ... EOQ) is prefilled in one call with *bidirectional* attention among
its own tokens (PrefixLM, exactly as in training), then tokens are decoded one per step, each
attending to every valid cached key (a single query: causal and bidirectional coincide). Every one
of the H_cycles*(L_cycles+1) stack applications has its own cache slot (the model's
`init_cache`/`forward_cached`, docs/checkpoints.md §9).

Static shapes. Rows are right-padded: real prompt tokens sit at cache slots and positions
0..n-1, generated token j at slot/position n+j. Prompt lengths are bucketed to powers of two
(>= `min_bucket`) and the cache length S to the bucketed max of (prompt + budget), capped at
`max_context`; the batch is always `batch_size` rows (dummy rows fill a short batch). One
compilation per (prompt bucket, cache bucket, greedy/sampling).

Decoding rules (docs/eval_protocol.md §1): greedy argmax when temperature < 1e-5, else Gumbel-max on
logits / temperature (no top-k/top-p); stop at EOA (dropped from the output) or after the
request's max_new_tokens, and never beyond prompt + generated = max_context. A prompt with
>= max_context tokens is not run and returns an empty output (the reference returns the empty
string, scored invalid). Sampling noise for request r at its k-th token comes from
fold_in(fold_in(key(seed), r), k), so results do not depend on batching or padding.

Data parallel: with a `mesh`, parameters are replicated and the batch axis of inputs and KV caches
is sharded over the mesh axes ("data", "fsdp") (docs/conventions.md §6).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hrm.model.attention import cache_decode_mask

GREEDY_BELOW = 1e-5  # temperature threshold for greedy decoding (docs/eval_protocol.md §1)
BATCH_AXES = ("data", "fsdp")


def bucket(n: int, minimum: int = 16, cap: Optional[int] = None) -> int:
    """Smallest power of two >= max(n, minimum), optionally capped (static-shape buckets)."""
    b = 1 << (max(int(n), int(minimum), 1) - 1).bit_length()
    return min(b, cap) if cap is not None else b


def _pick(logits: jax.Array, keys: jax.Array, count: jax.Array, temperature: jax.Array,
          sample: bool, valid_vocab: int = 0) -> jax.Array:
    """Next token per row from logits [B, V]: argmax, or Gumbel-max on logits/T (docs/eval_protocol.md §1).

    valid_vocab > 0 masks ids >= valid_vocab: a model whose vocabulary is padded past its tokenizer's
    (e.g. to a multiple of 128) must never emit an id the tokenizer cannot decode.
    """
    logits = logits.astype(jnp.float32)
    if 0 < valid_vocab < logits.shape[-1]:
        ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
        logits = jnp.where(ids < valid_vocab, logits, -jnp.inf)
    if not sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    gumbel = jax.vmap(lambda k, c: jax.random.gumbel(jax.random.fold_in(k, c), logits.shape[-1:]))(keys, count)
    return jnp.argmax(logits / temperature + gumbel, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static (hashable) description of what is compiled: model structure, EOA id, cache dtype, mesh."""

    graphdef: Any
    eoa_id: int
    cache_dtype: str
    mesh: Optional[Mesh]
    valid_vocab: int = 0


def _to_host(x: jax.Array) -> np.ndarray:
    """The full value on every host; batch-sharded outputs span other processes' devices on multi-host."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _batch_sharding(mesh: Optional[Mesh], ndim: int, axis: int = 0) -> Optional[NamedSharding]:
    """Sharding of an array whose `axis` is the batch: over ("data", "fsdp"), the rest replicated."""
    if mesh is None:
        return None
    spec = [None] * ndim
    spec[axis] = tuple(a for a in BATCH_AXES if a in mesh.shape)
    return NamedSharding(mesh, PartitionSpec(*spec))


def _constrain(mesh: Optional[Mesh], x: jax.Array, axis: int = 0) -> jax.Array:
    sh = _batch_sharding(mesh, x.ndim, axis)
    return x if sh is None else jax.lax.with_sharding_constraint(x, sh)


def _prefill_impl(spec: _Spec, state, tokens, lengths, budgets, req_ids, seed, temperature, *,
                  S: int, sample: bool, collect: bool):
    """Prompt pass: bidirectional among each row's n real tokens (docs/checkpoints.md §9), first token picked."""
    model = nnx.merge(spec.graphdef, state)
    B, P = tokens.shape
    cache = model.init_cache(B, S, jnp.dtype(spec.cache_dtype))
    cache = jax.tree.map(lambda c: _constrain(spec.mesh, c, c.ndim - 4), cache)  # [..., B, S, N, hd]
    valid_q = jnp.arange(P)[None, :] < lengths[:, None]
    valid_k = jnp.arange(S)[None, :] < lengths[:, None]
    mask = valid_q[:, :, None] & valid_k[:, None, :]
    positions = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
    logits, cache = model.forward_cached(tokens, positions, mask, cache, jnp.zeros((B,), jnp.int32),
                                         logits_at=jnp.maximum(lengths - 1, 0))
    keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.PRNGKey(seed), r))(req_ids)
    zero = jnp.zeros((B,), jnp.int32)
    tok = _pick(logits[:, 0], keys, zero, temperature, sample, spec.valid_vocab)
    started = budgets > 0
    out = jnp.full((B, S), -1, jnp.int32).at[:, 0].set(jnp.where(started, tok, -1))
    count = started.astype(jnp.int32)
    active = started & (tok != spec.eoa_id) & (count < budgets)
    carry = {"tok": tok, "count": count, "active": active, "out": out, "cache": cache, "keys": keys}
    if collect:
        carry["logits"] = jnp.zeros((B, S, logits.shape[-1]), jnp.float32).at[:, 0].set(
            logits[:, 0].astype(jnp.float32))
    return carry


def _step_impl(spec: _Spec, state, carry, lengths, budgets, temperature, *, sample: bool, collect: bool):
    """One decode step for every row: feed the last token at slot n+count-1, pick the next one."""
    model = nnx.merge(spec.graphdef, state)
    B, S = carry["out"].shape
    count, active = carry["count"], carry["active"]
    cur = jnp.minimum(lengths + count - 1, S - 1)  # slot == position of the token being fed
    mask = cache_decode_mask(jnp.ones((B, S), bool), cur[:, None])
    logits, cache = model.forward_cached(carry["tok"][:, None], cur[:, None], mask, carry["cache"], cur)
    new = _pick(logits[:, 0], carry["keys"], count, temperature, sample, spec.valid_vocab)
    rows = jnp.arange(B)
    out = carry["out"].at[rows, count].set(jnp.where(active, new, carry["out"][rows, count]), mode="drop")
    nxt = dict(carry, tok=new, out=out, cache=cache, count=count + active.astype(jnp.int32),
               active=active & (new != spec.eoa_id) & (count + 1 < budgets))
    if collect:
        lg = carry["logits"]
        nxt["logits"] = lg.at[rows, count].set(
            jnp.where(active[:, None], logits[:, 0].astype(jnp.float32), lg[rows, count]), mode="drop")
    return nxt


def _run_impl(spec: _Spec, state, tokens, lengths, budgets, req_ids, seed, temperature, *,
              S: int, sample: bool, collect: bool):
    """Prefill then decode inside one `jax.lax.while_loop` until every row is done."""
    carry = _prefill_impl(spec, state, tokens, lengths, budgets, req_ids, seed, temperature,
                          S=S, sample=sample, collect=collect)
    step = functools.partial(_step_impl, spec, state, lengths=lengths, budgets=budgets,
                             temperature=temperature, sample=sample, collect=collect)
    carry = jax.lax.while_loop(lambda c: jnp.any(c["active"]), step, carry)
    return _finish(carry)


_prefill = jax.jit(_prefill_impl, static_argnames=("spec", "S", "sample", "collect"))
_step = jax.jit(_step_impl, static_argnames=("spec", "sample", "collect"), donate_argnames=("carry",))
_run = jax.jit(_run_impl, static_argnames=("spec", "S", "sample", "collect"))


class Generator:
    """Batched PrefixLM generation with a static KV cache (docs/checkpoints.md §9).

    Args:
      model: an HRM or Transformer (anything with `init_cache` and `forward_cached`). Weight choice
        (EMA) and dtype casting are the loader's job (`hrm.eval.model_loading`).
      eoa_id: end-of-answer id (stops a row, removed from the output); None never stops early.
      max_context: cap on prompt + generated tokens; longer prompts return [] (docs/eval_protocol.md §1).
      batch_size: rows per compiled call (rounded up to a multiple of the mesh's batch shards).
      cache_dtype: KV cache dtype (bf16 as the reference; fp32 for parity tests).
      mesh: optional mesh; the batch is sharded over ("data", "fsdp"), parameters replicated.
      loop: "while" (decode inside one `jax.lax.while_loop`) or "python" (jitted step per token).
      min_bucket: smallest prompt/cache bucket.
      valid_vocab: ids >= this are never generated (the tokenizer's size when the model's vocabulary is padded
        past it); 0 = every id of the model.
    """

    def __init__(self, model: nnx.Module, *, eoa_id: Optional[int], max_context: int, batch_size: int,
                 cache_dtype: Any = jnp.bfloat16, mesh: Optional[Mesh] = None, loop: str = "while",
                 min_bucket: int = 16, valid_vocab: int = 0):
        if loop not in ("while", "python"):
            raise ValueError(f"loop must be 'while' or 'python', got {loop!r}")
        if max_context < 2 or batch_size < 1:
            raise ValueError(f"need max_context >= 2 and batch_size >= 1, got {max_context}, {batch_size}")
        self.cfg = model.cfg
        self.eoa_id = -1 if eoa_id is None else int(eoa_id)
        self.max_context = int(max_context)
        self.cache_dtype = jnp.dtype(cache_dtype)
        self.mesh, self.loop, self.min_bucket = mesh, loop, int(min_bucket)
        shards = 1 if mesh is None else math.prod(mesh.shape.get(a, 1) for a in BATCH_AXES)
        self.batch_size = -(-int(batch_size) // shards) * shards
        self.graphdef, state = nnx.split(model)
        if mesh is not None:
            state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
        self.state = state
        # Jitted functions are module-level and keyed by this static spec, so every Generator over
        # the same model structure shares compilations.
        self._spec = _Spec(self.graphdef, self.eoa_id, self.cache_dtype.name, mesh, int(valid_vocab))

    def _batch_sharding(self, ndim: int) -> Optional[NamedSharding]:
        return _batch_sharding(self.mesh, ndim, 0)

    def _device(self, x: np.ndarray) -> jax.Array:
        sh = self._batch_sharding(x.ndim)
        return jnp.asarray(x) if sh is None else jax.device_put(x, sh)

    def _generate_batch(self, prompts: Sequence[Sequence[int]], budgets: Sequence[int], req_ids: Sequence[int],
                        temperature: float, seed: int, collect: bool) -> dict[str, np.ndarray]:
        B = self.batch_size
        n_real = len(prompts)
        lengths = np.ones(B, np.int32)
        lengths[:n_real] = [len(p) for p in prompts]
        bud = np.zeros(B, np.int32)
        bud[:n_real] = budgets
        S = min(self.max_context, bucket(int(np.max(lengths + bud)), self.min_bucket))
        P = min(bucket(int(lengths.max()), self.min_bucket), S)
        tokens = np.zeros((B, P), np.int32)
        for i, p in enumerate(prompts):
            tokens[i, :len(p)] = p
        ids = np.zeros(B, np.int32)
        ids[:n_real] = req_ids
        sample = temperature >= GREEDY_BELOW
        args = (self.state, self._device(tokens), self._device(lengths), self._device(bud), self._device(ids),
                jnp.int32(seed), jnp.float32(max(temperature, GREEDY_BELOW)))
        if self.loop == "while":
            res = _run(self._spec, *args, S=S, sample=sample, collect=collect)
        else:
            carry = _prefill(self._spec, *args, S=S, sample=sample, collect=collect)
            while bool(jnp.any(carry["active"])):
                carry = _step(self._spec, self.state, carry, args[2], args[3], args[6], sample=sample,
                              collect=collect)
            res = _finish(carry)
        return {k: _to_host(v)[:n_real] for k, v in res.items()}

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int] | int, temperature: float = 0.0,
                 seed: int = 0, *, return_logits: bool = False):
        """Generated ids per prompt (EOA removed), in input order.

        `max_new_tokens` is per request (or one int for all); each budget is also capped at
        max_context - len(prompt). Prompts with >= max_context tokens (or a zero budget) return [].
        With `return_logits=True` returns (ids, logits) where logits[i] is float32 [len(ids[i]) (+1 if
        EOA was generated), V]: the raw logits of every decoding step (for parity tests).
        """
        n = len(prompts)
        if isinstance(max_new_tokens, (int, np.integer)):
            max_new_tokens = [int(max_new_tokens)] * n
        if len(max_new_tokens) != n:
            raise ValueError(f"{len(max_new_tokens)} max_new_tokens values for {n} prompts")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt: a prompt holds at least BOQ ... EOQ (docs/prefixlm_packing.md §1)")
        budgets = [max(0, min(int(m), self.max_context - len(p))) for p, m in zip(prompts, max_new_tokens)]
        outs: list[list[int]] = [[] for _ in range(n)]
        logits: list[np.ndarray] = [np.zeros((0, self.cfg.vocab_size), np.float32) for _ in range(n)]
        todo = sorted((i for i in range(n) if budgets[i] > 0), key=lambda i: len(prompts[i]))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            res = self._generate_batch([prompts[i] for i in chunk], [budgets[i] for i in chunk], chunk,
                                       float(temperature), int(seed), return_logits)
            for row, i in enumerate(chunk):
                ids = res["out"][row, :res["count"][row]].tolist()
                if return_logits:
                    logits[i] = res["logits"][row, :len(ids)]
                if self.eoa_id in ids:
                    ids = ids[:ids.index(self.eoa_id)]
                outs[i] = ids
        return (outs, logits) if return_logits else outs


def _finish(carry: dict) -> dict:
    """The host-visible results of a finished decode carry."""
    res = {"out": carry["out"], "count": carry["count"]}
    if "logits" in carry:
        res["logits"] = carry["logits"]
    return res
