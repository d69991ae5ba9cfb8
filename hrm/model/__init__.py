"""Model zoo: HRM-Text and the reference's baselines, built from one ModelConfig via the registry."""

from __future__ import annotations

from hrm.model.embed_head import Buffer
from hrm.model.hrm import HRM
from hrm.model.registry import ARCHS, build_model, get_arch
from hrm.model.rins import RINS
from hrm.model.transformer import Transformer
from hrm.model.trm import TRM
from hrm.model.ut import UniversalTransformer

__all__ = ["ARCHS", "build_model", "get_arch", "HRM", "Transformer", "UniversalTransformer", "RINS", "TRM",
           "Buffer"]
