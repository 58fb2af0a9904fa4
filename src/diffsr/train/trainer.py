"""The training loop, built on Accelerate (CPU, one GPU or many with the same code).

One step: the step's batch (:mod:`diffsr.train.batches`, deterministic in (seed, step)), its
timesteps and noise drawn over the GLOBAL batch from :func:`step_generator` (each process takes
its slice), THE training forward (:meth:`diffsr.model.SRModel.forward`), the loss stack,
backward, gradient averaging (:mod:`diffsr.train.distributed`), clipping, AdamW, EMA and the
GAN discriminator's step. A run resumed at step N (:mod:`diffsr.train.state`) sees exactly the
batches, noise and learning rates of an uninterrupted run, and N processes see the same global
batch as one. What the run shows and records lives in :mod:`diffsr.train.logs`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffsr.config import Config
from diffsr.core.errors import CheckpointError, ConfigError, DiffsrError
from diffsr.losses.stack import NonFiniteError
from diffsr.model import SRModel, StepOutputs, build_model, load_trainable_state, stack_inputs, trainable_state
from diffsr.train.batches import BatchStream, StepBatches, global_seed, step_batches, step_generator
from diffsr.train.distributed import (
    Collective,
    accelerate_deepspeed_reshard,
    accelerate_fsdp_reshard,
    resolve_sharding,
    sync_grads,
    sync_term_optimizers,
    term_optimizers,
)
from diffsr.train.ema import EMA
from diffsr.train.logs import TrainLog, progress_bar
from diffsr.train.state import (
    check_resumable,
    read_latest,
    report_dict,
    restore_optimizer,
    restore_weights,
    save_training_checkpoint,
    stack_state,
)

log = logging.getLogger(__name__)

__all__ = [
    "BatchStream",
    "TrainResult",
    "Trainer",
    "accelerate_deepspeed_reshard",
    "accelerate_fsdp_reshard",
    "global_seed",
    "load_trainable_state",
    "lr_lambda",
    "stack_state",
    "step_generator",
    "term_optimizers",
    "train",
    "trainable_state",
]


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


class Trainer:
    """Train an SRModel with the loss stack described by a Config.

    resume: continue from the newest checkpoint in ``run_dir`` (its data.scale / channels, codec,
    net and process must equal the config's: :func:`~diffsr.train.state.check_resumable`); when there
    is none, True starts from scratch with a warning and "must" is an error.
    model_hook: called with the freshly built model before anything else sees it (one-step
    distillation initialises the student from its teacher there).
    datasets: (train, val) to train on instead of those ``config.data`` describes (e.g. the
    slices of one scan that ``diffsr iso`` makes in memory); their scale and degradation must
    be the config's.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        resume: bool | str = False,
        progress: bool = True,
        cpu: bool | None = None,
        model_hook: Callable[[SRModel], SRModel] | None = None,
        datasets: tuple[Any, Any] | None = None,
    ) -> None:
        self.config = config
        self.datasets = datasets
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.show_progress = progress
        self.cpu = cpu
        self.model_hook = model_hook

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        """Accelerator, config audit, model, data, loss stack, EMA, resume, sharding, optimiser."""
        from diffsr.processes import build_process
        from diffsr.train.audit import audit_config

        self._setup_accelerator()
        cfg = self.config
        # the config audit before any compute (no model, no data read): the process alone knows
        # its t range; a term that never switches on is its error, not also a warning
        audit_config(cfg, has_decoder=True, process=build_process(cfg.process))
        torch.manual_seed(cfg.train.seed)
        self._build()
        # weights first (into the plain model, before sharding), optimiser state after it exists
        ckpt = read_latest(self.run_dir) if self.resume else None
        if self.resume and ckpt is None:
            if self.resume == "must":
                raise CheckpointError(f"{self.run_dir}: --resume=must, but the run holds no complete checkpoint")
            log.warning("%s: --resume: no checkpoint to resume from; training starts from scratch", self.run_dir)
        if ckpt is not None:
            check_resumable(ckpt[0], ckpt[1], cfg)
            restore_weights(self, ckpt[1], ckpt[0])
        if cfg.train.audit and self.step == 0:
            self._audit_reachability()  # plain autograd on the unsharded model, on every process
        if self.sharded:
            self._shard()
        if cfg.train.compile:
            # compiled in place (nn.Module.compile): model.net stays the original module, so the
            # state dict keeps its plain keys ('net.*', not 'net._orig_mod.*') and checkpoints
            # load in load_model / sr / eval without torch.compile
            self.model.net.compile(dynamic=False)
        self._setup_optimizer()
        if ckpt is not None:
            restore_optimizer(self, *ckpt)
        if self.world > 1:
            sync_term_optimizers(self.stack, self.world, self.accelerator.device)

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator

        cfg = self.config
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        cuda = torch.cuda.is_available() and not self.cpu
        precision = cfg.train.mixed_precision
        if precision == "auto":
            precision = "bf16" if cuda else "no"
        self.accelerator = acc = Accelerator(mixed_precision=precision, cpu=not cuda)
        shard, reshard, kind = resolve_sharding(acc, cfg.train.shard, cfg.train.reshard_after_forward)
        self.reshard = reshard
        self.world = acc.num_processes
        self.rank = acc.process_index
        self.collective = Collective(self.world, acc.device)
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

    def _build(self) -> None:
        from diffsr.data.datasets import build_datasets
        from diffsr.losses import build_loss_stack

        cfg, acc = self.config, self.accelerator
        model = build_model(cfg)
        if self.model_hook is not None:
            model = self.model_hook(model)
        check_batch_memory(cfg, model, str(acc.device), self.local_batch)
        if self.datasets is not None:
            self.train_set, self.val_set = self.datasets
        else:
            self.train_set, self.val_set = build_datasets(cfg.data, seed=cfg.train.seed)
        self.stream = BatchStream(self.train_set, cfg.data.batch_size, cfg.train.seed)
        lo = self.rank * self.local_batch
        self.batches = StepBatches(self.stream, lo, lo + self.local_batch)
        stack = build_loss_stack(
            cfg.losses, channels=cfg.data.channels, codec=model.codec, total_steps=cfg.train.steps,
            process=model.process,
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
        self.seconds_before = 0.0  # training time of earlier sessions of a resumed run
        self._prefetched: dict[int, dict[str, Any]] = {}  # step -> batch a loader worker built

    def _shard(self) -> None:
        from diffsr.train.sharding import apply_fsdp, shard_units

        model = self.model
        # the output conv stays replicated: adaptive loss weights differentiate with respect to it
        keep = next((n for n, p in model.net.named_parameters() if p is model.last_layer), None)
        nets = [model.net] + ([self.ema.shadow.net] if self.ema is not None else [])
        for net in nets:  # the EMA shadow is sharded the same way: its update stays local
            units = shard_units(net, keep=keep)
            apply_fsdp(units, self.world, self.accelerator.device, self.reshard)
        log.info("FSDP: %d blocks of the denoiser sharded over %d processes", len(units), self.world)

    def _setup_optimizer(self) -> None:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        # sharded: one group mixes DTensor and plain parameters, which the multi-tensor (foreach)
        # kernels refuse on CUDA; one group keeps the checkpoint layout of unsharded training
        optimizer = torch.optim.AdamW(
            params, lr=cfg.train.lr, betas=cfg.train.betas, weight_decay=cfg.train.weight_decay,
            foreach=False if self.sharded else None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        # prepare_optimizer, not prepare: under an Accelerate FSDP config prepare() wants the model
        self.optimizer = self.accelerator.prepare_optimizer(optimizer)

    # ------------------------------------------------------------------ one step
    def _batch(self, step: int) -> dict[str, Any]:
        """Step ``step``'s batch on the device: the one a loader worker prepared, else built now."""
        ready = self._prefetched.pop(step, None)
        return self._to_device(ready if ready is not None else self.batches[step])

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.accelerator.device) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def _draw(self, step: int, batch: dict[str, Any]) -> tuple[Tensor | None, Tensor]:
        """This process's slice of the step's timesteps and noise, drawn over the global batch.

        With ``train.faithful_fraction`` f > 0 a share f of the rows (drawn after the noise, so the
        other rows keep their draws) is moved to the one-step sampler's start time; their
        diffusion loss gets weight 0 and the others 1 / (1 - f) (:attr:`_diffusion_rows`).
        """
        cfg, model = self.config, self.raw_model
        device = self.accelerator.device
        gen = step_generator(cfg.train.seed, step, device)
        global_b = cfg.data.batch_size
        t_all = model.process.sample_t(global_b, device, gen)
        shape = model.codec.latent_shape((global_b, *batch["hr"].shape[1:]))
        noise_all = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        lo = self.rank * self.local_batch
        self._diffusion_rows: Tensor | None = None
        fraction = cfg.train.faithful_fraction
        if fraction > 0:
            start = model.process.sample_schedule(1)[0]
            faithful = torch.rand(global_b, generator=gen, device=device) < fraction
            t_all = torch.where(faithful, torch.full_like(t_all, start), t_all)
            weights = torch.where(faithful, 0.0, 1.0 / (1.0 - fraction))
            self._diffusion_rows = weights[lo : lo + self.local_batch]
        return t_all[lo : lo + self.local_batch], noise_all[lo : lo + self.local_batch]

    def _targets(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """The batch the forward learns from (a subclass may replace its targets)."""
        return batch

    def _forward(self, batch: dict[str, Any], step: int) -> tuple[StepOutputs, Tensor, Any]:
        """THE training forward on this step's batch, then the loss stack: (outputs, total, report)."""
        model = self.raw_model
        batch = self._targets(batch, step)
        outputs = self._forward_outputs(batch, step)
        rows = getattr(self, "_diffusion_rows", None)
        if rows is not None:  # rows moved to the faithful start time train the fidelity terms only
            outputs.diffusion = outputs.diffusion * rows.to(outputs.diffusion.dtype)
        total, report = self.stack(**stack_inputs(outputs, batch, model), step=step, last_layer=model.last_layer)
        return outputs, total, report

    def autocast(self) -> Any:
        """The mixed-precision context of a training forward (``train.mixed_precision``)."""
        if self._bf16_autocast:
            return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16)
        return self.accelerator.autocast()

    def _audit_reachability(self) -> None:
        from diffsr.train.audit import audit_model

        batch = self._targets(self._batch(self.step), self.step)
        audit_model(self.raw_model, self.stack, batch, lambda: self._forward_outputs(batch, self.step))

    def _forward_outputs(self, batch: dict[str, Any], step: int) -> StepOutputs:
        """The training forward alone (no loss stack): what the audit probes."""
        t, noise = self._draw(step, batch)
        return self.raw_model(batch["hr"], batch["lr_up"], lr=batch.get("lr"), t=t, noise=noise,
                              autocast=self.autocast)

    def train_step(self, step: int) -> tuple[Any, float, bool]:
        """One optimisation step; returns (report, grad_norm, applied)."""
        # the global RNG (dropout, anything not drawn from step_generator) restarts from
        # (seed, step, rank) every step, so a resumed run draws what an uninterrupted one does
        torch.manual_seed(global_seed(self.config.train.seed, step, self.rank))
        self.model.train()
        batch = self._batch(step)
        error: DiffsrError | None = None
        try:
            _, total, report = self._forward(batch, step)
        except DiffsrError as err:  # e.g. the loss stack's non-finite policy 'stop'
            error, total, report = err, None, None
        self._agree_on_error(step, error)
        self.nonfinite_terms += int(getattr(report, "nonfinite", 0))
        for name, term in getattr(report, "terms", {}).items():
            if getattr(term, "skipped", False):
                self.term_skips[name] = self.term_skips.get(name, 0) + 1
        ok = bool(torch.isfinite(total)) and not getattr(report, "skip_step", False)
        if getattr(report, "nonfinite", 0) and total.grad_fn is None:
            ok = False  # every term was dropped for NaN/Inf: nothing left to learn from
        # every process must take the same branch (collectives below)
        ok = not self.collective.any(not ok)
        grad_norm, applied = self._apply(total) if ok else (float("nan"), False)
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

    def _agree_on_error(self, step: int, error: DiffsrError | None) -> None:
        """Raise ``error`` on every process when any process has one (with the same exit)."""
        if self.world > 1:
            # a process that stops alone would leave the others waiting in a collective: all
            # stop, and all take the same exit (a NonFiniteError saves a checkpoint, collectively)
            code = 0 if error is None else 1 if isinstance(error, NonFiniteError) else 2
            agreed = self.collective.max(code)
            if agreed != code:
                why = f"step {step}: training stopped on another process (see its message)"
                mine = f"; here: {error}" if error is not None else ""
                error = NonFiniteError(why) if agreed == 1 else DiffsrError(why + mine)
        if error is not None:
            self.optimizer.zero_grad(set_to_none=True)
            raise error

    def _apply(self, total: Tensor) -> tuple[float, bool]:
        """Backward, gradient averaging and clipping, optimiser step: (grad_norm, applied)."""
        cfg = self.config
        applied = False
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
        grad_norm_value = float(norm)
        if math.isfinite(grad_norm_value):
            self.optimizer.step()
            applied = not getattr(self.optimizer, "step_was_skipped", False)
        elif getattr(self.accelerator, "scaler", None) is not None:
            # fp16: the GradScaler must see the overflow to lower its scale (it skips the
            # update itself); without this every later step would overflow again
            self.optimizer.step()
        return grad_norm_value, applied

    def _sync_grads(self) -> None:
        """Average gradients over processes (the global-batch mean, as DDP would)."""
        sync_grads(self.model, self.world, self.sharded)

    # ------------------------------------------------------------------ checkpoints
    def save(self, report: Any = None) -> Path | None:
        """Write a checkpoint (main process only); returns its folder."""
        return save_training_checkpoint(self, report)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, max_items: int | None = None) -> dict[str, float]:
        """PSNR, SSIM and sharpness of the (EMA) model and of bicubic on the validation set, and the
        loss report on it (:mod:`diffsr.train.validation`), sharded over processes. The image grid
        (LR nearest | bicubic | SR | HR | error) is kept in :attr:`val_grid` (main process)."""
        from diffsr.train.validation import validate

        values, self.val_grid = validate(self, max_items)
        return values

    # ------------------------------------------------------------------ loop
    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or ``train.time_limit``) and return where things are.

        ``stop_after``: leave (with a checkpoint) after this many steps of this call, e.g. to
        split a long run into cluster jobs; schedules still follow ``train.steps``.
        """
        self._setup()
        cfg = self.config
        main = self.accelerator.is_main_process
        if main:
            from diffsr.config import save_config

            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self._log = TrainLog(self.run_dir if main else None)
        self._start, self._t0 = self.step, time.perf_counter()
        self._last_report: Any = None
        self._last_ckpt: Path | None = None
        self._val: dict[str, float] = {}
        self._val_step: int | None = None
        self.val_grid: Tensor | None = None
        bar = progress_bar(main and self.show_progress)
        task = bar.add_task("train", total=cfg.train.steps, completed=self.step, info="")
        try:
            with bar:
                batches = step_batches(self.batches, self.step, cfg.train.steps, workers=cfg.data.num_workers)
                for batch in batches:
                    if self._one_fit_step(batch, bar, task, stop_after):
                        break
            if cfg.train.val_every:  # the grid of the final model, also as a PNG in the run folder
                if self._val_step != self.step:
                    self._validate_and_log()
                self._log.final_grid(self.val_grid, self.run_dir / "val_grid.png")
        finally:
            self._log.close()  # a stopped run keeps its curves (skipped steps included)
        getattr(self.stack, "flush_nonfinite", lambda: None)()  # a NaN/Inf streak the run ended in
        seconds = time.perf_counter() - self._t0
        self._last_ckpt = self.save(self._last_report) or self._last_ckpt
        return TrainResult(
            run_dir=self.run_dir,
            checkpoint=self._last_ckpt,
            step=self.step,
            seconds=seconds,
            steps_per_second=(self.step - self._start) / max(seconds, 1e-9),
            last_report=report_dict(self._last_report),
            skipped_steps=self.skipped,
            val=self._val,
            nonfinite_terms=self.nonfinite_terms,
            skipped_discriminator_steps=self.skipped_discriminator,
        )

    def _one_fit_step(self, batch: dict[str, Any], bar: Any, task: Any, stop_after: int | None) -> bool:
        """Train, log, validate and checkpoint one step of :meth:`fit`; True when the loop must stop."""
        cfg = self.config
        step = self.step
        self._prefetched = {step: batch}
        try:
            report, grad_norm, applied = self.train_step(step)
        except NonFiniteError as err:
            # policy 'stop' or too many bad steps in the loss stack: the weights are still those
            # of the last good step, keep them
            self._last_ckpt = self.save(self._last_report)
            raise NonFiniteError(f"{err}{_saved(self._last_ckpt)}") from None
        self.step += 1
        self._last_report = report
        elapsed = time.perf_counter() - self._t0
        rate = (self.step - self._start) / max(elapsed, 1e-9)
        if step % cfg.train.log_every == 0 or self.step == cfg.train.steps or not applied:
            self._log.step(step, report, lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm, rate=rate,
                           skipped=self.skipped, nonfinite_terms=self.nonfinite_terms, term_skips=self.term_skips,
                           skipped_discriminator=self.skipped_discriminator)
            bar.update(task, info=f"{report.summary()} | {rate:.2f} it/s")
        bar.update(task, completed=self.step)
        if self.bad_streak >= cfg.losses.nonfinite.max_consecutive:
            self._last_ckpt = self.save(report)
            raise NonFiniteError(
                f"training stopped at step {self.step}: {self.bad_streak} consecutive steps with "
                f"non-finite loss or gradients (losses.nonfinite.max_consecutive){_saved(self._last_ckpt)}"
            )
        if cfg.train.val_every and self.step % cfg.train.val_every == 0:
            self._validate_and_log()
        if self.step % cfg.train.ckpt_every == 0 and self.step < cfg.train.steps:
            self._last_ckpt = self.save(report) or self._last_ckpt
        # each process measures its own time: decide together, or one would leave the loop while
        # the others wait for it in the next collective
        if cfg.train.time_limit and self.collective.any(elapsed > cfg.train.time_limit):
            log.info("time limit %.0f s reached at step %d", cfg.train.time_limit, self.step)
            return True
        return stop_after is not None and self.step - self._start >= stop_after

    def _validate_and_log(self) -> None:
        """Validate now; write the scalars and the image grid to TensorBoard."""
        self._val = self.validate(self.config.data.val_images)
        self._val_step = self.step
        self._log.scalars(self._val, self.step)
        self._log.grid(self.val_grid, self.step)

    @property
    def train_seconds(self) -> float:
        """Wall time spent training this run, over every session (resumes included)."""
        t0 = getattr(self, "_t0", None)
        return self.seconds_before + (time.perf_counter() - t0 if t0 is not None else 0.0)

    @property
    def skipped_discriminator(self) -> int:
        """Discriminator steps skipped for a NaN/Inf loss or gradient (kept in the stack's state)."""
        return sum(int(getattr(m, "skipped_steps", 0)) for m in self.stack.modules())


def check_batch_memory(config: Config, model: SRModel, device: str, batch: int) -> None:
    """ConfigError (one line, before any data is read) when one training step clearly needs more memory
    than ``device`` has: a lower estimate, the batch tensors (hr, lr_up, noise, z_t, estimate, mask)
    plus 8 activations of ``net.width`` channels on the latent grid kept for the backward pass."""
    from diffsr.core.memory import check_memory

    p, c = config.data.patch_size, config.data.channels
    d = getattr(model.codec, "downsample", 1) or 1
    width = int(getattr(config.net, "width", 64) or 64)
    need = 4 * batch * (6 * c * p * p + 8 * width * (p // d + 1) ** 2)
    try:
        check_memory(need, f"training with data.patch_size {p}, batch {batch} per process, net width {width}",
                     device=device, hint="lower data.patch_size or data.batch_size")
    except DiffsrError as err:
        raise ConfigError(str(err)) from None


def _saved(checkpoint: Path | None) -> str:
    return f"; last good weights saved to {checkpoint}" if checkpoint is not None else ""


def train(config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Convenience wrapper: ``Trainer(config, run_dir, resume=...).fit()``."""
    return Trainer(config, run_dir, resume=resume, progress=progress).fit()
