"""What a compiled program moves between chips, read from its optimised HLO text.

`memory_analysis()` says how much HBM a step needs; it does not say what crosses the interconnect.
This module parses `compiled.as_text()` (the per-device SPMD program after XLA's passes) and counts
every collective — all-gather, all-reduce, reduce-scatter, all-to-all, collective-permute, in their
synchronous or async (`-start`/`-done`) forms — with its output bytes, multiplied by how many times
it runs: a collective inside a `while` body (a scanned layer stack, a cycle loop) runs once per trip,
so each computation's multiplicity is the product of the known trip counts (`known_trip_count` in
the while's backend config) on its call path from ENTRY. Async pairs are counted once (at `-done`;
`-start` carries the operand too). A while with no known trip count is counted once and reported.

Also used by tests to assert what must never be communicated (e.g. a tensor with the global batch
dimension) and to count kernel custom calls.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Iterable, Optional

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
               "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 0.5, "u4": 0.5}
_SHAPE = re.compile(r"\b(" + "|".join(sorted(DTYPE_BYTES, key=len, reverse=True)) + r")\[([0-9,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_CALLS = re.compile(r"\b(body|calls|to_apply|condition|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One HLO instruction: its computation, name, opcode, result type text and the rest of the line."""

    computation: str
    name: str
    opcode: str
    result: str
    rest: str

    def result_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return shapes_in(self.result)

    def operand_names(self) -> list[str]:
        return re.findall(r"%([\w.\-]+)", self.rest.split("),", 1)[0])


def shapes_in(text: str) -> list[tuple[str, tuple[int, ...]]]:
    """Every `dtype[d0,d1,...]` in `text` as (dtype, dims)."""
    return [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in _SHAPE.findall(text)]


def nbytes(shapes: Iterable[tuple[str, tuple[int, ...]]]) -> float:
    return float(sum(DTYPE_BYTES[dt] * math.prod(dims) for dt, dims in shapes))


def _split_type(text: str) -> tuple[str, str, str]:
    """'<type> opcode(operands), attrs' -> (type, opcode, 'operands), attrs')."""
    text = text.strip()
    if text.startswith("("):  # tuple type: up to the matching parenthesis
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                typ, text = text[:i + 1], text[i + 1:].lstrip()
                break
    else:
        typ, _, text = text.partition(" ")
    opcode, _, rest = text.partition("(")
    return typ, opcode.strip(), rest


