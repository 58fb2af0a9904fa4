"""Deterministic training batches, and the seeds every random draw of a step derives from.

Every random draw of a step derives from (seed, step): the order of training items is a chain
of seeded permutations indexed by the global sample position, each item's crop and degradation
depend on (seed, epoch, item) (:class:`~diffsr.data.datasets.SRDataset`), and the timesteps and
noise of step s come from :func:`step_generator` over the GLOBAL batch, of which each process
takes its slice. A run resumed at step N therefore sees exactly the batches of an uninterrupted
one, N processes see the same global batch as one, and ``data.num_workers`` worker processes
(which only prepare whole batches ahead of the training step) change nothing but the speed:
a batch is a pure function of (seed, step, rank).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffsr.core.errors import DiffsrError

__all__ = ["BatchStream", "StepBatches", "global_seed", "step_batches", "step_generator"]


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator for step ``step``: every draw of a step derives from (seed, step)."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1))
    return g


def global_seed(seed: int, step: int, rank: int) -> int:
    """The seed of torch's global RNG for step ``step`` on process ``rank`` (dropout and the like)."""
    return (seed * 998_244_353 + step * 104_729 + rank * 1_299_709 + 4_242) % (2**63 - 1)


class BatchStream:
    """Deterministic global batches: position p -> epoch p // n, item perm_epoch[p % n]."""

    def __init__(self, dataset: Any, batch_size: int, seed: int) -> None:
        if len(dataset) == 0:
            raise DiffsrError("training set is empty")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            rng = np.random.default_rng([self.seed, epoch, 17])
            self._perms = {epoch: rng.permutation(len(self.dataset))}
        return self._perms[epoch]

    def items(self, step: int, start: int, stop: int) -> list[dict[str, Tensor]]:
        """Items ``start:stop`` of global batch ``step``."""
        n = len(self.dataset)
        out = []
        for j in range(start, stop):
            pos = step * self.batch_size + j
            epoch, i = divmod(pos, n)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            out.append(self.dataset[int(self._perm(epoch)[i])])
        return out


class StepBatches(torch.utils.data.Dataset):
    """Step -> this process's collated slice of that step's global batch (a map-style dataset).

    A DataLoader over it (``batch_size=None``, steps as indices) lets worker processes build the
    next batches while the current step trains; what they build does not depend on which worker
    builds it.
    """

    def __init__(self, stream: BatchStream, lo: int, hi: int) -> None:
        self.stream, self.lo, self.hi = stream, lo, hi

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler says which steps

    def __getitem__(self, step: int) -> dict[str, Any]:
        from diffsr.data.datasets import collate_pad

        return collate_pad(self.stream.items(int(step), self.lo, self.hi))


def _one_thread(worker_id: int) -> None:
    # workers share the cores with the training step: one thread each, no oversubscription
    torch.set_num_threads(1)


def step_batches(batches: StepBatches, start: int, stop: int, *, workers: int = 0) -> Iterator[dict[str, Any]]:
    """Batches of steps ``start .. stop - 1`` in order, built by ``workers`` processes ahead of time (0: inline)."""
    if workers <= 0:
        for step in range(start, stop):
            yield batches[step]
        return
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, stop), num_workers=workers,
        worker_init_fn=_one_thread, prefetch_factor=2, persistent_workers=False,
    )
    yield from loader
