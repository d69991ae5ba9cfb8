"""Parity against the reference implementation's golden tensors.

    python -m hrm.tools.parity ../shared/golden/hrm_small.npz      # a native golden file
    python -m hrm.tools.parity ../shared/golden/hf_tiny            # a transformers-format folder

For an .npz (format in ../shared/golden/README.md) the model is built from `meta_json` alone,
the reference's parameters are imported, and we check logits (real positions), loss, accuracy,
exact accuracy and every parameter gradient for each `bp<k>` in the file, then the AdamAtan2+EMA
results (`adam/...`, `adam_bp2/...`) by applying our optimiser to the gradients *stored in the
file*. Prints a table of max errors and, last, `PARITY OK` or `PARITY FAIL` with the worst relative
error; exit code 0 only when everything is within tolerance (1e-4).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hrm.config import ModelConfig
from hrm.convert.layouts import canonical_from_native, canonical_to_native, canonical_to_ours, ours_to_canonical
from hrm.convert.params import assign_params
from hrm.model import build_model
from hrm.model.loss import finalize_metrics, lm_loss_sums
from hrm.train.optim import active_mask, adam_atan2

TOL = 1e-4


def model_config_from_meta(meta: dict) -> ModelConfig:
    """ModelConfig (fp32 everywhere) from a golden file's `meta_json` (reference config dict)."""
    c = meta["config"]
    arch = meta.get("arch", "hrm")
    return ModelConfig(
        arch=arch, vocab_size=int(c["vocab_size"]), hidden_size=int(c["hidden_size"]),
        num_heads=int(c["num_heads"]), expansion=float(c.get("expansion", 4)),
        n_layers=int(c["n_layers"]), half_layers=bool(c.get("half_layers", arch == "hrm")),
        H_cycles=int(c.get("H_cycles", 2)), L_cycles=int(c.get("L_cycles", 3)),
        rope_theta=float(c.get("rope_theta", 10000.0)), norm_eps=float(c.get("norm_eps", 1e-6)),
        max_seq_len=int(c.get("max_seq_len", 4096)), attn_type=c.get("attn_type", "prefixlm"),
        compute_dtype="float32", param_dtype="float32")


def packed_batch_from_golden(z) -> dict[str, np.ndarray]:
    """The golden 1-D packed row as our [1, T] batch fields (SPEC §4.2, §4.3)."""
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


def _to_native(ours: dict) -> dict[str, np.ndarray]:
    return canonical_to_native(ours_to_canonical(ours))


def _params_as_ours(params_state) -> dict:
    return {tuple(str(p) for p in path): np.asarray(v[...]) for path, v in nnx.to_flat_state(params_state)}


def _ours_to_state(ours: dict, like):
    """Build a params State shaped like `like` from an {path: array} dict."""
    flat = [(path, v.replace(jnp.asarray(ours[tuple(str(p) for p in path)], v[...].dtype)))
            for path, v in nnx.to_flat_state(like)]
    return nnx.from_flat_state(flat)


