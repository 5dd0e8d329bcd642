"""User-facing errors: one paragraph, no traceback, exit status 2 for usage errors."""


class UsageError(Exception):
    """A mistake in what the user asked for (arguments, config files); the CLI prints it and exits 2."""

    exit_code = 2
