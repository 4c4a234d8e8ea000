"""Recipe files: where they are (``recipes_dir``), reading one as a mapping (``read_yaml``), the chain of files a
recipe ``extends``, the ``--set KEY=VALUE`` layers, and merging layers (later ones win). What the merged mapping
must hold is the schema's business (recipes.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, short, short_text
from .tasks import Task

# Values a recipe, preset, study or profile file may hold, counted with every alias expanded: a real file holds
# hundreds; a YAML alias bomb ("billion laughs") a billion, from a few hundred bytes.
MAX_YAML_VALUES = 100_000
MAX_INT_DIGITS = 100  # an integer's digits: no recipe value has more (Python refuses to parse over 4300)


class YAMLRefused(yaml.constructor.ConstructorError):
    """Valid YAML that a recipe may not hold: a key given twice, or aliases that expand past MAX_YAML_VALUES."""


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (YAML says keys are unique; PyYAML keeps
    the last, so ``seed: 0`` then ``seed: 1`` would train with seed 1 unseen) and a document whose aliases expand
    to more than MAX_YAML_VALUES values (checked on the node graph, before anything is built from it)."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise YAMLRefused(None, None, f"holds more than {MAX_YAML_VALUES} values (aliases expanded: a YAML alias "
                              f"bomb?); such a file holds hundreds", node.start_mark)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise YAMLRefused(None, None, f"key {short(key_node.value)} is given twice (first on line "
                                      f"{seen[key] + 1}); keep one", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_DIGITS:  # Python refuses to parse more than 4300 digits, with a ValueError
            raise YAMLRefused(None, None, f"a number of {len(node.value)} digits is longer than any recipe value "
                              f"({MAX_INT_DIGITS} at most)", node.start_mark)
        return super().construct_yaml_int(node)


RecipeLoader.add_constructor("tag:yaml.org,2002:int", RecipeLoader.construct_yaml_int)


def _expanded_size(node, sizes: dict[int, float]) -> float:
    """How many values ``node`` stands for with every alias expanded (an alias is the same node object again)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = float("inf")  # a node inside itself (``&a [*a]``) expands without end
    total = 1.0
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = total
    return total


def load_yaml(text: str):
    """``text`` parsed as YAML by ``RecipeLoader`` (safe: plain values only, no duplicate keys, no alias bomb)."""
    return yaml.load(text, Loader=RecipeLoader)  # RecipeLoader is a SafeLoader


def recipes_dir() -> Path:
    """$MEDBOOST_RECIPES, else the copy an installed wheel carries (medboost_cli/recipe_files: pyproject.toml
    packages the top-level recipes/ under that name), else recipes/ beside the package (a checkout, an editable
    install). The installed copy comes first so that an unrelated ``recipes`` folder in site-packages is never read."""
    if os.environ.get("MEDBOOST_RECIPES"):
        return Path(os.environ["MEDBOOST_RECIPES"])
    package = Path(__file__).resolve().parent
    for candidate in (package / "recipe_files", package.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"recipes folder not found (neither {package / 'recipe_files'} nor {package.parent / 'recipes'});"
                      f" reinstall medboost or set $MEDBOOST_RECIPES to the project's recipes/ folder")


def read_yaml(path: Path, kind: str = "recipe") -> dict[str, Any]:
    """A recipe, preset or study (``kind``) file as a mapping; any way it is not one is a ConfigError naming
    the file."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{kind} file not found: {path}") from e
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {kind} file; give a .yaml file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); a {kind} is a YAML text "
                          f"file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    except RecursionError:  # the YAML parser recurses once per nesting level
        raise ConfigError(f"{path}: nested too deeply to be a {kind}") from None
    except YAMLRefused as e:
        raise ConfigError(f"{path} line {e.problem_mark.line + 1}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {kind} must be a mapping of keys to values, got {type(data).__name__}")
    odd = [key for key in data if not isinstance(key, str)]
    if odd:
        raise ConfigError(f"{path}: key {short(odd[0])} is not a name; {kind} keys are words, such as 'tasks' or "
                          f"'train'")
    return data


# Recipes extend a base (task -> base/2d.yaml); a longer chain than this is a mistake, not a design.
MAX_EXTENDS = 16


def recipe_layers(path: Path) -> list[tuple[str, dict]]:
    """The file and the files it ``extends``, base first. Files are told apart by their resolved path, so that a
    loop through ``..`` or a symlink is caught like a file extending itself."""
    layers: list[tuple[str, dict]] = []
    chain: list[Path] = []
    while True:
        if path.resolve() in [p.resolve() for p in chain]:
            loop = " -> ".join(str(p.resolve()) for p in chain + [path])
            raise ConfigError(f"{chain[0]}: 'extends' loops back to {path.resolve()} ({loop}); remove one of "
                              f"these 'extends'")
        if len(chain) == MAX_EXTENDS:
            raise ConfigError(f"{chain[0]}: more than {MAX_EXTENDS} files chained by 'extends' (the last: {path}); "
                              f"a recipe extends a base, which may extend one more")
        chain.append(path)
        data = read_yaml(path)
        parent = data.pop("extends", None)
        layers.insert(0, (str(path), data))
        if parent is None:
            return layers
        if not isinstance(parent, str) or not parent.strip():
            raise ConfigError(f"{path}: 'extends' must name a recipe file, e.g. extends: base/2d.yaml; got "
                              f"{short(parent)}")
        beside = path.parent / parent
        path = beside if beside.exists() else recipes_dir() / parent
        if not path.exists():
            raise ConfigError(f"{chain[-1]}: extends '{parent}', which is neither beside it ({beside}) nor in "
                              f"{recipes_dir()}")


def task_recipe_path(task: Task) -> Path:
    if task.cohort is not None:  # never recipes/STEM.yaml: a cohort named breast.npz is not BreastMNIST
        return recipes_dir() / "cohort.yaml"
    specific = recipes_dir() / f"{task.short}.yaml"
    return specific if specific.exists() else recipes_dir() / "base" / f"{task.dims}d.yaml"


def parse_set(items: list[str]) -> list[tuple[str, dict]]:
    """``--set train.lr=1e-3`` -> a layer {"train": {"lr": 0.001}}; values are parsed as YAML scalars/lists."""
    layers = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{short_text(item, 200)}': expected KEY=VALUE, e.g. --set train.lr=1e-3")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except YAMLRefused as e:
            raise ConfigError(f"--set {short_text(key, 100)}: {e.problem}") from None
        except (yaml.YAMLError, RecursionError):
            value = raw
        layers.append((f"--set {short_text(item, 200)}", nest(key.strip().split("."), value)))
    return layers


def nest(keys: list[str], value: Any) -> dict:
    for key in reversed(keys):
        value = {key: value}
    return value


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def merged(layers: list[tuple[str, dict]]) -> dict:
    merged: dict = {}
    for _, layer in layers:
        merged = merge(merged, layer)
    return merged
