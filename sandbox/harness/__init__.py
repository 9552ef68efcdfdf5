"""The only sandlab code that runs inside a container.

Standard library only: it must not import pydantic, docker, openai or controller code.
The host validates everything it writes (see sandbox/events.py).
"""
