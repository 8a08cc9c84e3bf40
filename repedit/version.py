"""The package version (one place; the front door, exports and reports read it)."""

__version__ = "0.1.0"
