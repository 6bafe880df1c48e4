"""The one exception type for problems a user can cause (bad paths, bad data, bad flags)."""


class UserError(Exception):
    """A mistake in the user's input. Scripts print it as one line and exit with status 2."""


def print_user_error(exc: UserError) -> int:
    """Print a user error as one `error: ...` line on stderr; returns the scripts' exit status, 2."""
    import sys

    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
    return 2
