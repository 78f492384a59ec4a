class UserError(Exception):
    """A mistake the user can fix: shown as one line on stderr, exit code 2, no traceback."""
