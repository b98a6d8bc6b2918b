"""vlp: CLIP-style vision-language pretraining (library and trainer)."""

__version__ = "0.1.0"
