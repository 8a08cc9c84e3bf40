"""Weight edits: the shared protocol (deltas, Edit, EditStack) and the methods built on it."""

from .base import Edit, EditError, LowRankDelta, ProjectorDelta
from .stack import EditStack, applied

__all__ = ["Edit", "EditError", "EditStack", "LowRankDelta", "ProjectorDelta", "applied"]
