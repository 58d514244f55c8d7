"""The root of every error mimi reports to a user as one line (torch-free; every layer imports it).

A library caller catches `MimiError`; the CLI prints its message and exits with its `exit_code`.
"""


class MimiError(Exception):
    """Something a user can act on, said in one line: a bad input, flag, file or environment."""

    exit_code = 2  # the CLI's usage-error code; a subclass that means "some input failed" uses 1
