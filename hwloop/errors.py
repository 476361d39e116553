"""Errors that end a command with one line instead of a traceback.

The CLI prints each as ``error: <message>`` on stderr and exits with the class's status.
"""


class UserError(Exception):
    """Bad input from the user (exit status 2).

    The message is one line that names what is wrong and how to fix it; nothing has been
    written when it is raised by validation.
    """


class RunError(Exception):
    """A run could not go on although its input was valid (exit status 1): the disk filled
    up, the loss became NaN or inf. The message says what happened and what was kept."""


class Diverged(RunError):
    """The loss or the gradients became NaN or inf (exit status 1); continuing from the last
    checkpoint with the same settings would diverge again."""
