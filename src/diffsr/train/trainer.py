"""The training loop, built on Accelerate (CPU, one GPU or many with the same code).

Determinism and exact resume come from deriving every random draw from (seed, step): the
order of training items is a chain of seeded permutations indexed by the global sample
position, each item's crop depends on (seed, epoch, item), and the timesteps and noise of
step s come from a generator seeded with (seed, s) over the GLOBAL batch, of which each
process takes its slice. A run resumed at step N therefore sees exactly the batches, noise
and learning rates of an uninterrupted run, and N processes see the same global batch as one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffsr.config import Config
from diffsr.core.errors import CheckpointError, ConfigError, DiffsrError
from diffsr.losses.stack import NonFiniteError
from diffsr.train.checkpoint import list_checkpoints, read_checkpoint, save_checkpoint
from diffsr.train.ema import EMA
from diffsr.train.model import SRModel, StepOutputs, build_model
from diffsr.train.sharding import is_dtensor

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    checkpoint: Path | None
    step: int
    seconds: float
    steps_per_second: float
    last_report: dict[str, Any] = field(default_factory=dict)
    skipped_steps: int = 0
    val: dict[str, float] = field(default_factory=dict)
    nonfinite_terms: int = 0  # loss terms dropped for NaN/Inf (policy skip_term), summed over steps
    skipped_discriminator_steps: int = 0  # GAN discriminator steps skipped for a NaN/Inf loss or gradient


_COMPILED = "_orig_mod."  # the attribute torch.compile's wrapper module keeps the original under


def _plain_key(key: str) -> str:
    """A state-dict key without torch.compile's wrapper level ('net._orig_mod.x' -> 'net.x')."""
    return key.replace(_COMPILED, "")


def trainable_state(model: SRModel) -> dict[str, Tensor]:
    """The weights a checkpoint stores: the denoiser and any learnable codec parameters.

    A frozen VAE is not copied into every checkpoint: it is reloaded from ``codec.path``. Keys
    are those of the un-compiled model (a ``torch.compile`` wrapper's ``_orig_mod.`` is dropped).
    """
    state = {_plain_key(k): v for k, v in model.state_dict().items()}
    keep_codec = model.codec.is_learned
    return {k: v for k, v in state.items() if not k.startswith("codec.") or keep_codec}


def load_trainable_state(model: SRModel, state: dict[str, Tensor]) -> None:
    """Load what ``trainable_state`` saved; anything else must already be in the model.

    Wrong keys, wrong shapes and NaN/Inf weights are :class:`CheckpointError` (one line). Keys
    saved from a compiled net by older versions (``net._orig_mod.*``) load too, into a
    compiled model or not.
    """
    own = model.state_dict()
    alias = {_plain_key(k): k for k in own}
    state = {alias.get(_plain_key(k), _plain_key(k)): v for k, v in state.items()}
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"checkpoint does not match the model: '{k}' has shape {tuple(state[k].shape)}, "
            f"the model expects {tuple(own[k].shape)} ({len(wrong)} mismatched tensor(s))"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint holds NaN/Inf weights in {bad[:3]} ({len(bad)} tensor(s))")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("codec.") or model.codec.is_learned]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match the model: missing {missing[:3]}, unexpected {list(unexpected)[:3]}"
        )


def stack_state(stack: torch.nn.Module) -> dict[str, Any]:
    """The loss stack's resumable state (discriminators, their optimisers), without frozen networks.

    Frozen term networks (LPIPS backbones, a user's feature network) are rebuilt from their
    weight files, so they are not copied into every checkpoint.
    """
    frozen = []
    for name, module in getattr(stack, "term_modules", {}).items():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            frozen.append(f"term_modules.{name}.")
    return {k: v for k, v in stack.state_dict().items() if not any(k.startswith(f) for f in frozen)}


def term_optimizers(stack: torch.nn.Module) -> list[torch.optim.Optimizer]:
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


def lr_lambda(config: Config) -> Callable[[int], float]:
    """Linear warm-up then cosine (or constant) decay to ``min_lr_ratio``."""
    tc = config.train

    def f(step: int) -> float:
        if tc.warmup_steps and step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        if tc.lr_schedule == "constant":
            return 1.0
        span = max(1, tc.steps - tc.warmup_steps)
        progress = min(1.0, (step - tc.warmup_steps) / span)
        return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


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


