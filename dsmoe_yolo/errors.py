"""Errors the plugin raises for bad configuration or input, each with a message naming the value and the fix."""

from __future__ import annotations

__all__ = ("ConfigError",)


class ConfigError(ValueError):
    """A model YAML, dataset, prompt or embedding setting is invalid; the message names the value and the fix."""
