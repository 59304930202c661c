"""The project's single exception type for user errors (bad input, refused operations)."""


class PsinspectError(Exception):
    """A problem with the user's input or request.

    The CLI prints ``str(err)`` on one line and exits with code 2. Messages name the offending
    file (or argument) and the problem, e.g. ``"capture/003.png: cannot read image"``.
    Anything that is not a ``PsinspectError`` is a bug and may show a traceback.
    """
