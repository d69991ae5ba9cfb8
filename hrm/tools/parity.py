"""Parity against the reference implementation's golden tensors.

    python -m hrm.tools.parity tests/golden/hrm_mini.npz           # a native golden file (any architecture)
    python -m hrm.tools.parity tests/golden/ut_mini.npz model.attention_backend=splash
    python -m hrm.tools.parity tests/golden/hf_tiny                # a transformers-format folder

tests/golden/ holds the reference's small fixtures of all five architectures and the transformers fixture; the
larger golden files come with the reference's golden release. For an .npz (format in tests/golden/README.md) the
model is built from `meta_json` alone (`arch`
and the reference's config keys, mapped by the architecture's registry entry), the reference's
parameters are imported, and we check logits (real positions), loss, accuracy, exact accuracy and every
parameter gradient for each `bp<k>` in the file (`bp0` = the architecture's own fixed horizon), then the
AdamAtan2+EMA results (`adam/...`, `adam_bp2/...`) by applying our optimiser to the gradients *stored in
the file*. Every key of the file must be checked: a golden tensor without a counterpart in our model
is a failure, never skipped. Prints a table of max errors and, last, `PARITY OK` or `PARITY FAIL` with
the worst relative error; exit code 0 only when everything is within tolerance (1e-4).

Overrides `model.<key>=<value>` (as train.py) change how the same model is computed: the attention
backend, its block sizes, the remat policy and the loss chunking. Keys that change the model (its
shape, recurrence or precision) are rejected: the reference fixes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hrm.config import Config, ConfigError, ModelConfig, load_config, validate
from hrm.convert.layouts import (
    ConversionError,
    canonical_from_native,
    canonical_to_native,
    canonical_to_ours,
    ours_to_canonical,
    unused_native,
)
from hrm.convert.params import assign_params, extract_params
from hrm.convert.reference_config import model_config_from_reference
from hrm.model import build_model, get_arch
from hrm.model.loss import finalize_metrics, lm_loss_sums
from hrm.train.optim import active_mask, adam_atan2

TOL = 1e-4
# ModelConfig keys an override may set: they change how the model is computed, not what it computes.
OVERRIDABLE = ("attention_backend", "attention_block_q", "attention_block_kv", "remat", "loss_chunk")
INPUT_KEYS = ("meta_json", "batch/", "scalar/")  # what the file gives us rather than asks us to match


def model_config_from_meta(meta: dict) -> ModelConfig:
    """ModelConfig (fp32 everywhere) from a golden file's `meta_json` (arch + reference config dict)."""
    return model_config_from_reference(meta["config"], meta.get("arch", "hrm"), strict=True,
                                       compute_dtype="float32", param_dtype="float32")


