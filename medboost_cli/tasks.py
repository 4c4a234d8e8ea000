"""MedMNIST task names and metadata, read from the medmnist package's INFO table."""

from __future__ import annotations

from dataclasses import dataclass

from medmnist import INFO

from .errors import ConfigError

# Short names used on the command line and in recipes -> medmnist flags.
SHORT_NAMES: dict[str, str] = {
    "breast": "breastmnist",
    "retina": "retinamnist",
    "pneumonia": "pneumoniamnist",
    "derma": "dermamnist",
    "oct": "octmnist",
    "organa": "organamnist",
    "fracture3d": "fracturemnist3d",
    "adrenal3d": "adrenalmnist3d",
    "nodule3d": "nodulemnist3d",
    "vessel3d": "vesselmnist3d",
}
_FLAG_TO_SHORT = {flag: short for short, flag in SHORT_NAMES.items()}

TASK_TYPES = ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")


@dataclass(frozen=True)
class Task:
    """What the rest of the toolkit needs to know about one MedMNIST dataset."""

    flag: str  # medmnist flag, e.g. "breastmnist"
    short: str  # CLI name, e.g. "breast" (the flag itself when there is no short name)
    task_type: str  # one of TASK_TYPES
    n_classes: int  # classes, or labels for multi-label
    n_channels: int
    dims: int  # 2 or 3
    n_samples: dict[str, int]
    sizes: tuple[int, ...]

    @property
    def multilabel(self) -> bool:
        return self.task_type == "multi-label, binary-class"

    def filename(self, size: int) -> str:
        """medmnist's file name: ``{flag}.npz`` at 28, ``{flag}_{size}.npz`` otherwise."""
        self.check_size(size)
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"

    def url(self, size: int) -> str:
        return INFO[self.flag]["url" if size == 28 else f"url_{size}"]

    def md5(self, size: int) -> str:
        return INFO[self.flag]["MD5" if size == 28 else f"MD5_{size}"]

    def check_size(self, size: int) -> None:
        if size not in self.sizes:
            raise ConfigError(
                f"size {size} is not available for {self.flag}; choose one of {', '.join(map(str, self.sizes))}"
            )


def resolve_task(name: str) -> Task:
    """Map a short name ("breast") or a medmnist flag ("breastmnist") to a Task; unknown names are an error."""
    key = name.strip().lower()
    flag = SHORT_NAMES.get(key, key)
    if flag not in INFO:
        known = ", ".join(SHORT_NAMES)
        raise ConfigError(
            f"unknown task '{name}': use a short name ({known}) or a medmnist flag ({', '.join(sorted(INFO))})"
        )
    info = INFO[flag]
    dims = 3 if flag.endswith("3d") else 2
    return Task(
        flag=flag,
        short=_FLAG_TO_SHORT.get(flag, flag),
        task_type=info["task"],
        n_classes=len(info["label"]),
        n_channels=int(info["n_channels"]),
        dims=dims,
        n_samples=dict(info["n_samples"]),
        sizes=(28, 64) if dims == 3 else (28, 64, 128, 224),
    )
