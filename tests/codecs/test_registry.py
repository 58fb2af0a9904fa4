"""The codec registry: build_codec for every name, closest-name errors, and importing the codecs
stays light (no diffusers, no pywt).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from diffsr.codecs import CODECS, PixelCodec, WaveletCodec, build_codec
from diffsr.config import CodecConfig
from diffsr.core import ConfigError


def test_build_codec_for_every_name(tmp_path) -> None:
    assert isinstance(build_codec(CodecConfig(name="pixel"), channels=3), PixelCodec)
    codec = build_codec(CodecConfig(name="wavelet", wavelet="db2", levels=3, layout="full"), channels=3)
    assert isinstance(codec, WaveletCodec)
    assert (codec.wavelet, codec.levels, codec.layout, codec.channels) == ("db2", 3, "full", 3)
    missing = tmp_path / "no-vae-here"
    with pytest.raises(ConfigError, match="no-vae-here"):
        build_codec(CodecConfig(name="vae", path=str(missing)), channels=1)
    with pytest.raises(ConfigError, match="codec.path"):
        build_codec(CodecConfig(name="vae"), channels=1)
    assert CODECS.names() == ["pixel", "vae", "wavelet"]
    with pytest.raises(ConfigError, match="did you mean 'wavelet'"):
        CODECS.build("wavelt")


def test_importing_codecs_does_not_import_diffusers_or_pywt() -> None:
    code = "import sys, diffsr.codecs; print(sorted({'diffusers', 'pywt'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
