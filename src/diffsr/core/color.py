"""The BT.601 "studio swing" luma used by the evaluation (one definition for data and metrics).

Y = (65.481 R + 128.553 G + 24.966 B + 16) / 255 for R, G, B in [0, 1]; Y in [16/255, 235/255],
as MATLAB ``rgb2ycbcr`` and BasicSR ``rgb2ycbcr(y_only=True)``.
"""

from __future__ import annotations

Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
