"""The one exception type for problems a user can cause (bad paths, bad data, bad flags)."""


class UserError(Exception):
    """A mistake in the user's input. Scripts print it as one line and exit with status 2."""
