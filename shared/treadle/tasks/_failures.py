"""What a handler raises to say how its attempt failed."""

from __future__ import annotations


class Permanent(Exception):
    """Raise from a handler to fail the task without further attempts."""


class InvalidPayload(Permanent):
    """The stored payload does not fit the handler's payload type: retrying
    cannot help, so the task ends DEAD."""
