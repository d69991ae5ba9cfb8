"""Training-time input pipeline on Grain: prepared ArrayRecord shards → host-local packed PrefixLM batches.

    it = make_train_iterator(data_dir, seq_len=256, global_batch_rows=16, seed=0)   # data_dir may be gs://…
    batch = next(it)           # dict of int32 [rows_per_host, seq_len]: inputs, targets, loss_mask, segment_ids,
                               # positions, prefix_mask (docs/prefixlm_packing.md §2–4 contract)
    state = it.get_state(); it.set_state(state)   # JSON-able; grain.checkpoint.CheckpointSave/Restore work too
    arrays = to_global(batch, mesh, P(("data", "fsdp")))

Batch k is a pure function of (seed, k, data): a grain `MapDataset` indexed by step wraps `PackedBatchSource`, whose
element k is built from the global packing plan (hrm/data/packing.py) restricted to this host's rows. The state is the
step plus the batch counts of the epochs seen so far, so restore is bit-exact, independent of `worker_count` and of
the number of hosts (the global batch of a step is the same for any process_count dividing `global_batch_rows`), and
resuming inside epoch k plans only epoch k. Grain's FirstFitPackIterDataset packs each host's stream independently,
which would make the global batch depend on the host count, hence the own packer.

Epoch order (docs/data_format.md §5): a directory with prepared epochs (`prepare --mixture/--epochs`, `--reference`) is
consumed
exactly: epoch e is `epochs/epoch_{e}.npy` in its stored order (`seed` plays no part). Training past the last
prepared epoch N cycles: epoch e reuses prepared epoch e mod N, reshuffled with (seed, e), and logs a one-time
warning. A directory without prepared epochs is one pool reshuffled per epoch with (seed, epoch). The next epoch's
plan is computed in a background thread while the current one is served.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import sys
import threading
from typing import Any

import numpy as np

import grain
from hrm.data import epochs, packing, paths, records

log = logging.getLogger("hrm.data")

STATE_KEYS = ("seed", "seq_len", "global_batch_rows", "overlong", "num_examples", "lookahead", "plan",
              "prepared_epochs")
PLAN_VERSION = f"chunked-best-fit-v2/{packing.CHUNK}/{packing.MIN_CHUNK_ROWS}"


class PackedBatchSource:
    """Random-access source: index k → this host's rows of global batch k (a dict of int32 arrays).

    `lookahead` is the packer's number of open rows per chunk (default `packing.DEFAULT_OPEN_ROWS`).
    """

    def __init__(self, data_dir: str | os.PathLike, *, seq_len: int, global_batch_rows: int, seed: int,
                 process_index: int, process_count: int, overlong: str, lookahead: int | None = None,
                 background: bool = True, target_only: bool = True):
        if global_batch_rows % process_count:
            raise ValueError(f"global_batch_rows={global_batch_rows} is not divisible by process_count="
                             f"{process_count}; every host must get the same number of rows")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.data_dir = os.fspath(paths.as_path(data_dir))
        self.meta = records.read_metadata(self.data_dir)
        self.seq_len, self.rows, self.seed, self.overlong = seq_len, global_batch_rows, seed, overlong
        # False: loss on instruction tokens too (docs/prefixlm_packing.md §2 P(x) ablation)
        self.target_only = target_only
        self.rows_local = global_batch_rows // process_count
        self.row_lo = process_index * self.rows_local
        self.lookahead = lookahead or packing.DEFAULT_OPEN_ROWS
        self.background = background
        self.prepared_epochs = records.num_prepared_epochs(self.meta)
        self.lengths = records.load_lengths(self.data_dir, self.meta)
        self.eff_li, self.eff_lo, _, _ = packing.apply_overlong(self.lengths, seq_len, overlong)
        self.record_slots = packing.RecordSlots.build(self.lengths, seq_len, overlong)
        self.records = records.ShardReader(records.shard_paths(self.data_dir, self.meta),
                                           [sh["num_examples"] for sh in self.meta["shards"]])
        if len(self.records) != len(self.lengths):
            raise ValueError(f"{data_dir}: {len(self.records)} records but {len(self.lengths)} length rows")
        self._init_runtime()
        self._stats: dict[int, dict] = {}  # per-epoch plan stats (num_batches gives the step → epoch map)

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[int, packing.EpochPlan] = {}
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._warned_cycle = False

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        for k in ("_lock", "_plans", "_futures", "_executor"):
            d.pop(k)
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._init_runtime()

    def __len__(self) -> int:
        return 1 << 40  # effectively infinite: epochs follow each other

    # ------------------------------------------------------------------ epochs and plans

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Record ids of `epoch` in training order (see the module docstring)."""
        if self.prepared_epochs and epoch >= self.prepared_epochs and not self._warned_cycle:
            self._warned_cycle = True
            log.warning("%s holds %d prepared epochs; training epoch %d and later reuse prepared epoch e mod %d, "
                        "reshuffled with (seed, e) (prepare more epochs with --epochs to sample new rows)",
                        self.data_dir, self.prepared_epochs, epoch, self.prepared_epochs)
        return epochs.epoch_order(self.data_dir, self.meta, epoch, self.seed)

    def _compute(self, epoch: int) -> packing.EpochPlan:
        return packing.plan_epoch(self.lengths, self.epoch_order(epoch), seq_len=self.seq_len, rows=self.rows,
                                  overlong=self.overlong, epoch=epoch, open_rows=self.lookahead,
                                  record_slots=self.record_slots)

    def _submit(self, epoch: int) -> concurrent.futures.Future:
        """Start planning `epoch` (caller holds the lock)."""
        if epoch not in self._futures:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hrm-plan")
            self._futures[epoch] = self._executor.submit(self._compute, epoch)
        return self._futures[epoch]

    def prefetch(self, epoch: int) -> None:
        """Plan `epoch` in the background unless it is known already."""
        if not self.background:
            return
        with self._lock:
            if epoch not in self._plans:
                self._submit(epoch)

    def plan(self, epoch: int) -> packing.EpochPlan:
        with self._lock:
            if epoch in self._plans:
                return self._plans[epoch]
            fut = self._submit(epoch)
        plan = fut.result()
        known = self._stats.get(epoch)
        if known and known["num_batches"] != plan.num_batches:
            raise ValueError(f"{self.data_dir}: the restored iterator state says epoch {epoch} has "
                             f"{known['num_batches']} batches, this data plans {plan.num_batches}")
        with self._lock:
            self._futures.pop(epoch, None)
            self._stats[epoch] = dict(plan.stats)
            self._plans[epoch] = plan
            for old in [e for e in self._plans if not epoch - 1 <= e <= epoch + 1]:  # bounded memory
                del self._plans[old]
        return plan

    def num_batches(self, epoch: int) -> int:
        """Batches of `epoch`, from the recorded stats when known (no planning) else from its plan."""
        st = self._stats.get(epoch)
        nb = st["num_batches"] if st else self.plan(epoch).num_batches
        if nb == 0:
            raise ValueError(f"{self.data_dir}: too little data for one batch of {self.rows} rows × "
                             f"{self.seq_len} tokens (epoch {epoch}: {len(self.epoch_order(epoch))} examples)")
        return nb

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, batch within epoch) of global step `step`; plans only epochs whose batch count is unknown."""
        epoch, start = 0, 0
        while True:
            nb = self.num_batches(epoch)
            if step < start + nb:
                return epoch, step - start
            start += nb
            epoch += 1

    def known_stats(self) -> list[dict]:
        """Stats of epochs 0, 1, … as far as they are contiguously known (saved in the iterator state)."""
        out = []
        while len(out) in self._stats:
            out.append(self._stats[len(out)])
        return out

    def restore_stats(self, stats: list[dict]) -> None:
        self._stats.update({e: dict(s) for e, s in enumerate(stats)})

    def close(self) -> None:
        """Stop background planning (a later access plans on demand again)."""
        ex, self._executor = self._executor, None
        self._futures.clear()
        if ex is not None and not sys.is_finalizing():  # grain calls close() from __del__, also at exit
            ex.shutdown(wait=False, cancel_futures=True)

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        epoch, b = self.locate(int(step))
        plan = self.plan(epoch)
        self.prefetch(epoch + 1)
        ex, row = plan.batch_rows(b, self.row_lo, self.row_lo + self.rows_local)
        flat, li, lo = records.decode_records(self.records.read(ex))
        flat, n = packing.gather_examples(flat, li, lo, self.eff_li[ex], self.eff_lo[ex], self.lengths[ex, 2])
        return packing.build_rows(flat, n, self.eff_li[ex], row, self.rows_local, self.seq_len, self.target_only)


def _ensure_absl_flags_parsed() -> None:
    """grain multiprocessing reads absl flags (docs/conventions.md §13 pitfall 9)."""
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
                "num_examples": int(len(s.lengths)), "lookahead": s.lookahead, "plan": PLAN_VERSION,
                "prepared_epochs": s.prepared_epochs}

    def get_state(self) -> dict[str, Any]:
        """{"step", the fingerprint, "epochs": stats of the epochs planned so far} (JSON)."""
        return {"step": self._step, **self._fingerprint(), "epochs": self.source.known_stats()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume at `state["step"]`; refuses a state produced by a different data/packing configuration."""
        mine = self._fingerprint()
        bad = {k: (state.get(k), mine[k]) for k in STATE_KEYS if state.get(k) != mine[k]}
        if bad:
            raise ValueError(f"data iterator state does not match this pipeline (saved, current): {bad}")
        self.source.restore_stats(state.get("epochs") or [])
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
        self.source.close()

    @property
    def metadata(self) -> dict:
        """The prepared directory's metadata.json (tokenizer hash, special ids, counts)."""
        return self.source.meta

    @property
    def num_examples(self) -> int:
        """Records in the directory (a prepared epoch may repeat or leave out some)."""
        return int(self.source.meta["num_examples"])

    @property
    def total_tokens(self) -> int:
        """Tokens per epoch Σ(Li + Lo) for step counts: the mean over prepared epochs (the reference's
        total_length, docs/data_format.md §6), or the whole pool."""
        ep = self.source.meta.get("epochs")
        return int(ep["tokens_mean"]) if ep else int(self.source.meta["num_tokens"])

    def epoch_stats(self, epoch: int = 0) -> dict:
        """Packing efficiency (real tokens / slots), overlong counts, batches of an epoch (no replanning when
        the stats came with a restored state)."""
        st = self.source._stats.get(epoch)
        return dict(st) if st else dict(self.source.plan(epoch).stats)

    @property
    def steps_per_epoch(self) -> int:
        return self.source.num_batches(0)


def make_train_iterator(data_dir: str | os.PathLike, *, seq_len: int, global_batch_rows: int, seed: int = 0,
                        process_index: int | None = None, process_count: int | None = None,
                        overlong: str = "truncate", worker_count: int = 0, prefetch: int = 2,
                        lookahead: int | None = None, target_only: bool = True) -> TrainIterator:
    """The trainer's entry point: host-local packed batches [global_batch_rows / process_count, seq_len]
    (`target_only=False`: loss mask on every token, `data.target_only`)."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    src = PackedBatchSource(data_dir, seq_len=seq_len, global_batch_rows=global_batch_rows, seed=seed,
                            process_index=process_index, process_count=process_count, overlong=overlong,
                            lookahead=lookahead, target_only=target_only)
    return TrainIterator(src, worker_count=worker_count, prefetch=prefetch)


def to_global(batch: dict[str, np.ndarray], mesh: Any, batch_partition_spec: Any) -> dict[str, Any]:
    """Host-local numpy batch → global jax.Arrays sharded by `batch_partition_spec` (docs/conventions.md §6
    multi-host)."""
    import jax
    from jax.sharding import NamedSharding

    sharding = NamedSharding(mesh, batch_partition_spec)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
