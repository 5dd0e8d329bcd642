"""User-facing errors: one paragraph, no traceback, exit status 2 for usage errors."""


class UsageError(Exception):
    """A mistake in what the user asked for (arguments, config files); the CLI prints it and exits 2."""

    exit_code = 2


class Interrupted(UsageError):
    """Ctrl-C or SIGTERM stopped a command that follows runs; what was running stays resumable. Exit 130, as a shell
    reports a command stopped by SIGINT."""

    exit_code = 130
