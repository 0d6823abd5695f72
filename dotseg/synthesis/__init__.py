"""Seeded synthesis of noisy dot-blob images: ``make_sample`` / ``make_batch``."""

from dotseg.synthesis.config import DotsConfig, NoiseConfig, ShapeConfig, SynthesisConfig
from dotseg.synthesis.generate import META_COLUMNS, Sample, make_batch, make_sample
from dotseg.synthesis.noise import snr_db

__all__ = [
    "SynthesisConfig",
    "ShapeConfig",
    "DotsConfig",
    "NoiseConfig",
    "Sample",
    "make_sample",
    "make_batch",
    "META_COLUMNS",
    "snr_db",
]
