"""The research front-end's errors (a module of its own, so every layer of it can raise them)."""

from __future__ import annotations

from controller.errors import ControllerError


class SourceUnavailableError(ControllerError):
    """A source failed for good (retries spent, or an answer that retrying cannot fix).

    The literature stage logs it and goes on with the other sources.
    """
