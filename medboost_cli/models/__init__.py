"""The model layer: backbones, the booster, LM layers, R-LLM's ``Classifier`` and PneumoLLM, which take keyword
arguments or their own small dataclasses; ``families`` (one entry per ``model:`` family) translates a recipe into
those arguments and builds the model (``build_model``)."""

from __future__ import annotations

from .backbones import BACKBONES
from .built import BuiltModel, check_frozen_hash, count_parameters
from .classifier import Classifier
from .families import FAMILIES, ModelFamily, build_model, check_model, llm_dtype, model_family

__all__ = ["BACKBONES", "FAMILIES", "BuiltModel", "Classifier", "ModelFamily", "build_model", "check_frozen_hash",
           "check_model", "count_parameters", "llm_dtype", "model_family"]
