"""The exceptions the CLI turns into one line and an exit code (the exit codes listed on the documentation's errors page).

Each class of problem has its own exception and exit code, so scripts and cluster schedulers can tell a typo in a
recipe from a broken data file, a damaged checkpoint or a full disk:

====  =====================  ============================================================================
code  exception              what went wrong
====  =====================  ============================================================================
0                            success
1     (anything else)        an internal error: a bug in medboost (one line; MEDBOOST_DEBUG=1 shows the traceback)
2     ``ConfigError``        usage or configuration: an option, a recipe, a study, a key, a run id; a run
                             whose loss became NaN or infinite (``TrainingDiverged``: lower train.lr)
3     ``DataError``          a data file: missing, unreadable, or not what the task expects
4     ``ModelFileError``     a model file: LM weights (safetensors, Meta .pth), config.json, a checkpoint
5     ``ResultsError``       the results folder or a results row: missing, corrupt, duplicated, foreign
130   ``KeyboardInterrupt``  Ctrl-C; the last finished epoch is saved, ``--resume`` continues
143   ``Interrupted``        SIGTERM (a cluster's preemption, ``kill``); as Ctrl-C
====  =====================  ============================================================================
"""

import errno
import reprlib
from typing import Any


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 1000:  # repr() of an int over 4300 digits raises ValueError; 300 digits say enough
            return f"<an integer of {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _ShortRepr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
MAX_TEXT = 300  # characters of a library's message quoted in one error line


def short(value: Any) -> str:
    """A value the user gave (or a file held), as a repr short enough for one error line: it may be a megabyte of
    text, a 10**100000 integer or the billion-item expansion of a YAML alias bomb (reprlib stops early)."""
    return _REPR.repr(value)


def short_text(text: str, limit: int = MAX_TEXT) -> str:
    """A message (a library's, which may quote the value) cut to ``limit`` characters on one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class MedboostError(Exception):
    """A problem the user can fix: the message says what, where (file or key) and what to do.

    Raise one of the subclasses; a bare ``MedboostError`` counts as a usage/configuration error."""

    exit_code = 2
    kind = "error"


class ConfigError(MedboostError):
    """Usage or configuration: a command-line option, a recipe or study file, a recipe key, a run id."""

    exit_code = 2
    kind = "config error"


class TrainingDiverged(ConfigError):
    """A run whose loss or scores stopped being finite numbers: the recipe's learning rate (or its lack of gradient
    clipping) does not suit the model; the run ends as ``failed``."""


class DataError(MedboostError):
    """A data file (MedMNIST npz, DICOM, labels.csv): missing, unreadable, or not what the task expects."""

    exit_code = 3
    kind = "data error"


class ModelFileError(MedboostError):
    """A model file: language-model weights or config.json, a checkpoint."""

    exit_code = 4
    kind = "model file error"


class ResultsError(MedboostError):
    """The results folder or a row in it: missing, corrupt, duplicated, not written by medboost."""

    exit_code = 5
    kind = "results error"


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM: a cluster's preemption or ``kill``); handled like Ctrl-C."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


EXIT_INTERNAL = 1
EXIT_CTRL_C = 130
EXIT_SIGTERM = 143


def explain(error: BaseException, go_on: str = "continue with the same command and --resume") -> tuple[str, str, int]:
    """(kind, message, exit code) of the one line that reports ``error``: what ``cli.main`` prints, and what a
    process of a multi-process run hands to rank 0 to print (``distributed``). ``go_on``: how an interrupted
    command continues (``ablate`` resumes by itself)."""
    if isinstance(error, MedboostError):
        return error.kind, str(error), error.exit_code
    if isinstance(error, KeyboardInterrupt):
        by = error.signal_name if isinstance(error, Interrupted) else "Ctrl-C"
        return ("interrupted", f"by {by}: the last finished epoch is saved; {go_on}",
                EXIT_SIGTERM if isinstance(error, Interrupted) else EXIT_CTRL_C)
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:  # any path the user named: too long a name
        line = f"{short(error.filename)}: a name in this path is longer than the file system allows; choose a " \
               f"shorter one"
        return "config error", line, ConfigError.exit_code
    first = short_text((str(error).splitlines() or [""])[0])
    line = f"{type(error).__name__}: {first} (a bug in medboost; rerun with MEDBOOST_DEBUG=1 for the traceback and " \
           f"report it)"
    return "internal error", line, EXIT_INTERNAL
