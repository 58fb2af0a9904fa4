"""Hub ids: parsing, the cache folder from the environment, offline resolution from a planted cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffsr.core.errors import CheckpointError
from diffsr.core.hub import hub_cache_dir, is_hub_id, parse_hub_id, resolve_model_source

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.mark.parametrize(("spec", "repo", "revision"), [
    ("hf://lab/model", "lab/model", None),
    ("hf://lab/model@v1.2", "lab/model", "v1.2"),
    ("hf://Lab-X/my_model.v2@" + COMMIT, "Lab-X/my_model.v2", COMMIT),
    ("hf://lab/model@refs/pr/3", "lab/model", "refs/pr/3"),
])
def test_parse_hub_id(spec: str, repo: str, revision: str | None) -> None:
    parsed = parse_hub_id(spec)
    assert (parsed.repo, parsed.revision) == (repo, revision) and str(parsed) == spec


@pytest.mark.parametrize("spec", ["hf://model", "hf://", "hf://a/b/c", "hf://lab/model@"])
def test_malformed_hub_ids_are_one_line_errors(spec: str) -> None:
    with pytest.raises(CheckpointError, match="expected hf://ORG/NAME") as exc:
        parse_hub_id(spec)
    assert "\n" not in str(exc.value)


def test_paths_are_not_hub_ids(tmp_path: Path) -> None:
    assert not is_hub_id(tmp_path) and not is_hub_id("runs/hf://x") and is_hub_id("hf://a/b")
    assert resolve_model_source(tmp_path / "run") == tmp_path / "run"  # returned as is, even when missing


def test_cache_folder_is_read_from_the_environment_at_call_time(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def _plant(hf_home: Path) -> Path:
    """One repository in huggingface_hub's cache layout: refs/<name> -> snapshots/<commit>/files."""
    root = hf_home / "hub" / "models--lab--model"
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.yaml").write_text("name: x\n")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    (root / "refs" / "v1").write_text(COMMIT)
    return snapshot


@pytest.mark.parametrize("offline_variable", ["HF_HUB_OFFLINE", "DIFFSR_OFFLINE"])
def test_hub_id_resolves_to_the_cached_snapshot_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        offline_variable: str) -> None:
    snapshot = _plant(tmp_path / "hf")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("DIFFSR_OFFLINE", raising=False)
    monkeypatch.setenv(offline_variable, "1")
    for spec in ("hf://lab/model", "hf://lab/model@v1", f"hf://lab/model@{COMMIT}"):
        assert resolve_model_source(spec) == snapshot
    with pytest.raises(CheckpointError) as exc:
        resolve_model_source("hf://lab/model@v9")
    message = str(exc.value)
    assert "\n" not in message and "hf://lab/model@v9" in message and str(tmp_path / "hf" / "hub") in message
    assert f"{offline_variable}=1" in message and "hf download lab/model" in message


@pytest.mark.parametrize(("error", "words"), [
    ("RepositoryNotFoundError", "no such model on the Hub"),
    ("RevisionNotFoundError", "no revision 'v3' on the Hub"),
])
def test_hub_answers_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str,
                                         words: str) -> None:
    """What the Hub answers for a wrong id or revision (snapshot_download stubbed: no network)."""
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub import errors

    response = SimpleNamespace(headers={}, status_code=404, url="https://huggingface.co/api/models/lab/model",
                               request=None, text="", json=dict)

    def answer(*args: object, **kwargs: object) -> str:
        assert kwargs["local_files_only"] is False and kwargs["cache_dir"] == str(tmp_path / "hf" / "hub")
        raise getattr(errors, error)("404 Client Error", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", answer)
    monkeypatch.delenv("DIFFSR_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match=words) as exc:
        resolve_model_source("hf://lab/model@v3")
    assert "\n" not in str(exc.value) and "hf://lab/model@v3" in str(exc.value)
    assert str(tmp_path / "hf" / "hub") in str(exc.value)
