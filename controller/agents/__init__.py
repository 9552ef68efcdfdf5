"""Agents behind one interface: the offline template policy (default) and the LLM agent."""

from controller.agents.base import Agent, GuardFailure, IterationOutcome

__all__ = ["Agent", "GuardFailure", "IterationOutcome"]
