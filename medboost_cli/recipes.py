"""Recipes: a YAML file per task under recipes/, validated by a pydantic schema.

A run's configuration is built in layers, later ones winning: the task recipe (which ``extends`` a base),
a preset (``recipes/presets/NAME.yaml``, with a section per dimensionality), the CLI's flags (--backbone,
--booster, --seed) and ``--set key=value`` overrides. A model family other than R-LLM's (``model: pneumollm``,
from any layer) adds its own defaults, ``recipes/models/NAME.yaml``, right after the base recipe (so the task's
own file still wins), and its preset section ``NAME-2d`` right after the preset's ``2d``. Validation happens
once, on the merged result; an error names the layer that introduced the bad key, the key and its value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from .compat import HashOmitted, Legacy, fill_legacy, hash_view, omitted_while
from .errors import ConfigError, ResultsError, short, short_text
from .models.families import DEFAULT_FAMILY, FAMILIES, ModelFamily, PneumoLLMConfig, model_family
from .paths import PathName
from .recipe_errors import explain as _explain, source_of as _source_of
from .recipe_yaml import merge, parse_set, read_yaml, recipes_dir, task_recipe_path  # merge: for studies.py too
from .recipe_yaml import merged as _merged, nest as _nest, recipe_layers as _recipe_layers
from .resizing import DEFAULT_RESIZE, RESIZES
from .run_ids import config_digest, make_run_id
from .tasks import Task, resolve_task

BoosterMode = Literal["none", "rllm", "out", "hybrid", "mlp"]
BOOSTER_MODES: tuple[str, ...] = BoosterMode.__args__  # type: ignore[attr-defined]
MODEL_FAMILIES: tuple[str, ...] = tuple(FAMILIES)  # the registered model families (models/families)
ModelFamilyName = Literal[MODEL_FAMILIES]  # type: ignore[valid-type]
ResizeName = Literal[tuple(RESIZES)]  # type: ignore[valid-type]  # the registered resize modes (resizing/)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# The data.* keys of cohort runs only: MedMNIST runs (their own train/val/test splits) hash without them.
COHORT_ONLY = HashOmitted(lambda value, recipe: recipe.task_info.cohort is None)
# ViViT's norm placement and position table as runs saved before these keys had them (other backbones: unused).
VIVIT_LEGACY = {"applies": lambda backbone: str(backbone.get("name", "")).startswith("vivit")}


class DataConfig(_Strict):
    size: int = Field(28, description="MedMNIST file size (28, 64, 128, 224; 3D: 28, 64)")
    resize: Annotated[ResizeName, omitted_while(DEFAULT_RESIZE)] = Field(
        DEFAULT_RESIZE, description="how an image smaller than the backbone's input is brought to it: "
        + "; ".join(f"{m.name}: {m.what} ({m.protocol})" for m in RESIZES.values()))
    verify: bool = Field(True, description="check MD5 and split sizes against medmnist's INFO")
    hflip: float = Field(0.5, ge=0, le=1, description="probability of flipping the last (W) axis")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of flipping the H axis")
    dflip: float = Field(0.0, ge=0, le=1, description="probability of flipping the depth axis (3D only)")
    scale: tuple[float, float] = Field((0.8, 1.0), description="zoom: the range of the fraction of the field of view "
                                       "kept, 0 < low <= high <= 1")
    translate: float = Field(0.1, ge=0, le=0.5, description="shift, as a fraction of the image side")
    rotate: float = Field(0.0, ge=0, le=180, description="in-plane rotation range in degrees (2D only)")
    padding: Literal["zeros", "border", "reflection"] = Field(
        "border", description="fill outside the image; border matches the eval resize at the rim")
    folds: Annotated[int | None, COHORT_ONLY] = Field(None, ge=2, description="cohort files only: k patient-level folds (null: MedMNIST's "
                              "own train/val/test splits)")
    fold: Annotated[int, COHORT_ONLY] = Field(0, ge=0, description="cohort files only: which fold (0..folds-1) is the test split")
    fold_seed: Annotated[int, COHORT_ONLY] = Field(0, ge=0, lt=2**32, description="cohort files only: the folds' shuffle; apart from the "
                           "training seed, so that every training seed sees the same folds")
    val_fraction: Annotated[float, COHORT_ONLY] = Field(0.2, gt=0, le=0.5, description="cohort files only: the share of a fold's training "
                                "patients held out to select the epoch")

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, scale: tuple[float, float]) -> tuple[float, float]:
        if not 0 < scale[0] <= scale[1] <= 1:  # transforms.py: a zoom of 0 or less collapses or mirrors the image
            raise ValueError("data.scale is [low, high], fractions of the field of view kept: 0 < low <= high <= 1")
        return scale


FOLD_KEYS = tuple(k for k, f in DataConfig.model_fields.items() if COHORT_ONLY in f.metadata)  # cohort runs only


class BackboneConfig(_Strict):
    name: str = Field("vit-s", description="registered backbone (see `medboost train --help`)")
    pretrained: bool = False
    weights: PathName | None = Field(None, description="local file with pretrained weights (safetensors or .pth)")
    img_size: int | None = Field(None, description="input size; default: the backbone's own")
    in_chans: int = Field(3, ge=1, le=1024)
    patch_size: int | None = Field(None, ge=1, le=1024)
    stem: Literal["patch", "conv"] = Field(
        "patch", description="patch: the input downsampled at once (ViT: one patch conv; ResNet: timm's 7x7 stride-2 "
        "conv and max-pool, for 224x224); conv: 3x3 convs (ViT: a stride-2 stack; ResNet: MedMNIST's 28x28 form, one "
        "stride-1 conv, no max-pool)")
    dim: int | None = Field(None, ge=1, le=2**16)  # sizes: positive, and bounded so that no typo asks for a terabyte
    depth: int | None = Field(None, ge=1, le=1024)
    temporal_depth: int | None = Field(None, ge=1, le=1024)
    heads: int | None = Field(None, ge=1, le=1024)
    dim_head: int | None = Field(None, ge=1, le=2**14)
    mlp_ratio: float | None = Field(None, gt=0, le=64)
    drop_path: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    booster_site: Literal["tokens", "temporal", "spatial"] | None = Field(
        None, description="where the booster wraps the tokens; default: the backbone's own (ViViT: temporal)")
    vivit_norms: Annotated[Literal["stacks", "head"] | None, Legacy("head", **VIVIT_LEGACY)] = Field(
        None, description="ViViT only. stacks (default, the released code's): the spatial and the temporal transformer "
        "each end in a LayerNorm, so the booster sees normalised tokens, and the head is a bare Linear; head: no "
        "norm at the end of either transformer, one LayerNorm in the head after the booster")
    vivit_pos: Annotated[Literal["joint", "factorised"] | None, Legacy("factorised", **VIVIT_LEGACY)] = Field(
        None, description="ViViT only. joint (default, the released code's): one learned (1, f, n, dim) table, an "
        "entry per tubelet; factorised: a spatial (1, 1, n+1, dim) plus a temporal (1, f, 1, dim) table")

    def check_keys(self, used: frozenset[str], what: str) -> None:
        """Reject a key set away from its default that the backbone family ``what`` does not use."""
        for key, field in type(self).model_fields.items():
            value = getattr(self, key)
            if key not in used and value != field.default:
                raise ConfigError(
                    f"backbone.{key}={value} does not apply to backbone '{self.name}' ({what}); unset it")


class BoosterConfig(_Strict):
    mode: BoosterMode = "rllm"
    llm: PathName = Field(
        "huggyllama/llama-7b",
        description="'minilm' (packaged, offline), a Hugging Face folder or hub id, a Meta-format folder, "
        "or 'random:llama-7b' (exact shape, random weights)",
    )
    layer: int = Field(31, description="layer index; negative counts from the end")
    freeze: bool = Field(True, description="false trains F_L too (the paper's FT ablation)")
    llm_init: Literal["pretrained", "random", "shuffled"] = Field(
        "pretrained",
        description="random: the LM's own init for a layer of the same shape; shuffled: each pretrained tensor's "
        "entries permuted (same value distribution, no learned structure)",
    )
    dtype: Literal["auto", "bf16", "fp32"] = Field("auto", description="storage dtype of a frozen F_L")
    lm_norm: Annotated[Literal["auto", "unit", "pretrained", "none"], Legacy("none")] = Field(
        "auto",
        description="the norm after F_L's layer. unit: the LM's final RMSNorm with weight 1 (the released code's); "
        "pretrained: with the LM's own final norm weights; none: the bare layer. auto: unit for LLaMA-family "
        "layers, none for BERT layers (which end in LayerNorm)",
    )
    proj_init: Annotated[Literal["auto", "trunc_normal", "default"], Legacy("default")] = Field(
        "auto",
        description="F_E/F_D init. trunc_normal: std 0.02 (the released 2D code's); default: nn.Linear's (the "
        "released 3D code's). auto: trunc_normal for 2D tasks, default for 3D",
    )


class TrainConfig(_Strict):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    lr: float = Field(5e-4, gt=0)
    min_lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(5.0, ge=0, le=1e6)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    select_metric: Literal["auc", "acc", "loss"] = "auc"
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without a better val metric")
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: torch's (the cores)")
    micro_batch: Annotated[int | None, omitted_while(None)] = Field(None, ge=1, description="gradient accumulation: forward/backward at most this many "
                                    "samples at a time, one optimizer step per batch (the batch's gradient in less "
                                    "memory; see the README's performance section)")
    compile: bool = Field(False, description="torch.compile the model (see the README's performance section)")
    channels_last: bool = Field(False, description="channels-last memory format for convolutional parts (2D)")
    # A step budget (budget.py): the same cost on every task, whatever its training split's size.
    steps: Annotated[int | None, omitted_while(None)] = Field(None, ge=1, description="optimizer steps to train "
                                                              "(null: train.epochs passes over the training split)")
    eval_points: Annotated[int, omitted_while(20)] = Field(20, ge=1, description="with train.steps: validation "
                                                           "evaluations (and checkpoints), evenly spaced")
    val_subset: Annotated[int | None, omitted_while(None)] = Field(None, ge=1, description="select on a fixed, "
                                                                   "stratified validation subset of this many samples")


# Seeds are 0 <= seed < 2**32: numpy's generators take no other, and torch's derived seeds (seeding.py) stay in range.
SEED_LIMIT = 2**32


class RecipeFields(_Strict):
    """A run's recipe up to ``booster``; ``Recipe`` adds each registered model family's own section (``pneumollm``)
    and ``train``."""

    task: str
    seed: int = Field(0, description="0 <= seed < 2**32 (numpy and torch seed their generators with it)")
    model: ModelFamilyName = Field(DEFAULT_FAMILY, description="the model family: "
                                   + "; ".join(f"{f.name}: {f.title}" for f in FAMILIES.values()))
    data: DataConfig = DataConfig()
    backbone: BackboneConfig = BackboneConfig()
    booster: BoosterConfig = BoosterConfig()

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_in_range(cls, seed: Any) -> int:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"a seed is an integer 0 <= seed < 2**32 = {SEED_LIMIT}, as numpy and torch seed their "
                             f"generators with it")
        return seed

    @property
    def task_info(self) -> Task:
        """The task; for a cohort file, with the fold this recipe trains on."""
        task = resolve_task(self.task)
        if task.cohort is None:
            return task
        d = self.data
        return task.with_folds(d.folds, d.fold, d.fold_seed, d.val_fraction)

    @property
    def family(self) -> ModelFamily:
        """The model family's registered entry (medboost_cli.models.families)."""
        return model_family(self.model)

    @property
    def arm(self) -> str:
        """The run id's and the results row's ``booster`` field: the booster mode, or the model family's name."""
        return self.family.arm(self)

    @property
    def lm_source(self) -> str | None:
        """``booster.llm`` where the run has an LM (R-LLM: every mode but none; PneumoLLM: unless llm=false)."""
        return self.booster.llm if self.family.names_lm(self) else None

    def config_hash(self) -> str:
        """Hash of everything that defines the experiment (not where or on what it runs, not the seed), less the
        keys marked ``HashOmitted`` while their condition holds (compat.hash_view). R-LLM runs hash without the
        model keys; PneumoLLM runs only with the booster keys they read (the LM's source, init and dtype). A cohort
        run hashes its file's name and content instead of its path (the same file elsewhere is the same
        experiment)."""
        cfg = self.model_dump(mode="json")
        cfg.pop("seed")
        cohort = self.task_info.cohort
        if cohort is not None:
            cfg["task"] = cohort.identity
        for key in ("device", "threads"):
            cfg["train"].pop(key)
        _family_keys(cfg, self.family)
        return config_digest(hash_view(self, cfg))

    def run_id(self) -> str:
        return make_run_id(self.task_info.short, self.backbone.name, self.arm, self.config_hash(), self.seed)


