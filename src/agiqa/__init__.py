"""agiqa: a reproducible benchmark pipeline for AI-generated image quality assessment."""

__version__ = "0.1.0"
