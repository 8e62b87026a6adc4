"""The one exception type users see: a one-line message that says what to do."""


class HRAvatarError(RuntimeError):
    """A user-facing error. ``str(err)`` is a single line naming the file/input and the fix.

    The CLI prints it as ``error: <message>`` and exits with status 2; library callers can catch it.
    """
