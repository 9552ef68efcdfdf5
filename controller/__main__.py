"""`python -m controller`."""

from controller.cli import entry

entry()
