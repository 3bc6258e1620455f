"""Errors meant for users: the CLI prints their message (no traceback) and exits non-zero."""


class UserError(Exception):
    """A mistake the user can fix (bad path, bad config key, bad manifest).

    The message must name the thing that is wrong and say what to do.
    """
