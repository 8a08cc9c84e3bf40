"""Export edited weights as a plain Hugging Face directory with a manifest, the edits and the originals
(`directory`); the certificate of what was verified (`certificate`, `certificate_check`); the model card."""

from repedit.export.directory import ExportError, ExportResult, export, load_edits, read_manifest, revert

__all__ = ["ExportError", "ExportResult", "export", "load_edits", "read_manifest", "revert"]
