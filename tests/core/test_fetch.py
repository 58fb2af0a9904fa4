"""Downloads on first use: offline switches, SHA-256 checks, atomic writes (file:// URLs, no network)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from diffsr.core.errors import DiffsrError
from diffsr.core.fetch import download_file, offline, offline_reason


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("DIFFSR_OFFLINE", "1", True), ("DIFFSR_OFFLINE", "true", True), ("HF_HUB_OFFLINE", "ON", True),
    ("DIFFSR_OFFLINE", "0", False), ("HF_HUB_OFFLINE", "", False),
])
def test_offline_switches_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
                                                expected: bool) -> None:
    monkeypatch.delenv("DIFFSR_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not offline()
    monkeypatch.setenv(variable, value)
    assert offline() is expected
    assert (offline_reason() == f"{variable}={value}") is expected


def test_download_from_a_file_url_checks_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("DIFFSR_OFFLINE", raising=False)
    source = tmp_path / "src.bin"
    payload = bytes(range(256)) * 5000
    source.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "file.bin"
    with caplog.at_level(logging.WARNING, logger="diffsr.core.fetch"):
        assert download_file(source.as_uri(), dest, sha256=digest[:8], what="test file") == dest
    assert dest.read_bytes() == payload
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "downloading test file" in notices[0] and source.as_uri() in notices[0]
    # a wrong digest: one line, and nothing (not even a partial file) is left behind
    other = tmp_path / "cache" / "other.bin"
    with pytest.raises(DiffsrError, match="expected 00000000") as exc:
        download_file(source.as_uri(), other, sha256="00000000", what="test file")
    assert "\n" not in str(exc.value) and not other.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]


def test_download_failures_and_offline_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFSR_OFFLINE", raising=False)
    missing = (tmp_path / "missing.bin").as_uri()
    with pytest.raises(DiffsrError, match="download of .*missing.bin failed") as exc:
        download_file(missing, tmp_path / "out.bin", what="test file")
    assert "\n" not in str(exc.value) and str(tmp_path / "out.bin") in str(exc.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = tmp_path / "src.bin"
    source.write_bytes(b"x")
    with pytest.raises(DiffsrError, match=r"not downloading .* \(HF_HUB_OFFLINE=1\)"):
        download_file(source.as_uri(), tmp_path / "out.bin", what="test file")
    assert not (tmp_path / "out.bin").exists()
