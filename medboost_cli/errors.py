"""The exceptions the CLI turns into one line and an exit code (see the README's exit codes)."""


class MedboostError(Exception):
    """A problem the user can fix: the message says what, where (file or key) and what to do."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM: a cluster's preemption or ``kill``); handled like Ctrl-C."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name
