"""`accuracy` and `exact_accuracy` (docs/model.md §9) on hand-built packed rows with partially correct examples:
token accuracy over labelled tokens only; exact accuracy = examples with >= 1 labelled token whose labelled
tokens are all right, counted per (row, segment)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hrm.model.loss import finalize_metrics, lm_loss_sums

V = 5


def _case():
    """Row 0: example 1 = tokens 0-3 (labels at 2, 3), example 2 = tokens 4-6 (labels at 5, 6), padding at 7.
    Row 1: example 1 = tokens 0-4 (labels at 3, 4), example 2 = tokens 5-7 (prefix only, no label).
    Predictions (argmax) are right at (0,2), (0,3), (0,5) and wrong at (0,6), (1,3), (1,4); unlabelled positions
    (prefix, padding) predict their target, which must not count."""
    seg = np.array([[1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 2, 2, 2]], np.int32)
    loss_mask = np.array([[0, 0, 1, 1, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0, 0]], np.int32)
    targets = np.array([[1, 2, 3, 4, 0, 1, 2, 3], [4, 3, 2, 1, 0, 4, 3, 2]], np.int32)
    pred = targets.copy()
    for b, t in [(0, 6), (1, 3), (1, 4)]:
        pred[b, t] = (targets[b, t] + 1) % V
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 8, V)).astype(np.float32)
    logits[np.arange(2)[:, None], np.arange(8)[None, :], pred] = 10.0  # the argmax
    return logits, targets, loss_mask, seg


def test_accuracy_and_exact_accuracy_partially_correct():
    logits, targets, loss_mask, seg = _case()
    sums = jax.tree.map(float, lm_loss_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(loss_mask),
                                            jnp.asarray(seg)))
    assert sums["count"] == 6 and sums["correct"] == 3
    assert sums["seq_count"] == 3 and sums["seq_correct"] == 1  # (row 1, example 2) has no label: not counted
    m = jax.tree.map(float, finalize_metrics({k: jnp.float32(v) for k, v in sums.items()}))
    assert m["accuracy"] == 0.5 and abs(m["exact_accuracy"] - 1 / 3) < 1e-7 and m["tokens"] == 6
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(lp, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(m["loss"], (ce * loss_mask).sum() / 6, rtol=1e-6)


def test_exact_accuracy_is_per_row_and_segment():
    logits, targets, loss_mask, seg = _case()
    # Fix (0, 6): example 2 of row 0 becomes all right; row 1 example 1 (same segment id 1 as row 0's
    # fully right example) stays wrong, so ids are not merged across rows.
    logits[0, 6] = 0.0
    logits[0, 6, targets[0, 6]] = 10.0
    s = lm_loss_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(loss_mask), jnp.asarray(seg))
    assert (float(s["correct"]), float(s["seq_correct"]), float(s["seq_count"])) == (4, 2, 3)
    # One wrong token in an otherwise right example makes it not exact; accuracy moves by one token only.
    logits[1, 3] = 0.0
    logits[1, 3, targets[1, 3]] = 10.0
    s = lm_loss_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(loss_mask), jnp.asarray(seg))
    assert (float(s["correct"]), float(s["seq_correct"])) == (5, 2)


def test_no_labelled_token_is_safe():
    logits, targets, _, seg = _case()
    zero = jnp.zeros(targets.shape, jnp.int32)
    m = finalize_metrics(lm_loss_sums(jnp.asarray(logits), jnp.asarray(targets), zero, jnp.asarray(seg)))
    assert [float(m[k]) for k in ("loss", "accuracy", "exact_accuracy", "tokens")] == [0.0, 0.0, 0.0, 0.0]