# Each registered family's own section (under its name), then train: the sections' order, which model_dump keeps.
Recipe = create_model(
    "Recipe", __base__=RecipeFields, __module__=__name__,
    __doc__="A run's recipe: the keys of RecipeFields, each model family's own section, and train.",
    **{f.name: (f.section, f.section()) for f in FAMILIES.values() if f.section is not None},
    train=(TrainConfig, TrainConfig()),
)


def _family_keys(cfg: dict, family: ModelFamily) -> None:
    """A recipe dump as its family hashes it: without the other families' sections, with only the booster keys
    the family reads; the default family without ``model`` (its runs predate the key)."""
    for other in FAMILIES.values():
        if other is not family and other.section is not None:
            del cfg[other.name]
    if family.default:
        del cfg["model"]
    if family.booster_keys is not None:
        cfg["booster"] = {k: cfg["booster"][k] for k in family.booster_keys}


def saved_recipe(config_json: str) -> Recipe:
    """The recipe of a results row (``config_json``). A row saved before a key existed lacks it; it gets the
    value that reproduces what that run computed, not today's default (the key's ``Legacy`` marker)."""
    try:
        data = json.loads(config_json)
    except (TypeError, ValueError) as e:
        raise ResultsError(f"config_json: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("backbone", {}), dict):
        raise ResultsError(f"config_json: not a recipe (a JSON object with its sections), got {config_json[:60]!r}")
    try:
        return Recipe.model_validate(fill_legacy(Recipe, data))
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        what = "a recipe key this medboost does not know" if first["type"] == "extra_forbidden" else \
            f"a value this medboost refuses ({short_text(first['msg'])})"
        raise ResultsError(f"config_json has {what}: '{key}' = {short(first.get('input'))}; a medboost with other recipe "
                           f"keys wrote it, or it was edited") from None


# ------------------------------------------------------------------------------------------------ loading


def preset_layer(name: str, dims: int, family: str | None = None) -> tuple[str, dict]:
    """The preset's section for ``dims``-D tasks (``2d``), or for a model family's runs (``pneumollm-2d``)."""
    path = recipes_dir() / "presets" / f"{name}.yaml"
    names = sorted(p.stem for p in (recipes_dir() / "presets").glob("*.yaml"))
    if name not in names:
        raise ConfigError(f"unknown preset '{name}'; available: {', '.join(names)}")
    data = read_yaml(path)
    section = f"{dims}d" if family is None else f"{family}-{dims}d"
    if section not in data:
        raise ConfigError(f"{path}: preset '{name}' has no '{section}' section for {dims}D tasks")
    if not isinstance(data[section] or {}, dict):
        raise ConfigError(f"{path}: section '{section}' must be a mapping of recipe keys, got "
                          f"{type(data[section]).__name__}")
    return f"{path} [{section}]", data[section] or {}


def load_recipe(
    task: str,
    preset: str | None = None,
    flags: list[tuple[str, str, Any]] | None = None,
    sets: list[str] | None = None,
    recipe_file: Path | None = None,
) -> Recipe:
    """Build and validate a run's recipe.

    ``flags`` are the CLI's own options as (label, dotted key, value), e.g. ("--booster", "booster.mode", "rllm");
    a value of None is skipped. ``sets`` are ``--set KEY=VALUE`` strings, applied last.
    """
    task_info = resolve_task(task)
    path = Path(recipe_file) if recipe_file else task_recipe_path(task_info)
    layers = _recipe_layers(path)
    late = [(f"{label} {short_text(str(value), 200)}", _nest(key.split("."), value)) for label, key, value in flags or [] if value is not None]
    late += parse_set(sets or [])
    where = _source_of(("model",), layers + late)
    family = model_family(_merged(layers + late).get("model", DEFAULT_FAMILY), where)
    problem = family.dims_error(task_info.dims, task_info.short)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    own = None if family.default else family.name  # a family's own defaults file and preset sections
    if own:
        base_dir = (recipes_dir() / "base").resolve()
        bases = [i for i, (source, _) in enumerate(layers) if Path(source).resolve().parent == base_dir]
        at = bases[-1] + 1 if bases else 0
        layers[at:at] = _recipe_layers(recipes_dir() / "models" / f"{own}.yaml")
    layers.insert(0, ("task", {"task": task_info.flag}))
    if preset:
        layers.append(preset_layer(preset, task_info.dims))
        if own:
            layers.append(preset_layer(preset, task_info.dims, own))
    if task_info.cohort is not None:  # the file's size, whatever a recipe or preset says for MedMNIST's files
        layers.append((f"cohort file {task_info.cohort.path}", {"data": {"size": task_info.sizes[0]}}))
    return validate_layers(layers + late)


def validate_layers(layers: list[tuple[str, dict]]) -> Recipe:
    merged = _merged(layers)
    try:
        recipe = Recipe.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_explain(e, layers, Recipe)) from None
    resolve_task(recipe.task)  # a task named inside a recipe file must exist too
    if recipe.task_info.flag != layers[0][1]["task"] and layers[0][0] == "task":
        raise ConfigError(
            f"{_source_of(('task',), layers)}: sets task '{recipe.task}' but the command asked for '{layers[0][1]['task']}'"
        )
    try:
        recipe.task_info.check_size(recipe.data.size)
    except ConfigError as e:
        raise ConfigError(f"{_source_of(('data', 'size'), layers)}: {e}") from None
    _check_data_keys(recipe, layers)
    _check_fold_keys(recipe, layers)
    return recipe


