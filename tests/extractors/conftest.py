"""Images the extractor tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def read_rgb():
    """read_rgb(path) -> [H, W, 3] uint8 RGB: an image file as the visual extractors take frames
    (OpenCV reads BGR); fails naming the path when it cannot be read."""
    import cv2

    def read(path: Path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert img is not None, path
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # [H, W, 3] uint8

    return read


@pytest.fixture
def grace_hopper(read_rgb) -> np.ndarray:
    """matplotlib's sample photo of Grace Hopper (public domain, one frontal face), [600, 512, 3]
    uint8 RGB; read afresh for each test, so none sees another's changes."""
    from matplotlib import cbook

    return read_rgb(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
