"""Training-time input pipeline on Grain: prepared ArrayRecord shards → host-local packed PrefixLM batches.

    it = make_train_iterator(data_dir, seq_len=256, global_batch_rows=16, seed=0)
    batch = next(it)           # dict of int32 [rows_per_host, seq_len]: inputs, targets, loss_mask, segment_ids,
                               # positions, prefix_mask (SPEC §4.2–4.4 contract)
    state = it.get_state(); it.set_state(state)   # JSON-able; grain.checkpoint.CheckpointSave/Restore work too
    arrays = to_global(batch, mesh, P(("data", "fsdp")))

Batch k is a pure function of (seed, k, data): a grain `MapDataset` indexed by step wraps `PackedBatchSource`, whose
element k is built from the global packing plan (hrm/data/packing.py) restricted to this host's rows. The state is just
the step, so restore is bit-exact, independent of `worker_count` and of the number of hosts (the global batch of a step
is the same for any process_count dividing `global_batch_rows`). Grain's FirstFitPackIterDataset packs each host's
stream independently, which would make the global batch depend on the host count, hence the own packer.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

import grain
from hrm.data import packing, records

STATE_KEYS = ("seed", "seq_len", "global_batch_rows", "overlong", "num_examples", "lookahead")


class PackedBatchSource:
    """Random-access source: index k → this host's rows of global batch k (a dict of int32 arrays)."""

    def __init__(self, data_dir: str | Path, *, seq_len: int, global_batch_rows: int, seed: int,
                 process_index: int, process_count: int, overlong: str, lookahead: int | None = None):
        if global_batch_rows % process_count:
            raise ValueError(f"global_batch_rows={global_batch_rows} is not divisible by process_count="
                             f"{process_count}; every host must get the same number of rows")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.data_dir = Path(data_dir)
        self.meta = records.read_metadata(self.data_dir)
        self.seq_len, self.rows, self.seed, self.overlong = seq_len, global_batch_rows, seed, overlong
        self.rows_local = global_batch_rows // process_count
        self.row_lo = process_index * self.rows_local
        self.lookahead = lookahead or max(64, 4 * global_batch_rows)
        self.lengths = records.load_lengths(self.data_dir, self.meta)
        self.eff_li, self.eff_lo, _, _ = packing.apply_overlong(self.lengths, seq_len, overlong)
        self.records = records.ShardReader(records.shard_paths(self.data_dir, self.meta),
                                           [sh["num_examples"] for sh in self.meta["shards"]])
        if len(self.records) != len(self.lengths):
            raise ValueError(f"{data_dir}: {len(self.records)} records but {len(self.lengths)} length rows")
        self._lock = threading.Lock()
        self._plans: dict[int, packing.EpochPlan] = {}
        self._epoch_starts = [0]  # cumulative batch counts: epoch e covers steps [starts[e], starts[e+1])

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d.pop("_lock")
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return 1 << 40  # effectively infinite: epochs follow each other with fresh shuffles

    def plan(self, epoch: int) -> packing.EpochPlan:
        with self._lock:
            if epoch not in self._plans:
                if len(self._plans) >= 2:  # keep memory bounded: current and next epoch
                    self._plans.pop(min(self._plans))
                self._plans[epoch] = packing.plan_epoch(
                    self.lengths, seq_len=self.seq_len, rows=self.rows, seed=self.seed, epoch=epoch,
                    overlong=self.overlong, lookahead=self.lookahead)
            return self._plans[epoch]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, batch within epoch) of global step `step`."""
        while self._epoch_starts[-1] <= step:
            e = len(self._epoch_starts) - 1
            nb = self.plan(e).num_batches
            if nb == 0:
                raise ValueError(f"{self.data_dir}: too little data for one batch of {self.rows} rows × "
                                 f"{self.seq_len} tokens ({len(self.lengths)} examples)")
            self._epoch_starts.append(self._epoch_starts[-1] + nb)
        e = int(np.searchsorted(self._epoch_starts, step, side="right")) - 1
        return e, step - self._epoch_starts[e]

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        epoch, b = self.locate(int(step))
        plan = self.plan(epoch)
        lo, hi = plan.batch_bounds[b], plan.batch_bounds[b + 1]
        rows = plan.row[lo:hi]
        a, z = np.searchsorted(rows, [self.row_lo, self.row_lo + self.rows_local])  # rows are sorted in a batch
        ex = plan.example[lo + a:lo + z]
        flat, li, lo = records.decode_records(self.records.read(ex))
        flat, n = packing.gather_examples(flat, li, lo, self.eff_li[ex], self.eff_lo[ex], self.lengths[ex, 2])
        return packing.build_rows(flat, n, self.eff_li[ex], rows[a:z] - self.row_lo, self.rows_local, self.seq_len)


def _ensure_absl_flags_parsed() -> None:
    """grain multiprocessing reads absl flags (STYLE §13 pitfall 9)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class TrainIterator(grain.DatasetIterator):
    """Host-local iterator of packed batches with a step-only, host-count-independent JSON state."""

    def __init__(self, source: PackedBatchSource, *, worker_count: int = 0, prefetch: int = 2, step: int = 0):
        self.source, self.worker_count, self.prefetch = source, worker_count, prefetch
        self._step = step
        super().__init__(self._build(step))

    def _build(self, step: int) -> grain.DatasetIterator:
        ds = grain.MapDataset.source(self.source)[step:]
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1 if self.prefetch else 0,
                                                  prefetch_buffer_size=max(self.prefetch, 1)))
        if self.worker_count > 0:
            _ensure_absl_flags_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count,
                                                             per_worker_buffer_size=max(self.prefetch, 1)))
        return iter(ds)

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._parent)
        self._step += 1
        return batch

    @property
    def step(self) -> int:
        return self._step

    def _fingerprint(self) -> dict[str, Any]:
        s = self.source
        return {"seed": s.seed, "seq_len": s.seq_len, "global_batch_rows": s.rows, "overlong": s.overlong,
                "num_examples": int(len(s.lengths)), "lookahead": s.lookahead}

    def get_state(self) -> dict[str, Any]:
        return {"step": self._step, **self._fingerprint()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume at `state["step"]`; refuses a state produced by a different data/packing configuration."""
        mine = self._fingerprint()
        bad = {k: (state.get(k), mine[k]) for k in STATE_KEYS if state.get(k) != mine[k]}
        if bad:
            raise ValueError(f"data iterator state does not match this pipeline (saved, current): {bad}")
        self._step = int(state["step"])
        old = self._parent
        self._parents = (self._build(self._step),)
        self._ctx = self._parents[0]._ctx
        close = getattr(old, "close", None)
        if close:
            close()

    def close(self) -> None:
        close = getattr(self._parent, "close", None)
        if close:
            close()

    @property
    def metadata(self) -> dict:
        """The prepared directory's metadata.json (tokenizer hash, special ids, counts)."""
        return self.source.meta

    # metadata for step counts (SPEC §6.6 total_length semantics: Σ(inst_len + resp_len))
    @property
    def num_examples(self) -> int:
        return int(self.source.meta["num_examples"])

    @property
    def total_tokens(self) -> int:
        return int(self.source.meta["num_tokens"])

    def epoch_stats(self, epoch: int = 0) -> dict:
        """Packing efficiency (real tokens / slots), overlong counts, batches of an epoch."""
        return dict(self.source.plan(epoch).stats)

    @property
    def steps_per_epoch(self) -> int:
        return self.source.plan(0).num_batches


def make_train_iterator(data_dir: str | Path, *, seq_len: int, global_batch_rows: int, seed: int = 0,
                        process_index: int | None = None, process_count: int | None = None,
                        overlong: str = "truncate", worker_count: int = 0, prefetch: int = 2,
                        lookahead: int | None = None) -> TrainIterator:
    """The trainer's entry point: host-local packed batches [global_batch_rows / process_count, seq_len]."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    src = PackedBatchSource(data_dir, seq_len=seq_len, global_batch_rows=global_batch_rows, seed=seed,
                            process_index=process_index, process_count=process_count, overlong=overlong,
                            lookahead=lookahead)
    return TrainIterator(src, worker_count=worker_count, prefetch=prefetch)


def to_global(batch: dict[str, np.ndarray], mesh: Any, batch_partition_spec: Any) -> dict[str, Any]:
    """Host-local numpy batch → global jax.Arrays sharded by `batch_partition_spec` (STYLE §6 multi-host)."""
    import jax
    from jax.sharding import NamedSharding

    sharding = NamedSharding(mesh, batch_partition_spec)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