def _check_fold_keys(recipe: Recipe, layers: list[tuple[str, dict]]) -> None:
    """Folds are for cohort files (MedMNIST has its splits); a cohort run needs k, and a fold below it."""
    d, cohort = recipe.data, recipe.task_info.cohort
    if cohort is None:
        for key in FOLD_KEYS:
            if getattr(d, key) != DataConfig.model_fields[key].default:
                raise ConfigError(f"{_source_of(('data', key), layers)}: data.{key}={getattr(d, key)} applies to "
                                  f"cohort files (`medboost prepare dicom`) only; {recipe.task} has its own "
                                  f"train/val/test splits; unset it")
        return
    if d.folds is None:
        raise ConfigError(f"{_source_of(('data', 'folds'), layers)}: {cohort.path.name} is a cohort file, which is "
                          f"split into patient-level folds: give --folds K (or data.folds=K)")
    if d.fold >= d.folds:
        raise ConfigError(f"{_source_of(('data', 'fold'), layers)}: data.fold={d.fold}, but there are {d.folds} folds "
                          f"(0 to {d.folds - 1})")


# Augmentations that exist in one dimensionality only: key -> the dimensionality that uses it.
DATA_KEY_DIMS = {"rotate": 2, "dflip": 3}


def _check_data_keys(recipe: Recipe, layers: list[tuple[str, dict]]) -> None:
    dims = recipe.task_info.dims
    for key, used_in in DATA_KEY_DIMS.items():
        value = getattr(recipe.data, key)
        if dims != used_in and value != DataConfig.model_fields[key].default:
            raise ConfigError(
                f"{_source_of(('data', key), layers)}: data.{key}={value} applies to {used_in}D tasks only and "
                f"{recipe.task} is {dims}D; unset it"
            )
