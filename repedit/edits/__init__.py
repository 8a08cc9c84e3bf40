"""Weight edits: the shared protocol (deltas, Edit, EditStack) and the methods built on it."""

from repedit.edits.base import DenseDelta, Edit, EditError, LowRankDelta, ProjectorDelta
from repedit.edits.stack import EditStack, applied

__all__ = ["DenseDelta", "Edit", "EditError", "EditStack", "LowRankDelta", "ProjectorDelta", "applied"]
