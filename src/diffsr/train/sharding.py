"""Sharded data-parallel training (FSDP2, ``torch.distributed.fsdp.fully_shard``) for the Trainer.

``train.shard: fsdp`` shards the denoiser's blocks over the processes: each process holds
1/N of their parameters, gradients and AdamW moments (ZeRO-3 with ``train.reshard_after_forward:
true``; ZeRO-2-like, parameters kept gathered between forward and backward, with ``false``).
FSDP2 changes the modules in place (no wrapper), so ``SRModel``'s methods stay callable.

What stays replicated (averaged by the Trainer like in plain multi-process training): the
parameters outside the chosen blocks - the net's output convolution (the loss stack's adaptive
weights differentiate with respect to it), small stems and embeddings, a learnable codec - and
every loss term's own module (a PatchGAN discriminator).

Checkpoints hold full (unsharded) tensors in the same layout as unsharded training, so a
sharded run resumes on any number of processes, sharded or not, and vice versa.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

_CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


def is_dtensor(value: object) -> bool:
    """Whether ``value`` is a DTensor (a sharded parameter, gradient or moment)."""
    from torch.distributed.tensor import DTensor

    return isinstance(value, DTensor)


def _size(module: nn.Module) -> int:
    # all parameters, trainable or not: the EMA shadow (frozen) must get the same units
    return sum(p.numel() for p in module.parameters())


def shard_units(net: nn.Module, keep: str | None = None, share: float = 0.25) -> list[nn.Module]:
    """The blocks of ``net`` to shard, one FSDP unit each (each is all-gathered on its own).

    Walks down from ``net``: containers (ModuleList / Sequential / ModuleDict), modules holding
    more than ``share`` of the net's parameters and modules containing ``keep`` are opened; any
    other child with parameters is a unit. ``keep``: the name of a parameter (e.g.
    ``out_conv.weight``, the output convolution) whose module stays replicated. For the UNet
    this gives the res blocks, attention blocks, down/up-samplers and embeddings; for EDSR /
    RCAN / SwinIR their residual groups or blocks.
    """
    keep_module = net.get_submodule(keep.rpartition(".")[0]) if keep else None
    total = max(_size(net), 1)
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if child is keep_module or _size(child) == 0:
                continue
            contains_keep = keep_module is not None and any(m is keep_module for m in child.modules())
            opens = isinstance(child, _CONTAINERS) or contains_keep or _size(child) > share * total
            if opens and any(True for _ in child.children()):
                visit(child)
            elif not contains_keep:
                units.append(child)

    visit(net)
    return units


def apply_fsdp(units: Iterable[nn.Module], world: int, device: torch.device, reshard_after_forward: bool) -> None:
    """``fully_shard`` each unit over all ``world`` processes (a 1-D device mesh)."""
    from torch.distributed.device_mesh import init_device_mesh

    try:  # public FSDP2 (and distribute_tensor(src_data_rank=)) since torch 2.6
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        from diffsr.core.errors import ConfigError

        raise ConfigError(f"train.shard=fsdp needs torch >= 2.6 (FSDP2); this is torch {torch.__version__}") from None

    mesh = init_device_mesh(device.type, (world,))
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward)


def full_tensors(value: Any, keep: bool = True) -> Any:
    """``value`` (a tensor, or dicts / lists of them) with every DTensor gathered into a full tensor.

    Collective: every process must call it with the same structure, in the same order. Tensors
    are gathered one at a time; with ``keep`` each full tensor is moved to the CPU (the device
    holds one full tensor at a time), without it (processes that do not write) it is dropped.
    """
    if is_dtensor(value):
        full = value.full_tensor()
        return full.cpu() if keep else None
    if isinstance(value, dict):
        return {k: full_tensors(v, keep) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(full_tensors(v, keep) for v in value)
    return value


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After ``load_state_dict`` of a full (checkpoint) state: give each sharded parameter its shard.

    torch's loader copies the full moment tensors as they are; each DTensor parameter needs
    its moments as a DTensor with the same placement (each process slices its own part, no
    communication).
    """
    from torch.distributed.tensor import distribute_tensor

    for group in optimizer.param_groups:
        for p in group["params"]:
            if not is_dtensor(p) or p not in optimizer.state:
                continue
            state = optimizer.state[p]
            for key, value in list(state.items()):
                if isinstance(value, Tensor) and not is_dtensor(value) and value.shape == p.shape:
                    state[key] = distribute_tensor(value.to(p.dtype), p.device_mesh, p.placements, src_data_rank=None)


def grad_norm(params: Iterable[nn.Parameter], device: torch.device) -> Tensor:
    """The global L2 norm of the gradients of sharded (DTensor) and replicated parameters together.

    Sharded gradients contribute their local part, summed over processes; replicated ones
    (already averaged, equal everywhere) are counted once. Collective when any is sharded.
    """
    import torch.distributed as dist

    sharded = torch.zeros((), device=device, dtype=torch.float64)
    replicated = torch.zeros((), device=device, dtype=torch.float64)
    has_sharded = False
    for p in params:
        g = p.grad
        if g is None:
            continue
        if is_dtensor(g):
            has_sharded = True
            sharded += g.to_local().double().square().sum()
        else:
            replicated += g.double().square().sum()
    if has_sharded and dist.is_available() and dist.is_initialized():
        dist.all_reduce(sharded, op=dist.ReduceOp.SUM)
    return (sharded + replicated).sqrt().float()


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float, device: torch.device) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for a mix of sharded and replicated parameters.

    The same rule: scale every gradient by ``min(1, max_norm / (norm + 1e-6))``; returns the
    norm before clipping (non-finite: nothing is scaled, the caller skips the step).
    """
    params = [p for p in params if p.grad is not None]
    norm = grad_norm(params, device)
    if torch.isfinite(norm):
        coef = min(1.0, max_norm / (float(norm) + 1e-6))
        if coef < 1.0:
            for p in params:
                p.grad.mul_(coef)  # type: ignore[union-attr]
    return norm
