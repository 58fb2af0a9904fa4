"""Safe readers for weight files: ``torch.load(weights_only=True)`` and safetensors, with one-line errors.

In ``core`` so that every layer (losses, nets, train, infer) loads user-supplied files the
same way; torch and safetensors are imported only when a file is read.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from diffsr.core.errors import CheckpointError

# what a truncated or garbage file can make torch's (weights-only) unpickler raise
_UNREADABLE = (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError, TypeError,
               AttributeError, UnicodeDecodeError)


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors; pickled code is refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: the file holds pickled Python objects beyond tensors (it could run code);"
            " diffsr loads weights_only checkpoints and safetensors only"
        ) from None
    except _UNREADABLE as err:
        reason = str(err).splitlines()[0][:120] if str(err) else err.__class__.__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a safetensors file on CPU, with a one-line error when it is missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(err)[:100]})") from None