class Trainer:
    """Train an SRModel with the loss stack described by a Config."""

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        cpu: bool | None = None,
        model_hook: Callable[[SRModel], SRModel] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.show_progress = progress
        self.cpu = cpu
        self.model_hook = model_hook

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        from accelerate import Accelerator

        from diffsr.data.datasets import build_datasets
        from diffsr.losses import build_loss_stack
        from diffsr.train.audit import audit_config

        cfg = self.config
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        cuda = torch.cuda.is_available() and not self.cpu
        precision = cfg.train.mixed_precision
        if precision == "auto":
            precision = "bf16" if cuda else "no"
        self.accelerator = Accelerator(mixed_precision=precision, cpu=not cuda)
        acc = self.accelerator
        kind = str(getattr(acc.distributed_type, "value", acc.distributed_type))
        shard, reshard = cfg.train.shard, cfg.train.reshard_after_forward
        if kind == "FSDP":  # an Accelerate FSDP config: diffsr shards the model itself (sharding.py)
            shard, reshard = "fsdp", accelerate_fsdp_reshard(acc.state.fsdp_plugin)
        elif kind == "DEEPSPEED":  # its ZeRO stage selects the same sharding; DeepSpeed's engine is not used
            shard, reshard = "fsdp", accelerate_deepspeed_reshard(acc.state.deepspeed_plugin)
            log.info("DeepSpeed config: ZeRO stage mapped to train.shard=fsdp, reshard_after_forward=%s "
                     "(diffsr's own FSDP2 sharding; docs/distributed.md)", reshard)
        elif kind == "MEGATRON_LM":
            raise ConfigError(
                "accelerate distributed type MEGATRON_LM is not supported: use plain multi-process training or "
                "train.shard=fsdp (ZeRO-3 / ZeRO-2-like sharding) - see docs/distributed.md"
            )
        self.world = acc.num_processes
        self.rank = acc.process_index
        if kind == "DEEPSPEED" and self.world == 1:
            raise ConfigError("a DeepSpeed config with one process: launch without it (plain single-device "
                              "training), or with several processes - see docs/distributed.md")
        # under a DeepSpeed config Accelerate's autocast does nothing (it expects DeepSpeed's engine)
        self._bf16_autocast = kind == "DEEPSPEED" and precision == "bf16"
        if cfg.data.batch_size % self.world:
            raise ConfigError(
                f"data.batch_size: {cfg.data.batch_size} does not split over {self.world} processes"
            )
        self.local_batch = cfg.data.batch_size // self.world
        self.sharded = shard == "fsdp" and self.world > 1
        if self.sharded and precision == "fp16":
            raise ConfigError("train.mixed_precision: fp16 cannot be combined with train.shard=fsdp "
                              "(the loss scaler does not unscale sharded gradients); use bf16")
        if self.sharded and cfg.train.compile:
            raise ConfigError("train.compile: not supported together with train.shard=fsdp")

        # the config audit before any compute (no model, no data read): the process alone knows
        # its t range; a term that never switches on is its error, not also a warning
        from diffsr.processes import build_process

        audit_config(cfg, has_decoder=True, t_range=build_process(cfg.process).t_range)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg)
        if self.model_hook is not None:
            model = self.model_hook(model)
        self.train_set, self.val_set = build_datasets(cfg.data, seed=cfg.train.seed)
        self.stream = BatchStream(self.train_set, cfg.data.batch_size, cfg.train.seed)
        stack = build_loss_stack(
            cfg.losses, channels=cfg.data.channels, codec=model.codec, total_steps=cfg.train.steps
        )
        self.stack = stack.to(acc.device)
        model = model.to(acc.device)
        # the EMA copies the plain model (before compiling): its shadow is never a compiled module
        self.ema = EMA(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.model = model
        self.raw_model: SRModel = model
        self.step = 0
        self.skipped = 0
        self.nonfinite_terms = 0
        self.term_skips: dict[str, int] = {}  # per term: steps it was dropped for NaN/Inf
        self.bad_streak = 0
        # weights first (into the plain model, before sharding), optimiser state after it exists
        ckpt = self._read_latest() if self.resume else None
        if ckpt is not None:
            self._load_weights(*ckpt)
        if cfg.train.audit and self.step == 0:
            self._audit_reachability()  # plain autograd on the unsharded model, on every process
        if self.sharded:
            from diffsr.train.sharding import apply_fsdp, shard_units

            # the output conv stays replicated: adaptive loss weights differentiate with respect to it
            keep = next((n for n, p in model.net.named_parameters() if p is model.last_layer), None)
            nets = [model.net] + ([self.ema.shadow.net] if self.ema is not None else [])
            for net in nets:  # the EMA shadow is sharded the same way: its update stays local
                units = shard_units(net, keep=keep)
                apply_fsdp(units, self.world, acc.device, reshard)
            log.info("FSDP: %d blocks of the denoiser sharded over %d processes", len(units), self.world)
        if cfg.train.compile:
            # compiled in place (nn.Module.compile): model.net stays the original module, so the
            # state dict keeps its plain keys ('net.*', not 'net._orig_mod.*') and checkpoints
            # load in load_model / sr / eval without torch.compile
            model.net.compile(dynamic=False)
        params = [p for p in model.parameters() if p.requires_grad]
        # sharded: one group mixes DTensor and plain parameters, which the multi-tensor (foreach)
        # kernels refuse on CUDA; one group keeps the checkpoint layout of unsharded training
        optimizer = torch.optim.AdamW(
            params, lr=cfg.train.lr, betas=cfg.train.betas, weight_decay=cfg.train.weight_decay,
            foreach=False if self.sharded else None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        # the model is not wrapped in DDP: replicated gradients are averaged explicitly (see
        # _sync_grads), which works the same for gloo/NCCL and keeps SRModel's methods callable;
        # prepare_optimizer, not prepare: under an Accelerate FSDP config prepare() wants the model
        self.optimizer = acc.prepare_optimizer(optimizer)
        if ckpt is not None:
            self._load_state(*ckpt)
        if self.world > 1:
            self._sync_term_optimizers()

    def _read_latest(self) -> tuple[Path, dict[str, Any]] | None:
        found = list_checkpoints(self.run_dir)
        if not found:
            log.info("no checkpoint in %s: starting from scratch", self.run_dir)
            return None
        ckpt = read_checkpoint(found[-1])
        state = ckpt["state"]
        need = ("step", "optimizer", "scheduler")
        if not isinstance(state, dict) or any(k not in state for k in need):
            raise CheckpointError(f"{found[-1]}/state.pt: not a diffsr training state (needs {', '.join(need)})")
        return found[-1], ckpt

    def _load_weights(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Model and EMA weights, step and counters (before sharding and before the optimiser exists)."""
        load_trainable_state(self.raw_model, ckpt["model"])
        if self.ema is not None and ckpt["ema"] is not None:
            ema_state = {_plain_key(k): v for k, v in ckpt["ema"].items()}  # an old compiled run's keys
            self.ema.load_state_dict({**self.ema.shadow.state_dict(), **ema_state})
        state = ckpt["state"]
        if self.ema is not None:
            self.ema.updates = int(state.get("ema_updates", 0))
        self.step = int(state["step"])
        self.skipped = int(state.get("skipped", 0))
        self.nonfinite_terms = int(state.get("nonfinite_terms", 0))
        self.term_skips = {str(k): int(v) for k, v in dict(state.get("term_skips", {})).items()}
        self.bad_streak = int(state.get("bad_streak", 0))

    def _load_state(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Optimiser, LR schedule and loss-stack state (after the optimiser exists)."""
        state = ckpt["state"]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:  # torch's message for another model / config
            raise CheckpointError(
                f"{path}/state.pt: the optimiser state does not fit this model ({str(err).splitlines()[0]})"
            ) from None
        if self.sharded:
            from diffsr.train.sharding import shard_optimizer_state

            shard_optimizer_state(getattr(self.optimizer, "optimizer", self.optimizer))
        self.scheduler.load_state_dict(state["scheduler"])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and state.get("scaler"):  # fp16: the loss scale and its growth tracker
            scaler.load_state_dict(state["scaler"])
        if state.get("stack"):
            self.stack.load_state_dict(state["stack"], strict=False)
        for name, module in self.stack.named_modules():
            repair = getattr(module, "repair_nonfinite", None)
            if callable(repair) and repair():
                log.warning("%s/state.pt: NaN/Inf in the discriminator %s (weights or optimiser state): "
                            "re-initialised it", path, name)
        log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ one step
    def _batch(self, step: int) -> dict[str, Tensor]:
        from diffsr.data.datasets import collate_pad

        lo = self.rank * self.local_batch
        items = self.stream.items(step, lo, lo + self.local_batch)
        batch = collate_pad(items)
        return {k: v.to(self.accelerator.device) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def _forward(self, batch: dict[str, Tensor], step: int) -> tuple[StepOutputs, Tensor, Any]:
        model = self.raw_model
        cfg = self.config
        device = self.accelerator.device
        gen = step_generator(cfg.train.seed, step, device)
        global_b = cfg.data.batch_size
        t_all = model.process.sample_t(global_b, device, gen)
        z0, zc = model.encode_pair(batch["hr"], batch["lr_up"], batch.get("lr"))
        shape = (global_b, *z0.z.shape[1:])
        noise_all = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        lo = self.rank * self.local_batch
        t = t_all[lo : lo + self.local_batch]
        noise = noise_all[lo : lo + self.local_batch].to(z0.z.dtype)
        with self.autocast():
            z_t = model.process.q_sample(z0.z, zc.z, t, noise)
            out = model.process.denoise(model.bind_net(zc), z_t, t, zc.z)
            z0_hat = model.process.x0(z_t, out.float(), t, zc.z)
            diffusion = model.process.loss(out, z0.z, zc.z, t, noise)
        outputs = StepOutputs(z0, zc, t, noise, z_t, out, z0_hat, diffusion)
        total, report = self.stack(
            z0_hat=z0_hat,
            t=t,
            step=step,
            decode=model.decoder_for(zc),
            hr=batch["hr"],
            z0=z0.z,
            mask=batch.get("mask"),
            paired=batch.get("paired"),
            diffusion=diffusion,
            last_layer=model.last_layer,
        )
        return outputs, total, report

    def autocast(self) -> Any:
        """The mixed-precision context of a training forward (``train.mixed_precision``)."""
        if self._bf16_autocast:
            return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16)
        return self.accelerator.autocast()

    def _sync_grads(self) -> None:
        """Average gradients over processes (the global-batch mean, as DDP would)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in self.model.parameters():
            if not p.requires_grad or (self.sharded and is_dtensor(p)):
                continue  # FSDP has already reduce-scattered (averaged) a sharded parameter's gradient
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(self.world)

    def _sync_term_optimizers(self) -> None:
        """Average the gradients of the loss terms' own optimisers (a GAN discriminator) over processes.

        Each process trains the discriminator on its slice of the batch; without this its
        weights would drift apart between processes (and differ from a one-process run).
        A step pre-hook on every optimiser a term module holds averages the gradients of
        that optimiser's parameters right before it steps, as DDP would.
        """
        import torch.distributed as dist

        world = self.world
        optimizers = term_optimizers(self.stack)
        # the module owning each optimiser: its ``last_rows`` (rows it learnt from on this
        # process, 0 when it had none) weights the average, so that every process always takes
        # part in the all-reduce (a gated GAN term may have rows on one process only) and the
        # result is the mean over all rows, as one process would compute it
        owners = {id(opt): module for module in self.stack.modules() for opt in optimizers
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
            total = torch.tensor([float(rows)], device=params[0].device if params else self.accelerator.device)
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

    def _max(self, value: int) -> int:
        """The largest ``value`` over all processes (a collective decision)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        agreed = torch.tensor([float(value)], device=self.accelerator.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        return int(agreed.item())

    def _any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any (a collective decision)."""
        return bool(self._max(int(flag)))

    def _audit_reachability(self) -> None:
        from diffsr.train.audit import audit_reachability

        batch = self._batch(self.step)
        model = self.raw_model

        def probe() -> dict[str, Tensor]:
            outputs, _, _ = self._forward(batch, self.step)
            losses = self.stack.term_losses(
                z0_hat=outputs.z0_hat,
                t=outputs.t,
                decode=model.decoder_for(outputs.zc),
                hr=batch["hr"],
                z0=outputs.z0.z,
                mask=batch.get("mask"),
                paired=batch.get("paired"),
            )
            return {"diffusion": outputs.diffusion.mean(), **losses}

        # the denoiser's parameters only: a learnable codec's convolutions (layout all_learnable)
        # would otherwise make a term whose z0_hat is detached before decode look reachable
        params = [p for p in model.net.parameters() if p.requires_grad]
        audit_reachability(self.stack, probe, params).raise_if_failed()
        model.zero_grad(set_to_none=True)

    def train_step(self, step: int) -> tuple[Any, float, bool]:
        """One optimisation step; returns (report, grad_norm, applied)."""
        cfg = self.config
        # the global RNG (dropout, anything not drawn from step_generator) restarts from
        # (seed, step, rank) every step, so a resumed run draws what an uninterrupted one does
        torch.manual_seed(global_seed(cfg.train.seed, step, self.rank))
        self.model.train()
        batch = self._batch(step)
        error: DiffsrError | None = None
        try:
            _, total, report = self._forward(batch, step)
        except DiffsrError as err:  # e.g. the loss stack's non-finite policy 'stop'
            error, total, report = err, None, None
        if self.world > 1:
            # a process that stops alone would leave the others waiting in a collective: all
            # stop, and all take the same exit (a NonFiniteError saves a checkpoint, collectively)
            code = 0 if error is None else 1 if isinstance(error, NonFiniteError) else 2
            agreed = self._max(code)
            if agreed != code:
                why = f"step {step}: training stopped on another process (see its message)"
                mine = f"; here: {error}" if error is not None else ""
                error = NonFiniteError(why) if agreed == 1 else DiffsrError(why + mine)
        if error is not None:
            self.optimizer.zero_grad(set_to_none=True)
            raise error
        applied = False
        grad_norm = float("nan")
        self.nonfinite_terms += int(getattr(report, "nonfinite", 0))
        for name, term in getattr(report, "terms", {}).items():
            if getattr(term, "skipped", False):
                self.term_skips[name] = self.term_skips.get(name, 0) + 1
        ok = bool(torch.isfinite(total)) and not getattr(report, "skip_step", False)
        if getattr(report, "nonfinite", 0) and total.grad_fn is None:
            ok = False  # every term was dropped for NaN/Inf: nothing left to learn from
        # every process must take the same branch (collectives below)
        ok = not self._any(not ok)
        if ok:
            if self.sharded:  # no loss scaler with sharding; under a DeepSpeed config Accelerate's
                total.backward()  # backward would look for a DeepSpeed engine diffsr does not create
            else:
                self.accelerator.backward(total)
            self._sync_grads()
            if cfg.train.grad_clip and not self.sharded:
                norm = self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            else:  # sharded: one global norm over sharded and replicated gradients
                from diffsr.train.sharding import clip_grad_norm, grad_norm

                self.accelerator.unscale_gradients()  # fp16: the true norm, not the scaled one
                params = list(self.model.parameters())
                device = self.accelerator.device
                norm = clip_grad_norm(params, cfg.train.grad_clip, device) if cfg.train.grad_clip \
                    else grad_norm(params, device)
            grad_norm = float(norm)
            if math.isfinite(grad_norm):
                self.optimizer.step()
                applied = not getattr(self.optimizer, "step_was_skipped", False)
            elif getattr(self.accelerator, "scaler", None) is not None:
                # fp16: the GradScaler must see the overflow to lower its scale (it skips the
                # update itself); without this every later step would overflow again
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if applied:
            self.bad_streak = 0
            if self.ema is not None:
                self.ema.update(self.raw_model)
            if hasattr(self.stack, "discriminator_step"):
                self.stack.discriminator_step(step)
        else:
            self.skipped += 1
            self.bad_streak += 1
        return report, grad_norm, applied

    # ------------------------------------------------------------------ checkpoints
    def save(self, report: Any = None) -> Path | None:
        """Write a checkpoint (main process only); returns its folder."""
        self.accelerator.wait_for_everyone()
        main = self.accelerator.is_main_process
        if not (main or self.sharded):  # sharded: every process takes part in gathering the state
            return None
        model_state = trainable_state(self.raw_model)
        ema_state = trainable_state(self.ema.shadow) if self.ema is not None else None
        optimizer_state = self.optimizer.state_dict()
        if self.sharded:  # full tensors, the layout of unsharded training (collective: every process);
            # gathered one at a time and kept, on the CPU, by the main process only
            from diffsr.train.sharding import full_tensors

            model_state, ema_state, optimizer_state = full_tensors(
                (model_state, ema_state, optimizer_state), keep=main)
        if not main:
            return None
        state = {
            "step": self.step,
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "stack": stack_state(self.stack),
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "skipped": self.skipped,
            "nonfinite_terms": self.nonfinite_terms,
            "term_skips": dict(self.term_skips),
            "bad_streak": self.bad_streak,  # consecutive bad steps count across a resume
        }
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None:  # fp16: resume with the same loss scale, not the initial one
            state["scaler"] = scaler.state_dict()
        meta = {
            "report": _report_dict(report),
            "skipped_steps": self.skipped,
            "nonfinite_terms": self.nonfinite_terms,
            "term_skips": dict(self.term_skips),
            "skipped_discriminator_steps": self.skipped_discriminator,
            "diffsr_version": _version(),
        }
        return save_checkpoint(
            self.run_dir,
            self.step,
            model=model_state,
            ema=ema_state,
            state=state,
            config_yaml=self.config.to_yaml(),
            meta=meta,
            keep_last=self.config.train.keep_last,
        )

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, max_items: int | None = None) -> dict[str, float]:
        """PSNR of the (EMA) model and of bicubic on the validation set, sharded over processes."""
        from diffsr.eval.metrics import psnr

        model = self.ema.shadow if self.ema is not None else self.raw_model
        model.eval()
        n = len(self.val_set) if max_items is None else min(max_items, len(self.val_set))
        rows = []
        # sharded: every process must run as many forward passes as the others (each gathers
        # parameters from all); a process short of images samples one more and drops it
        mine = list(range(self.rank, n, self.world))
        rounds = -(-n // self.world) if self.sharded else len(mine)
        for k in range(rounds):
            i = mine[k] if k < len(mine) else 0
            item = self.val_set[i]
            hr = item["hr"][None].to(self.accelerator.device)
            lr_up = item["lr_up"][None].to(self.accelerator.device)
            gen = step_generator(self.config.sample.seed, i, self.accelerator.device)
            # a baseline (EDSR / RCAN / SwinIR) maps the LR image itself to SR
            lr = item["lr"][None].to(self.accelerator.device) if model.is_baseline else None
            sr = model.sample(lr_up, steps=self.config.sample.steps, generator=gen, lr=lr)
            if k < len(mine):
                rows.append([float(psnr(sr, hr, data_range=1.0)[0]),
                             float(psnr(lr_up.clamp(0, 1), hr, data_range=1.0)[0])])
        if self.world > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        if not rows:
            return {}
        gathered = torch.tensor(rows, dtype=torch.float64)
        return {
            "val/psnr": float(gathered[:, 0].mean()),
            "val/psnr_bicubic": float(gathered[:, 1].mean()),
            "val/images": float(len(gathered)),
        }

    # ------------------------------------------------------------------ loop
    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or ``train.time_limit``) and return where things are.

        ``stop_after``: leave (with a checkpoint) after this many steps of this call, e.g. to
        split a long run into cluster jobs; schedules still follow ``train.steps``.
        """
        self._setup()
        cfg = self.config
        acc = self.accelerator
        main = acc.is_main_process
        writer = None
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            from diffsr.config import save_config

            save_config(cfg, self.run_dir / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        from diffsr.losses import log_report

        start_step = self.step
        t0 = time.perf_counter()
        last_report: Any = None
        last_ckpt: Path | None = None
        val: dict[str, float] = {}
        progress = _progress(main and self.show_progress)
        task = progress.add_task("train", total=cfg.train.steps, completed=self.step, info="")
        try:
            with progress:
                while self.step < cfg.train.steps:
                    step = self.step
                    try:
                        report, grad_norm, applied = self.train_step(step)
                    except NonFiniteError as err:
                        # policy 'stop' or too many bad steps in the loss stack: the weights are
                        # still those of the last good step, keep them
                        last_ckpt = self.save(last_report)
                        raise NonFiniteError(f"{err}{_saved(last_ckpt)}") from None
                    self.step += 1
                    last_report = report
                    elapsed = time.perf_counter() - t0
                    rate = (self.step - start_step) / max(elapsed, 1e-9)
                    if main and (step % cfg.train.log_every == 0 or self.step == cfg.train.steps or not applied):
                        log_report(writer, report, step)
                        writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], step)
                        writer.add_scalar("train/grad_norm", grad_norm, step)
                        writer.add_scalar("train/it_per_s", rate, step)
                        writer.add_scalar("train/skipped_steps", self.skipped, step)
                        writer.add_scalar("train/nonfinite_terms", self.nonfinite_terms, step)
                        for name in report.terms:  # per-term NaN/Inf drop counts (cumulative)
                            writer.add_scalar(f"skipped/{name}", self.term_skips.get(name, 0), step)
                        writer.add_scalar("train/skipped_discriminator_steps", self.skipped_discriminator, step)
                        progress.update(task, info=f"{report.summary()} | {rate:.2f} it/s")
                    progress.update(task, completed=self.step)
                    if self.bad_streak >= cfg.losses.nonfinite.max_consecutive:
                        last_ckpt = self.save(report)
                        raise NonFiniteError(
                            f"training stopped at step {self.step}: {self.bad_streak} consecutive steps with "
                            f"non-finite loss or gradients (losses.nonfinite.max_consecutive)"
                            f"{_saved(last_ckpt)}"
                        )
                    if cfg.train.val_every and self.step % cfg.train.val_every == 0:
                        val = self.validate(cfg.data.val_images)
                        if main and val:
                            for k, v in val.items():
                                writer.add_scalar(k, v, self.step)
                    if self.step % cfg.train.ckpt_every == 0 and self.step < cfg.train.steps:
                        last_ckpt = self.save(report) or last_ckpt
                    # each process measures its own time: decide together, or one would leave
                    # the loop while the others wait for it in the next collective
                    if cfg.train.time_limit and self._any(elapsed > cfg.train.time_limit):
                        log.info("time limit %.0f s reached at step %d", cfg.train.time_limit, self.step)
                        break
                    if stop_after is not None and self.step - start_step >= stop_after:
                        break
        finally:
            if writer is not None:  # a stopped run keeps its curves (skipped steps included)
                writer.close()
        seconds = time.perf_counter() - t0
        last_ckpt = self.save(last_report) or last_ckpt
        return TrainResult(
            run_dir=self.run_dir,
            checkpoint=last_ckpt,
            step=self.step,
            seconds=seconds,
            steps_per_second=(self.step - start_step) / max(seconds, 1e-9),
            last_report=_report_dict(last_report),
            skipped_steps=self.skipped,
            val=val,
            nonfinite_terms=self.nonfinite_terms,
            skipped_discriminator_steps=self.skipped_discriminator,
        )

    @property
    def skipped_discriminator(self) -> int:
        """Discriminator steps skipped for a NaN/Inf loss or gradient (kept in the stack's state)."""
        return sum(int(getattr(m, "skipped_steps", 0)) for m in self.stack.modules())


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


def _saved(checkpoint: Path | None) -> str:
    return f"; last good weights saved to {checkpoint}" if checkpoint is not None else ""


def _report_dict(report: Any) -> dict[str, Any]:
    if report is None:
        return {}
    to_dict = getattr(report, "to_dict", None)
    return to_dict() if callable(to_dict) else {}


def _version() -> str:
    from diffsr import __version__

    return __version__


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    )


def train(config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Convenience wrapper: ``Trainer(config, run_dir, resume=...).fit()``."""
    return Trainer(config, run_dir, resume=resume, progress=progress).fit()
