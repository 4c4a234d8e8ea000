"""Cluster options (``ClusterOptions``): from the command line and a profile (``--profile lab.yaml``, the same keys),
the command line winning; and what they become for submitit: its Slurm parameters and the sbatch script."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError, short, short_text


def submitit_module():
    """submitit, or one line saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("the slurm and submitit-local launchers need submitit: pip install 'medboost[cluster]'") from None
    return submitit


def _parse_minutes(value: Any) -> Any:
    """Slurm's time formats as minutes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (and plain integers)."""
    if not isinstance(value, str):
        return value
    found = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not found:
        raise ValueError(f"'{value}' is not a Slurm time (minutes, H:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g else None for g in found.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = a, b or 0, c or 0
    elif c is not None:  # H:M:S
        hours, minutes, seconds = a, b, c
    else:  # M or M:S
        hours, minutes, seconds = 0, a, b or 0
    return (days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


class ClusterOptions(BaseModel):
    """How each run's job is sized and where it goes; a profile file holds these keys (``-`` or ``_``)."""

    model_config = ConfigDict(extra="forbid")
    partition: str | None = None
    gpus_per_run: int | None = Field(None, ge=0, description="GPUs per job (Slurm --gpus-per-node)")
    cpus_per_run: int | None = Field(None, ge=1, description="CPU cores per job; also the run's torch threads")
    mem: str | None = Field(None, pattern=r"^\d+[KMGTkmgt]?[Bb]?$", description="memory per job: 32G, 64000M")
    time: int = Field(24 * 60, ge=1, description="time limit per job in minutes (or H:MM:SS, D-HH:MM:SS); a run "
                      "that needs longer is requeued and resumes")
    account: str | None = None
    qos: str | None = None
    signal_delay_s: int = Field(120, ge=10, description="seconds before the time limit the job is told to stop")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each job (module load, "
                             "source a virtual environment)")
    sbatch: dict[str, str | int | bool] = Field(default_factory=dict, description="any other sbatch option: "
                                                "{constraint: a100, mail-type: END}")

    @field_validator("time", mode="before")
    @classmethod
    def _minutes(cls, value: Any) -> Any:
        return _parse_minutes(value)


def _first_error(e: ValidationError) -> tuple[str, str]:
    first = e.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    return key, f"{short(first.get('input'))} ({short_text(first['msg'])})"


def _read_profile(profile: Path) -> dict[str, Any]:
    """A profile's keys (``-`` read as ``_``), checked: one line naming the file and the bad key."""
    from ..recipes import read_yaml

    if not Path(profile).is_file():
        raise ConfigError(f"profile {profile} not found; write a YAML file with keys {', '.join(ClusterOptions.model_fields)}")
    data = {str(k).replace("-", "_"): v for k, v in read_yaml(Path(profile)).items()}
    try:
        ClusterOptions.model_validate(data)
    except ValidationError as e:
        key, what = _first_error(e)
        raise ConfigError(f"{profile}: bad profile key '{key}': {what}; keys: "
                          f"{', '.join(ClusterOptions.model_fields)}") from None
    return data


def cluster_options(profile: Path | None, flags: dict[str, Any]) -> ClusterOptions:
    """The profile's options (if any) with the command line's ``flags`` (None: not given) on top."""
    data = _read_profile(profile) if profile is not None else {}
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return ClusterOptions.model_validate(data | given)
    except ValidationError as e:
        key, what = _first_error(e)
        raise ConfigError(f"--{key.replace('_', '-')} {what}") from None


def sbatch_parameters(options: ClusterOptions, parallel: int | None) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for ``options`` (at most ``parallel`` array jobs at once)."""
    params = dict(job_name="medboost", time=options.time, signal_delay_s=options.signal_delay_s,
                  partition=options.partition, gpus_per_node=options.gpus_per_run, cpus_per_task=options.cpus_per_run,
                  mem=options.mem, account=options.account, qos=options.qos, setup=options.setup or None,
                  additional_parameters=options.sbatch or None, array_parallelism=parallel)
    return {k: v for k, v in params.items() if v is not None}


def sbatch_script(options: ClusterOptions, parallel: int | None, runs: int, folder: Path) -> str:
    """The sbatch script submitit would submit for an array of ``runs`` jobs (for --dry-run)."""
    submitit_module()
    from submitit.slurm.slurm import _make_sbatch_string  # the text SlurmExecutor itself submits

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=runs, **sbatch_parameters(options, parallel))


def submitit_folder(results_dir: Path) -> Path:
    return Path(results_dir).absolute() / "submitit" / "%j"
