"""The one exception type the library raises for a user's mistake.

The CLI turns it into a single ``Error: ...`` line and exit code 1; anything else is a bug
and keeps its traceback.
"""


class EdgeclsError(Exception):
    """A problem with the user's input or files, with a message that says what to do."""
