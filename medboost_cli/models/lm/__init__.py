"""The LM family registry: one ``LMFamily`` entry per family of language-model layers, one module each.

Adding a family is a new module building its entry (block, key renames, config schema and parser, counts,
norms) plus one line in ``FAMILIES`` below. ``LayerSpec.arch`` names the entry; every behaviour that differs
between families is read from it (``lm_family``), and a config.json's ``model_type`` picks it
(``hf_layer_spec``). An unknown name is one error line listing the registered families.
"""

from __future__ import annotations

from ...errors import ConfigError, ModelFileError
from ..untrusted import check_layer_size, short, validated
from .bert import BERT
from .family import NORM_CHOICES, LMFamily, MetaFormat
from .llama import LLAMA
from .phi import PHI
from .spec import LayerSpec

__all__ = ["FAMILIES", "LMFamily", "LayerSpec", "MetaFormat", "NORM_CHOICES", "hf_layer_spec", "lm_family",
           "meta_layer_spec"]

FAMILIES: dict[str, LMFamily] = {family.name: family for family in (LLAMA, BERT, PHI)}


def _listing() -> str:
    return ", ".join(f"{f.name} ({', '.join(f.model_types)})" for f in FAMILIES.values())


def lm_family(arch: str) -> LMFamily:
    """The registered family ``arch`` names."""
    if arch not in FAMILIES:
        raise ConfigError(f"LM family {short(arch)} is not registered; registered: {', '.join(FAMILIES)}")
    return FAMILIES[arch]


def layer_params(spec: LayerSpec) -> int:
    """Parameters of one layer of ``spec``'s shape, by its family's count."""
    return lm_family(spec.arch).n_params(spec)


def hf_layer_spec(cfg: dict, where: str) -> LayerSpec:
    """A transformers config.json (already a dict) -> the shape of one of its layers, checked by its family."""
    model_type = cfg.get("model_type", "")
    family = next((f for f in FAMILIES.values() if isinstance(model_type, str) and model_type in f.model_types), None)
    if family is None:
        raise ModelFileError(f"{where}: model_type {short(model_type)} is not supported; medboost reads the LM "
                             f"families {_listing()}")
    spec = family.spec_from_hf(validated(family.hf_config, cfg, where), where)
    check_layer_size(layer_params(spec), where)
    return spec


def meta_format_family(where: str) -> LMFamily:
    """The family whose Meta-style checkpoints (params.json + consolidated.NN.pth) medboost reads."""
    found = [f for f in FAMILIES.values() if f.meta is not None]
    if len(found) != 1:
        raise ModelFileError(f"{where}: a Meta-format folder is read by exactly one LM family; registered with a "
                             f"Meta format: {', '.join(f.name for f in found) or 'none'}")
    return found[0]


def meta_layer_spec(params: dict, where: str) -> LayerSpec:
    """Meta's params.json (already a dict) -> the layer shape, checked."""
    spec = meta_format_family(where).meta.spec(params, where)
    check_layer_size(layer_params(spec), where)
    return spec
