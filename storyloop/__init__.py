"""storyloop: turn people's judgments of generated story frames into a better image model."""

__version__ = "0.1.0"
