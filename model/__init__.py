"""MIDOG mitosis detector: P4-equivariant ResNet applied densely, two-policy agreement ensemble, a screen in front.

The one way in: ``from model import Detector``; ``Detector().detect(image_rgb, spacing_mm, origin_mm)`` (see
`model.detector`). Everything here except `model.p4resnet` (the training-time e2cnn network, imported by training
only) runs with torch and requirements.txt: numpy, scipy, scikit-image, SimpleITK, evalutils (process.py),
safetensors, tqdm, pillow, tifffile (`test/test_requirements.py` checks that list against the imports).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Detections", "Detector"]

if TYPE_CHECKING:
    from model.detector import Detections, Detector


def __getattr__(name: str):
    """`Detector` and `Detections` load torch: imported on first use, so `model.spacing` and friends stay light."""
    if name in __all__:
        from model import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