def check_npz(path: Path) -> bool:
    z = np.load(path)
    meta = json.loads(str(z["meta_json"]))
    cfg = model_config_from_meta(meta)
    model = build_model(cfg)
    tensors = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
    d, nh, hd, inter = cfg.hidden_size, cfg.num_heads, cfg.resolved_head_dim, cfg.resolved_intermediate_size
    assign_params(model, canonical_to_ours(canonical_from_native(tensors, cfg.arch), d, nh, hd, inter))
    batch = {k: jnp.asarray(v) for k, v in packed_batch_from_golden(z).items()}
    real = int(z["scalar/total_seqlen"])
    rep = Report()
    print(f"{path.name}: arch={cfg.arch} d={d} heads={nh} layers/stack={cfg.layers_per_stack} "
          f"H_cycles={cfg.H_cycles} L_cycles={cfg.L_cycles} vocab={cfg.vocab_size} T={batch['inputs'].shape[1]}")

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def forward(p, bp: Optional[int]):
        m = nnx.merge(graphdef, p, rest)
        return m(batch["inputs"], batch["positions"], batch["segment_ids"], batch["prefix_mask"], bp)

    logits = jax.jit(forward, static_argnums=1)(params, None)
    rep.add("logits (real positions)", logits[0, :real], z["logits"][:real], rel_to_max=False)

    for bp in meta["bp_steps"]:
        bp_arg = None if (cfg.arch != "hrm" or bp == 0) else int(bp)

        def loss_fn(p, bp_arg=bp_arg):
            sums = lm_loss_sums(forward(p, bp_arg), batch["targets"], batch["loss_mask"], batch["segment_ids"])
            return sums["loss_sum"] / sums["count"], sums

        (loss, sums), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
        met = finalize_metrics(sums)
        rep.add(f"bp{bp}/loss", loss, z[f"bp{bp}/loss"], rel_to_max=False)
        rep.add(f"bp{bp}/accuracy", met["accuracy"], z[f"bp{bp}/accuracy"], rel_to_max=False)
        rep.add(f"bp{bp}/exact_accuracy", met["exact_accuracy"], z[f"bp{bp}/exact_accuracy"], rel_to_max=False)
        ours_g = _to_native(_params_as_ours(grads))
        for name, g in sorted(ours_g.items()):
            key = f"bp{bp}/grad/{name}"
            if key in z:
                rep.add(key, g, z[key], rel_to_max=True)

    for prefix, bp_key in (("adam", meta.get("adam", {}).get("grads_from")), ("adam_bp2", "bp2")):
        if bp_key is None or not any(k.startswith(prefix + "/param/") for k in z.files):
            continue
        check_adam(z, meta, cfg, params, prefix, bp_key, rep)
    return rep.print()


def check_adam(z, meta: dict, cfg: ModelConfig, params, prefix: str, bp_key: str, rep: Report) -> None:
    """Apply our AdamAtan2+EMA for `steps` steps to the gradients stored under `bp_key` and compare."""
    a = meta["adam"]
    d, nh, hd, inter = cfg.hidden_size, cfg.num_heads, cfg.resolved_head_dim, cfg.resolved_intermediate_size
    grads_native = {k[len(bp_key) + 6:]: z[k] for k in z.files if k.startswith(f"{bp_key}/grad/")}
    if cfg.arch == "hrm":
        grads_native["model.zL_init"] = np.zeros(cfg.hidden_size, np.float32)
    grads_ours = canonical_to_ours(canonical_from_native(grads_native, cfg.arch), d, nh, hd, inter)
    grads_ours.pop(("zL_init",), None)
    grads = _ours_to_state(grads_ours, params)
    bp = int(bp_key[2:]) if bp_key[2:] not in ("", "0") else None
    active = active_mask(params, cfg, bp if cfg.arch == "hrm" else None)
    tx = adam_atan2(a["lr"], a["beta1"], a["beta2"], a["weight_decay"], a["ema"])

    @jax.jit
    def run(p):
        state = tx.init(p)
        for _ in range(int(a.get("steps", 2))):
            upd, state = tx.update(grads, state, p, active=active)
            p = jax.tree.map(lambda x, u: x + u, p, upd)
        return p, state.ema

    new_p, ema = run(params)
    for what, tree in (("param", new_p), ("ema", ema)):
        for name, v in sorted(_to_native(_params_as_ours(tree)).items()):
            key = f"{prefix}/{what}/{name}"
            if key in z:
                rep.add(key, v, z[key], rel_to_max=True)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="a golden .npz file or a transformers-format folder (hf_tiny)")
    args = ap.parse_args(argv)
    path = Path(args.path)
    if not path.exists():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    jax.config.update("jax_default_matmul_precision", "highest")
    if path.is_dir():
        from hrm.tools.parity_hf import check_hf_dir
        ok = check_hf_dir(path)
    else:
        ok = check_npz(path)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
