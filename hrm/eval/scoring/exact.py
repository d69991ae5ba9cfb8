"""Exact-match scoring for the built-in default tasks: stripped generation == stripped response."""

from __future__ import annotations

from typing import Any


def score_exact(prediction: str, gold: str) -> dict[str, Any]:
    """{'extracted', 'correct', 'score', 'invalid'}; invalid marks an empty generation."""
    pred = prediction.strip()
    correct = pred == str(gold).strip()
    return {"extracted": pred, "correct": correct, "score": float(correct), "invalid": pred == ""}
