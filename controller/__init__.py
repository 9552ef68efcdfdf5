"""sandlab's host controller: plan, code, guard, repair, run, analyze, refine, report.

It never imports docker: the loop receives a Sandbox by injection, built from a backend
config (sandbox.backends). Only the engine-facing CLI commands (controller/cli/sandbox.py)
and the doctor use the docker backend's public face; tests/test_architecture.py keeps that so.
"""

__version__ = "0.1.0"
