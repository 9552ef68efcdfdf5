"""One root exception for the controller; subclasses inherit the builtin they resemble."""


class ControllerError(Exception):
    """Root of every error the controller raises on purpose."""


class BadInputError(ControllerError, ValueError):
    """The user asked for something invalid; the message names the fix (exit status 2)."""


class RunNotFoundError(ControllerError, LookupError):
    """No such run in the runs directory."""


class BudgetExceededError(ControllerError, RuntimeError):
    """A budget or limit refused further work."""
