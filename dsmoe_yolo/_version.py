"""Single source of the package version (read by hatchling and written into checkpoints)."""

__version__ = "0.1.0"
