"""Intensity policies (dtype, minmax, percentile, window) and their inverse."""

from __future__ import annotations

import numpy as np
import pytest

from diffsr.core.errors import ConfigError
from diffsr.data.io import Record
from diffsr.data.normalize import Intensity, default_policy, fit_intensity


def test_intensity_policies_and_inverse() -> None:
    rng = np.random.default_rng(9)
    values = np.concatenate([np.zeros(500), rng.uniform(100.0, 900.0, 1500)]).astype(np.float32)
    record = Record(values.reshape(2, 1, 25, 40), {"format": "nifti", "path": "x.nii", "dtype": "int16",
                                                     "range": (-32768.0, 32767.0)})
    assert fit_intensity(record, "dtype").to_dict() == {"policy": "dtype", "lo": -32768.0, "hi": 32767.0}
    mm = fit_intensity(record, "minmax")
    assert (mm.lo, mm.hi) == (0.0, float(values.max()))
    pc = fit_intensity(record, "percentile", percentiles=(1.0, 99.0))
    assert (pc.lo, pc.hi) == pytest.approx(tuple(np.percentile(values[values != 0], [1.0, 99.0])))
    win = fit_intensity(record, "window", window=(200.0, 600.0))
    unit = win.forward(record.array.astype(np.float64))
    assert unit.min() == 0.0 and unit.max() == 1.0  # clipped outside the window
    inside = (record.array >= 200) & (record.array <= 600)
    np.testing.assert_allclose(win.inverse(unit)[inside], record.array[inside], rtol=1e-6)
    assert Intensity.from_dict(win.to_dict()) == win
    with pytest.raises(ConfigError, match="window"):
        fit_intensity(record, "window")
    with pytest.raises(ConfigError, match="did you mean|choose"):
        fit_intensity(record, "percentil")
    flat_meta = {"format": "png", "path": "f.png", "dtype": "float32"}
    flat = Record(np.full((1, 1, 4, 4), 7.0, np.float32), flat_meta)
    constant = fit_intensity(flat, "minmax")
    assert constant.hi > constant.lo and constant.forward(np.float64(7.0)) == 0.0
    assert default_policy(flat) == "minmax"
