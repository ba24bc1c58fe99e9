"""Ponder: turn extra inference-time compute into better answers, and measure how much better."""

__version__ = "0.1.0"
