"""The paper's published rows the study stands beside (docs/eval_protocol.md §13.3 Tab. 1, §13.4 Tab. 2, §13.5 Tab. 3)
and the effects it claims, each as a comparison of two study cells.

Scores are the paper's eight benchmarks in the order of docs/eval_protocol.md §13; `paper_mean` averages them (our
summary statistic, not the paper's). Rows are keyed by the `paper` label of a grid cell (hrm.study.grid).
"""

from __future__ import annotations

import dataclasses

BENCHMARKS = ("MMLU", "ARC-C", "Hella", "Wino", "BoolQ", "DROP", "GSM8K", "MATH")

# label -> (recursions, FLOPs 1e21 or None, tokens T or None, scores in BENCHMARKS order)
PAPER_ROWS: dict[str, tuple[str, object, object, tuple[float, ...]]] = {
    "HRM 1B": ("4 (H2L3)", 1.0, 0.06, (60.73, 81.91, 63.42, 72.38, 86.18, 82.21, 84.53, 56.16)),
    "Looped Transformer 1B": ("4", 1.0, 0.06, (56.51, 74.06, 47.59, 68.19, 82.35, 76.20, 75.13, 48.30)),
    "RINS 1B": ("4 (r=7)", 1.1, 0.06, (56.09, 76.71, 52.49, 68.35, 83.98, 79.92, 77.71, 48.90)),
    "Transformer 1B": ("1", 1.0, 0.17, (53.15, 74.32, 47.29, 65.51, 83.58, 75.30, 75.06, 48.36)),
    "Transformer 3B (Deep)": ("1", 1.1, 0.06, (56.67, 80.46, 51.05, 67.96, 84.07, 76.95, 75.66, 50.50)),
    "TRM 1B (unstable)": ("2 (H2L1)", 1.1, 0.06, (46.38, 56.66, 35.22, 59.35, 74.74, 63.56, 67.63, 44.12)),
    "HRM 0.6B": ("4 (H2L3)", 0.5, 0.06, (56.87, 74.32, 50.48, 66.38, 84.86, 78.07, 78.39, 50.28)),
    "TRM 0.6B": ("4 (H2L3)", 1.1, 0.06, (56.88, 76.71, 55.12, 67.01, 84.22, 79.91, 78.47, 50.84)),
    "Transformer 1B P(x) causal": ("1", None, None, (40.55, 51.91, 32.50, 48.54, 39.94, 38.24, 48.37, 35.44)),
    "Transformer 1B P(xa|xq) causal": ("1", None, None, (47.72, 62.88, 41.64, 60.85, 76.57, 54.24, 69.75, 47.04)),
    "HRM 1B P(x) causal": ("4 (H2L3)", None, None, (43.68, 60.24, 45.10, 53.71, 55.98, 42.74, 66.19, 44.32)),
    "HRM 1B P(xa|xq) causal": ("4 (H2L3)", None, None, (50.60, 69.80, 50.43, 63.93, 67.28, 62.39, 79.91, 54.18)),
}
# Tab. 3's PrefixLM + P(xa|xq) rows are Tab. 1's "Transformer 1B" and "HRM 1B".


def paper_mean(label: str) -> float:
    """Unweighted mean of the eight published scores of row `label`."""
    scores = PAPER_ROWS[label][3]
    return sum(scores) / len(scores)


@dataclasses.dataclass(frozen=True)
class Effect:
    """A claim of the paper: cell `better` beats cell `worse` (or, with `kind` "matches", is at least as good at
    lower cost). `table` is where the paper shows it, `claim` says it in words."""

    table: str
    better: str
    worse: str
    claim: str
    kind: str = "beats"


EFFECTS: tuple[Effect, ...] = (
    Effect("1", "hrm", "ut", "HRM beats the Looped Transformer at the same FLOPs"),
    Effect("1", "hrm", "rins", "HRM beats RINS at the same FLOPs"),
    Effect("1", "hrm", "transformer", "HRM beats a Transformer with its parameters trained on ~3x the tokens"),
    Effect("1", "hrm", "transformer_deep", "HRM beats a deeper Transformer at the same FLOPs and tokens"),
    Effect("1", "transformer_deep", "transformer", "depth beats more tokens for the Transformer"),
    Effect("2", "hrm", "trm_h2l1", "HRM beats TRM with one shared stack of HRM's size (TRM 1B, unstable)"),
    Effect("2", "hrm_small", "trm", "HRM matches TRM of the same parameters with half the FLOPs (0.6B)",
           kind="matches"),
    Effect("3", "transformer_causal", "transformer_px_causal", "Transformer: response-only loss beats loss on all "
           "tokens (causal)"),
    Effect("3", "transformer", "transformer_causal", "Transformer: PrefixLM beats causal attention"),
    Effect("3", "hrm_causal", "hrm_px_causal", "HRM: response-only loss beats loss on all tokens (causal)"),
    Effect("3", "hrm", "hrm_causal", "HRM: PrefixLM beats causal attention"),
    Effect("3", "hrm_px_causal", "transformer_px_causal", "HRM beats the Transformer under P(x), causal"),
    Effect("3", "hrm_causal", "transformer_causal", "HRM beats the Transformer under P(xa|xq), causal"),
)