def apply_overrides(cfg: ModelConfig, overrides: list[str]) -> ModelConfig:
    """`model.<key>=<value>` overrides (coerced and validated as train.py's) for the keys in OVERRIDABLE."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("model.") or key[len("model."):] not in OVERRIDABLE:
            raise ConfigError(f"override '{item}': parity compares against the reference's fixed model; only "
                              f"{', '.join('model.' + k for k in OVERRIDABLE)} may be changed")
    parsed = load_config(None, overrides).model
    cfg = dataclasses.replace(cfg, **{k: getattr(parsed, k) for k in OVERRIDABLE
                                      if any(o.split("=", 1)[0].strip() == f"model.{k}" for o in overrides)})
    validate(Config(model=cfg))
    return cfg


def packed_batch_from_golden(z) -> dict[str, np.ndarray]:
    """The golden 1-D packed row as our [1, T] batch fields (docs/prefixlm_packing.md §2, §3)."""
    inputs = z["batch/inputs"].astype(np.int32)
    labels = z["batch/labels"].astype(np.int64)
    positions = z["batch/position_ids"].astype(np.int32)
    cu, prefix_lens = z["batch/cu_seqlens"], z["batch/prefix_lens"]
    n = int(z["scalar/numseqs"])
    T = inputs.shape[0]
    seg = np.zeros(T, np.int32)
    prefix = np.zeros(T, np.int32)
    for e in range(n):
        s, t = int(cu[e]), int(cu[e + 1])
        seg[s:t] = e + 1
        prefix[s:s + int(prefix_lens[e])] = 1
    return {"inputs": inputs[None], "positions": positions[None], "segment_ids": seg[None],
            "prefix_mask": prefix[None], "targets": np.where(labels < 0, 0, labels).astype(np.int32)[None],
            "loss_mask": (labels >= 0).astype(np.int32)[None]}


class Report:
    """Collects (check, max abs err, max rel err, ok) rows and prints the table."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, bool]] = []

    def add(self, name: str, ours, ref, rel_to_max: bool) -> None:
        ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
        if ours.shape != ref.shape:
            self.rows.append((f"{name} (shape {ours.shape} vs {ref.shape})", np.inf, np.inf, False))
            return
        abs_err = float(np.max(np.abs(ours - ref))) if ours.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        rel = abs_err / scale if scale > 0 else abs_err
        ok = (rel if rel_to_max else abs_err) <= TOL
        self.rows.append((name, abs_err, rel, ok))

    def fail(self, name: str) -> None:
        """A check that cannot be made (e.g. a golden key without counterpart): always a failure."""
        self.rows.append((name, np.inf, np.inf, False))

    def print(self) -> bool:
        width = max(len(r[0]) for r in self.rows)
        print(f"{'check':<{width}}  {'max abs err':>12}  {'max rel err':>12}  status")
        for name, a, r, ok in self.rows:
            print(f"{name:<{width}}  {a:12.3e}  {r:12.3e}  {'ok' if ok else 'FAIL'}")
        worst = max(self.rows, key=lambda r: r[2])
        ok = all(r[3] for r in self.rows)
        print(f"PARITY {'OK' if ok else 'FAIL'} (worst relative error {worst[2]:.3e} in {worst[0]}; "
              f"{len(self.rows)} checks, tolerance {TOL:g})")
        return ok


class Golden:
    """The npz plus the set of its keys already compared (every key must end up compared)."""

    def __init__(self, path: Path):
        self.z = np.load(path)
        self.checked: set[str] = set()

    def compare(self, rep: Report, prefix: str, ours: dict[str, np.ndarray]) -> None:
        """Compare ours[name] with z[prefix + name] for every golden key under `prefix` (rel. to max);
        a golden name we do not produce fails."""
        for key in sorted(k for k in self.z.files if k.startswith(prefix)):
            name = key[len(prefix):]
            self.checked.add(key)
            if name in ours:
                rep.add(key, ours[name], self.z[key], rel_to_max=True)
            else:
                rep.fail(f"{key} (no counterpart in our model)")

    def unchecked(self) -> list[str]:
        return sorted(k for k in self.z.files if k not in self.checked and not k.startswith(INPUT_KEYS))


def _ours_to_state(ours: dict, like):
    """Build a params State shaped like `like` from an {path: array} dict."""
    flat = [(path, v.replace(jnp.asarray(ours[tuple(str(p) for p in path)], v[...].dtype)))
            for path, v in nnx.to_flat_state(like)]
    return nnx.from_flat_state(flat)


