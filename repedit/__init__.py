"""repedit: locate, edit, attack, verify and export representations in transformer language models."""

from .errors import ReprEditError, SiteNotFoundError
from .models import DEFAULT_MODEL, ModelHandle, load
from .sites import Matrix, MatrixKind, Point, Site

__version__ = "0.1.0"

__all__ = ["DEFAULT_MODEL", "Matrix", "MatrixKind", "ModelHandle", "Point", "ReprEditError", "Site",
           "SiteNotFoundError", "__version__", "load"]
