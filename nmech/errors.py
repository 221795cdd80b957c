"""The one exception type that carries a user-facing, one-line message."""


class NmechError(ValueError):
    """Bad input or an unsupported request; the message is shown to the user as one line."""
