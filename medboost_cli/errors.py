"""The one exception type for bad input: the CLI prints its message as a single line and exits non-zero."""


class MedboostError(Exception):
    """A problem the user can fix: the message says what, where (file or key) and what to do."""