def check_npz(path: Path, overrides: Optional[list[str]] = None) -> bool:
    g = Golden(path)
    z = g.z
    meta = json.loads(str(z["meta_json"]))
    cfg = apply_overrides(model_config_from_meta(meta), overrides or [])
    spec = get_arch(cfg.arch)
    model = build_model(cfg)
    rep = Report()
    tensors = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
    g.checked.update(f"param/{k}" for k in tensors)
    for name in unused_native(tensors, spec):
        rep.fail(f"param/{name} (no counterpart in our model)")
    d, nh, hd, inter = cfg.hidden_size, cfg.num_heads, cfg.resolved_head_dim, cfg.resolved_intermediate_size
    assign_params(model, canonical_to_ours(canonical_from_native(tensors, spec), d, nh, hd, inter))
    batch = {k: jnp.asarray(v) for k, v in packed_batch_from_golden(z).items()}
    real = int(z["scalar/total_seqlen"])
    print(f"{path.name}: arch={cfg.arch} ({meta.get('reference_class', spec.reference_module)}) d={d} heads={nh} "
          f"layers/stack={cfg.layers_per_stack} applications={len(spec.applications(cfg, None))} "
          f"vocab={cfg.vocab_size} T={batch['inputs'].shape[1]} backend={cfg.attention_backend}")

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    to_native = lambda tree: canonical_to_native(ours_to_canonical(extract_params(tree)), spec)  # noqa: E731

    def hidden(p, bp: Optional[int]):
        m = nnx.merge(graphdef, p, rest)
        return m.hidden(batch["inputs"], batch["positions"], batch["segment_ids"], batch["prefix_mask"], bp), m

    logits = jax.jit(lambda p: (lambda h, m: m.head(h))(*hidden(p, None)))(params)
    g.checked.add("logits")
    rep.add("logits (real positions)", logits[0, :real], z["logits"][:real], rel_to_max=False)

    for bp in meta["bp_steps"]:
        bp_arg = int(bp) or None  # bp0: the architecture's own horizon (the golden files' convention)

        def loss_fn(p, bp_arg=bp_arg):
            h, m = hidden(p, bp_arg)
            labels = (batch["targets"], batch["loss_mask"], batch["segment_ids"])
            if cfg.loss_chunk:
                from hrm.model.loss import chunked_lm_loss_sums  # the trainer's chunked head + CE

                sums = chunked_lm_loss_sums(h, m.head.kernel[...], *labels, cfg.loss_chunk)
            else:
                sums = lm_loss_sums(m.head(h), *labels)
            return sums["loss_sum"] / sums["count"], sums

        (loss, sums), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
        met = finalize_metrics(sums)
        for name, value in (("loss", loss), ("accuracy", met["accuracy"]), ("exact_accuracy", met["exact_accuracy"])):
            key = f"bp{bp}/{name}"
            if key in z:
                g.checked.add(key)
                rep.add(key, value, z[key], rel_to_max=False)
            else:
                rep.fail(f"{key} (missing from the golden file)")
        g.compare(rep, f"bp{bp}/grad/", to_native(grads))

    for prefix, bp_key in (("adam", meta.get("adam", {}).get("grads_from")), ("adam_bp2", "bp2")):
        if bp_key is None or not any(k.startswith(prefix + "/") for k in z.files):
            continue
        new_p, ema = run_adam(z, meta, cfg, params, bp_key)
        g.compare(rep, f"{prefix}/param/", to_native(new_p))
        g.compare(rep, f"{prefix}/ema/", to_native(ema))
    for key in g.unchecked():
        rep.fail(f"{key} (golden key not checked)")
    return rep.print()


def run_adam(z, meta: dict, cfg: ModelConfig, params, bp_key: str):
    """Our AdamAtan2+EMA for `steps` steps on the gradients stored under `bp_key`: (params, ema)."""
    a = meta["adam"]
    spec = get_arch(cfg.arch)
    d, nh, hd, inter = cfg.hidden_size, cfg.num_heads, cfg.resolved_head_dim, cfg.resolved_intermediate_size
    grads_native = {k[len(bp_key) + 6:]: z[k] for k in z.files if k.startswith(f"{bp_key}/grad/")}
    grads_ours = canonical_to_ours(canonical_from_native(grads_native, spec, buffers=False), d, nh, hd, inter)
    grads = _ours_to_state(grads_ours, params)
    active = active_mask(params, cfg, int(bp_key[2:]) or None)
    tx = adam_atan2(a["lr"], a["beta1"], a["beta2"], a["weight_decay"], a["ema"])

    @jax.jit
    def run(p):
        state = tx.init(p)
        for _ in range(int(a.get("steps", 2))):
            upd, state = tx.update(grads, state, p, active=active)
            p = jax.tree.map(lambda x, u: x + u, p, upd)
        return p, state.ema

    return run(params)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="a golden .npz file or a transformers-format folder (hf_tiny)")
    ap.add_argument("overrides", nargs="*", help="model.<key>=<value> (attention backend, remat, loss chunk)")
    args = ap.parse_args(argv)
    path = Path(args.path)
    if not path.exists():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    try:
        # fp32 goldens compare at full matmul precision; scoped so an in-process caller keeps its default.
        with jax.default_matmul_precision("highest"):
            if path.is_dir():
                if args.overrides:
                    raise ConfigError("overrides apply to .npz golden files only")
                from hrm.tools.parity_hf import check_hf_dir
                ok = check_hf_dir(path)
            else:
                ok = check_npz(path, args.overrides)
    except (ConfigError, ConversionError) as e:
        print(f"error: {e}", file=sys.stderr)
        print("PARITY FAIL (the golden file could not be checked)")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
