"""Multi-process training helpers: Accelerate configs mapped onto diffsr's sharding, gradient
averaging for replicated parameters and for the loss terms' own optimisers, and collective
decisions (every process takes the same branch, or one would wait forever in a collective).

The model is not wrapped in DDP: replicated gradients are averaged explicitly
(:func:`sync_grads`), which works the same for gloo and NCCL and keeps SRModel's methods
callable. FSDP2 sharding itself lives in :mod:`diffsr.train.sharding`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from diffsr.core.errors import ConfigError
from diffsr.train.sharding import is_dtensor

log = logging.getLogger(__name__)

__all__ = [
    "Collective",
    "accelerate_deepspeed_reshard",
    "accelerate_fsdp_reshard",
    "resolve_sharding",
    "sync_grads",
    "sync_term_optimizers",
    "term_optimizers",
]


def accelerate_fsdp_reshard(plugin: Any) -> bool:
    """``reshard_after_forward`` for an Accelerate FSDP plugin (``accelerate launch --config_file fsdp.yaml``).

    FULL_SHARD / ``true`` -> True (ZeRO-3), SHARD_GRAD_OP / ``false`` -> False (ZeRO-2-like).
    Anything diffsr does not implement (hybrid or no sharding, parameter CPU offload) is a
    ConfigError rather than being silently ignored.
    """
    mode = getattr(plugin, "reshard_after_forward", None)
    if mode is None:  # FSDP1-style plugin
        mode = getattr(plugin, "sharding_strategy", True)
    name = str(getattr(mode, "name", mode)).upper()
    offload = getattr(plugin, "cpu_offload", None)
    if offload and (getattr(offload, "offload_params", False) or type(offload).__name__ == "CPUOffloadPolicy"):
        raise ConfigError("accelerate FSDP: CPU offload is not supported by diffsr's sharding (docs/distributed.md)")
    if name in ("TRUE", "FULL_SHARD", "1"):
        return True
    if name in ("FALSE", "SHARD_GRAD_OP", "2"):
        return False
    raise ConfigError(f"accelerate FSDP: sharding strategy {name} is not supported by diffsr "
                      "(FULL_SHARD or SHARD_GRAD_OP; docs/distributed.md)")


def accelerate_deepspeed_reshard(plugin: Any) -> bool:
    """``reshard_after_forward`` for an Accelerate DeepSpeed plugin: ZeRO-1/2 -> False, ZeRO-3 -> True.

    diffsr does not run DeepSpeed's engine (it would take over the optimiser, loss scaling and
    checkpoints); the stage selects diffsr's FSDP2 sharding with the matching memory profile.
    Stage 0 and CPU / NVMe offload have no equivalent here and are refused.
    """
    config = getattr(plugin, "deepspeed_config", None) or {}
    zero = config.get("zero_optimization", {}) if isinstance(config, dict) else {}
    stage = zero.get("stage", getattr(plugin, "zero_stage", None))
    for key in ("offload_optimizer", "offload_param"):
        section = zero.get(key)
        device = section.get("device", "none") if isinstance(section, dict) else "none"
        if str(device).lower() not in ("none", "null"):
            raise ConfigError(f"DeepSpeed config: zero_optimization.{key}.device={device}: offload is not supported "
                              "by diffsr's sharding (docs/distributed.md)")
    if stage in (1, 2):
        return False
    if stage == 3:
        return True
    raise ConfigError(f"DeepSpeed config: ZeRO stage {stage} is not supported (1, 2 or 3; for stage 0 launch "
                      "plain multi-GPU instead; docs/distributed.md)")


def resolve_sharding(accelerator: Any, shard: str, reshard: bool) -> tuple[str, bool, str]:
    """(shard, reshard_after_forward, distributed kind) for ``train.shard`` under an Accelerate launch.

    An Accelerate FSDP or DeepSpeed config selects diffsr's own FSDP2 sharding (its engine is not
    used); Megatron is refused.
    """
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    if kind == "FSDP":  # an Accelerate FSDP config: diffsr shards the model itself (sharding.py)
        return "fsdp", accelerate_fsdp_reshard(accelerator.state.fsdp_plugin), kind
    if kind == "DEEPSPEED":  # its ZeRO stage selects the same sharding; DeepSpeed's engine is not used
        reshard = accelerate_deepspeed_reshard(accelerator.state.deepspeed_plugin)
        log.info("DeepSpeed config: ZeRO stage mapped to train.shard=fsdp, reshard_after_forward=%s "
                 "(diffsr's own FSDP2 sharding; docs/distributed.md)", reshard)
        return "fsdp", reshard, kind
    if kind == "MEGATRON_LM":
        raise ConfigError(
            "accelerate distributed type MEGATRON_LM is not supported: use plain multi-process training or "
            "train.shard=fsdp (ZeRO-3 / ZeRO-2-like sharding) - see docs/distributed.md"
        )
    return shard, reshard, kind


class Collective:
    """Decisions every process agrees on (no-ops for one process)."""

    def __init__(self, world: int, device: torch.device) -> None:
        self.world, self.device = world, device

    def max(self, value: int) -> int:
        """The largest ``value`` over all processes."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        agreed = torch.tensor([float(value)], device=self.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        return int(agreed.item())

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any."""
        return bool(self.max(int(flag)))


def sync_grads(model: nn.Module, world: int, sharded: bool) -> None:
    """Average gradients over processes (the global-batch mean, as DDP would)."""
    if world == 1:
        return
    import torch.distributed as dist

    for p in model.parameters():
        if not p.requires_grad or (sharded and is_dtensor(p)):
            continue  # FSDP has already reduce-scattered (averaged) a sharded parameter's gradient
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)


def term_optimizers(stack: nn.Module) -> list[torch.optim.Optimizer]:
    """The optimisers held by the loss stack's modules (e.g. a GAN term's discriminator optimiser).

    Found as attributes of any submodule (directly, or inside a list, tuple or dict attribute).
    """
    found: list[torch.optim.Optimizer] = []
    for module in stack.modules():
        for value in vars(module).values():
            if isinstance(value, dict):
                value = list(value.values())
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, torch.optim.Optimizer) and all(item is not f for f in found):
                    found.append(item)
    return found


def sync_term_optimizers(stack: nn.Module, world: int, device: torch.device) -> None:
    """Average the gradients of the loss terms' own optimisers (a GAN discriminator) over processes.

    Each process trains the discriminator on its slice of the batch; without this its weights
    would drift apart between processes (and differ from a one-process run). A step pre-hook on
    every optimiser a term module holds averages the gradients of that optimiser's parameters
    right before it steps, as DDP would. The module owning each optimiser weights the average by
    its ``last_rows`` (rows it learnt from on this process, 0 when it had none), so that every
    process always takes part in the all-reduce (a gated GAN term may have rows on one process
    only) and the result is the mean over all rows, as one process would compute it.
    """
    import torch.distributed as dist

    optimizers = term_optimizers(stack)
    owners = {id(opt): module for module in stack.modules() for opt in optimizers
              if any(v is opt for v in vars(module).values())}

    def average(optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        rows = getattr(owners.get(id(optimizer)), "last_rows", None)
        if rows is None:  # an optimiser that does not say: the plain mean over processes
            for p in params:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(world)
            return
        total = torch.tensor([float(rows)], device=params[0].device if params else device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        n = float(total.item())
        if n == 0:  # no process had rows: no update at all (None gradients are skipped)
            for p in params:
                p.grad = None
            return
        for p in params:
            p.grad.mul_(float(rows))
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(n)

    for optimizer in optimizers:
        optimizer.register_step_pre_hook(average)