class HloProgram:
    """Parsed HLO module text: instructions per computation and each computation's execution count."""

    def __init__(self, text: str):
        self.instructions: list[Instruction] = []
        self.unknown_trip_whiles: list[str] = []
        edges: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
        whiles: list[tuple[str, str, dict, Optional[int]]] = []
        entry: Optional[str] = None
        current: Optional[str] = None
        for line in text.splitlines():
            header = _HEADER.match(line)
            if header:
                current = header.group(2)
                if header.group(1):
                    entry = current
                continue
            if current is None or line.strip() == "}":
                continue
            m = _INSTR.match(line)
            if not m:
                continue
            typ, opcode, rest = _split_type(m.group(2))
            self.instructions.append(Instruction(current, m.group(1), opcode, typ, rest))
            calls = _CALLS.findall(rest)
            if opcode == "while":
                t = _TRIP.search(rest)
                whiles.append((current, m.group(1), dict(calls), int(t.group(1)) if t else None))
                continue
            edges[current] += [(callee, 1) for _, callee in calls]
            for group in _BRANCHES.findall(rest):
                edges[current] += [(c.strip().lstrip("%"), 1) for c in group.split(",") if c.strip()]
        if entry is None:
            raise ValueError("no ENTRY computation in the HLO text")
        self.by_name = {i.name: i for i in self.instructions}
        for caller, name, calls, trips in whiles:
            if trips is None:
                trips = self._trips_from_condition(calls.get("condition", ""))
            if trips is None:
                self.unknown_trip_whiles.append(name)
                trips = 1
            edges[caller] += [(calls["body"], trips), (calls.get("condition", ""), trips + 1)]
        self.multiplicity = self._multiplicities(entry, edges)

    def _trips_from_condition(self, condition: str) -> Optional[int]:
        """Trip count of a counted loop from its condition `ROOT compare(get-tuple-element(p), constant(N)),
        direction=LT` (what `lax.scan`/`fori_loop` compile to; the counter starts at 0), else None."""
        roots = [i for i in self.instructions if i.computation == condition and i.opcode == "compare"]
        if len(roots) != 1 or "direction=LT" not in roots[0].rest:
            return None
        for name in roots[0].operand_names():
            op = self.by_name.get(name)
            if op is not None and op.opcode == "constant":
                value = re.match(r"\s*(-?\d+)\)", op.rest)
                return int(value.group(1)) if value else None
        return None

    @staticmethod
    def _multiplicities(entry: str, edges: dict[str, list[tuple[str, int]]]) -> dict[str, int]:
        """Executions of each computation per program run: Σ over call sites of caller count × trips."""
        order, seen = [], set()

        def visit(c: str) -> None:  # post-order DFS, then reverse = topological order (callers first)
            seen.add(c)
            for callee, _ in edges.get(c, ()):
                if callee not in seen:
                    visit(callee)
            order.append(c)

        visit(entry)
        count = collections.Counter({entry: 1})
        for c in reversed(order):
            for callee, factor in edges.get(c, ()):
                count[callee] += count[c] * factor
        return dict(count)

    def operand_shapes(self, ins: Instruction) -> list[tuple[str, tuple[int, ...]]]:
        """Result shapes of an instruction's operands (compiled HLO prints operands by name only)."""
        return [s for n in ins.operand_names() if n in self.by_name for s in self.by_name[n].result_shapes()]

    def runs(self, ins: Instruction) -> int:
        return self.multiplicity.get(ins.computation, 0)

    def collectives(self) -> list[tuple[Instruction, str, int]]:
        """(instruction, collective kind, executions) for every collective that moves data (async pairs once)."""
        out = []
        for ins in self.instructions:
            if ins.opcode.endswith("-start"):
                continue
            kind = ins.opcode[:-len("-done")] if ins.opcode.endswith("-done") else ins.opcode
            if kind in COLLECTIVES and self.runs(ins):
                out.append((ins, kind, self.runs(ins)))
        return out

    def collective_summary(self) -> dict:
        """Bytes per device per program run: total and by (kind, dtype); plus op counts."""
        by_kind: dict[str, float] = collections.Counter()
        counts: dict[str, int] = collections.Counter()
        for ins, kind, runs in self.collectives():
            for dt, dims in ins.result_shapes():
                by_kind[f"{kind} {dt}"] += DTYPE_BYTES[dt] * math.prod(dims) * runs
            counts[kind] += runs
        return {"collective_bytes_per_device": float(sum(by_kind.values())),
                "collective_bytes_by_kind": {k: float(v) for k, v in sorted(by_kind.items())},
                "collective_ops": dict(sorted(counts.items())),
                "unknown_trip_count_loops": len(self.unknown_trip_whiles)}

    def custom_calls(self, target_substring: str) -> int:
        """Executions of custom calls whose line mentions `target_substring` (e.g. a Pallas kernel name)."""
        return sum(self.runs(i) for i in self.instructions
                   if i.opcode == "custom-call" and target_substring in i.rest)


def collectives_with_dim(program: HloProgram, dim: int) -> list[str]:
    """Collectives any of whose operand or result shapes has a dimension of size `dim` (one line each)."""
    hits = []
    for ins, kind, _ in program.collectives():
        shapes = ins.result_shapes() + program.operand_shapes(ins)
        if any(dim in dims for _, dims in shapes):
            hits.append(f"{ins.computation}/{ins.name}: {kind} {ins.result}")
    return hits
