"""Errors that mean "the user asked for something we cannot do"."""


class UserError(Exception):
    """Bad input from the user.

    The message is one line that names what is wrong and how to fix it. The CLI prints it as
    ``error: <message>`` and exits with status 2, without a traceback.
    """
