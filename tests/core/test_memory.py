"""Memory checks: how much the machine has, and a one-line refusal naming what a job needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffsr.core.errors import DiffsrError
from diffsr.core.memory import available_bytes, check_memory, format_bytes


def test_available_bytes_reads_meminfo_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        line = next(ln for ln in meminfo.read_text().splitlines() if ln.startswith("MemAvailable:"))
        reported = int(line.split()[1]) * 1024
        have = available_bytes()
        assert have is not None and 0 < have <= reported * 1.5  # a cgroup limit can only lower it
    monkeypatch.setenv("DIFFSR_MEMORY_AVAILABLE", str(3 * 2**30))
    assert available_bytes() == 3 * 2**30


def test_check_memory_says_how_much(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSR_MEMORY_AVAILABLE", str(2**30))
    check_memory(2**29, "half a GiB")  # fits
    with pytest.raises(DiffsrError) as info:
        check_memory(38 * 2**30, "scan.png: x4 of 3072x3200", hint="pass --tile 512")
    assert str(info.value) == ("scan.png: x4 of 3072x3200 needs about 38.0 GiB of memory, 1.0 GiB available "
                               "on cpu; pass --tile 512")
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(12) == "12 B"
