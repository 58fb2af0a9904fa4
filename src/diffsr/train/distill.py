"""One-step models: fine-tune a trained multi-step model into a single-step generator.

HYPIR-style (Lin et al. 2025, "Harnessing diffusion-yielded score priors for image
restoration"): the student starts from the teacher's (EMA) weights and is trained on ONE
step of the teacher's own sampler: from the process's starting point at its largest time
(flow: pure noise at t = 1; DDPM: noise at t = T - 1; ResShift: the prior ``zc + kappa
sqrt(eta_T) noise``; RDDM: ``zc + bbar_T noise``) the network's clean estimate ``x0_hat`` must
be the target. So the student is an ordinary checkpoint of the same architecture: ``diffsr sr
--ckpt STUDENT`` samples it with one step (its ``sample.steps`` is 1) and every other tool
loads it unchanged.

Targets (``target``):

- ``"hr"`` (default): the ground truth, with the reconstruction ``loss`` (L1 / L2 /
  Charbonnier on the decoded x0_hat) plus any extra loss-stack terms (LPIPS, GAN, ...) given
  through ``--set losses.terms=[...]``. Needs paired data.
- ``"teacher"``: the teacher's multi-step output from the same starting noise
  (``teacher_steps`` steps): classic output distillation; works on unpaired LR too.

``losses.diffusion_weight`` of the student weighs the latent-space reconstruction
``||z0_hat - z0||^2`` (the one-step diffusion loss written in x0 space; default 0).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from diffsr.config import Config, apply_override, parse_override, validate
from diffsr.core.errors import ConfigError, DiffsrError
from diffsr.model import SRModel, StepOutputs, load_trainable_state, trainable_state
from diffsr.processes import Process
from diffsr.train.batches import step_generator
from diffsr.train.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)

Target = Literal["hr", "teacher"]
RECONSTRUCTION = ("l1", "l2", "charbonnier")

__all__ = ["OneStepTrainer", "distill", "one_step_start", "one_step_x0", "run_distill_cli", "student_config"]


# ----------------------------------------------------------------------------- the one step


def one_step_start(process: Process, zc: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """(z_start, t_start (B,)): where ``process.sample(net, zc, steps=1, noise=noise)`` starts.

    The student is trained on exactly this input, so a one-step sample of the student is its
    training forward (:meth:`~diffsr.processes.base.Process.one_step_start`).
    """
    return process.one_step_start(zc, noise)


def one_step_x0(model: SRModel, zc: Any, noise: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(z0_hat, z_start, t_start, out): the differentiable one-step clean estimate for the condition
    latent ``zc`` (a :class:`~diffsr.codecs.base.Latent`), as the one-step training forward makes it."""
    z, t = model.process.one_step_start(zc.z, noise)
    out = model.process.denoise(model.bind_net(zc), z, t, zc.z)
    return model.process.x0(z, out.float(), t, zc.z), z, t, out


# ----------------------------------------------------------------------------- config


def student_config(
    teacher: Config,
    steps: int,
    *,
    target: Target = "hr",
    loss: str = "l1",
    lr: float | None = None,
    time_limit: float | None = None,
    overrides: list[str] | None = None,
    teacher_name: str | None = None,
) -> Config:
    """The student's config: the teacher's data, codec, process and net; a reconstruction loss;
    ``train.steps = steps``; ``sample.steps = 1``; then ``overrides`` ("a.b=c", as ``--set``)."""
    if steps < 1:
        raise ConfigError(f"distill: --steps must be >= 1, got {steps}")
    if target not in ("hr", "teacher"):
        raise ConfigError(f"distill: --target must be 'hr' or 'teacher', got {target!r}")
    if loss not in RECONSTRUCTION:
        raise ConfigError(f"distill: --loss must be one of {', '.join(RECONSTRUCTION)}, got {loss!r}")
    data = teacher.model_dump(mode="json")
    name = teacher_name or teacher.name
    data["name"] = f"{name}-1step"
    data["description"] = (f"One-step student of {name} (diffsr distill, target {target}, loss {loss}). "
                           + (teacher.description or "")).strip()
    data["losses"] = {
        "diffusion_weight": 0.0,
        "terms": [{"name": loss, "paired_only": target == "hr"}],
        "decode_chunk": teacher.losses.decode_chunk,
        "nonfinite": teacher.losses.nonfinite.model_dump(mode="json"),
    }
    tc = data["train"]
    tc["steps"] = int(steps)
    tc["time_limit"] = time_limit
    tc["warmup_steps"] = min(int(tc.get("warmup_steps") or 0), max(steps // 10, 0))
    tc["ckpt_every"] = min(int(tc.get("ckpt_every") or steps), steps)
    if lr is not None:
        tc["lr"] = float(lr)
    data["sample"]["steps"] = 1
    for item in overrides or []:
        parts, value = parse_override(item)
        apply_override(data, parts, value)
    return validate(data, "distill student config" + (" (with --set)" if overrides else ""))


# ----------------------------------------------------------------------------- trainer


class OneStepTrainer(Trainer):
    """A :class:`Trainer` whose forward is the one-step sampler, initialised from a teacher.

    teacher: the teacher SRModel (its weights initialise the student; with target "teacher"
    its ``teacher_steps``-step samples are the targets).
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        teacher: SRModel,
        *,
        target: Target = "hr",
        teacher_steps: int | None = None,
        progress: bool = True,
        cpu: bool | None = None,
    ) -> None:
        if getattr(teacher, "is_baseline", False):
            raise ConfigError("distill: the teacher is a feed-forward baseline; it already takes one step")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.target = target
        self.teacher_steps = teacher_steps
        state = trainable_state(teacher)

        def init_from_teacher(model: SRModel) -> SRModel:
            load_trainable_state(model, {k: v.detach().clone() for k, v in state.items()})
            return model

        super().__init__(config, run_dir, progress=progress, cpu=cpu, model_hook=init_from_teacher)

    def _setup(self) -> None:
        super()._setup()
        self.teacher = self.teacher.to(self.accelerator.device)

    @torch.no_grad()
    def _teacher_target(self, lr_up: Tensor, noise: Tensor, step: int) -> Tensor:
        gen = step_generator(self.config.train.seed + 1, step, self.accelerator.device)
        return self.teacher.sample(lr_up, steps=self.teacher_steps, generator=gen, noise=noise).float()

    def _draw(self, step: int, batch: dict[str, Tensor]) -> tuple[Tensor | None, Tensor]:
        """No timesteps (the one step starts at the largest time) and this process's slice of the
        global batch's noise."""
        cfg = self.config
        gen = step_generator(cfg.train.seed, step, self.accelerator.device)
        shape = self.raw_model.codec.latent_shape((cfg.data.batch_size, *batch["hr"].shape[1:]))
        noise_all = torch.randn(shape, generator=gen, device=self.accelerator.device, dtype=torch.float32)
        lo = self.rank * self.local_batch
        return None, noise_all[lo : lo + self.local_batch]

    def _targets(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        """With target "teacher": the teacher's output from the step's noise is every row's HR."""
        if self.target != "teacher":
            return batch
        _, noise = self._draw(step, batch)
        return {**batch, "hr": self._teacher_target(batch["lr_up"], noise, step), "paired": None}

    def _forward_outputs(self, batch: dict[str, Tensor], step: int) -> StepOutputs:
        _, noise = self._draw(step, batch)
        return self.raw_model(batch["hr"], batch["lr_up"], lr=batch.get("lr"), noise=noise, one_step=True,
                              autocast=self.autocast)


# ----------------------------------------------------------------------------- entry points


def distill(
    teacher_run: str | Path,
    out_dir: str | Path,
    steps: int,
    *,
    target: Target = "hr",
    teacher_steps: int | None = None,
    loss: str = "l1",
    lr: float | None = None,
    time_limit: float | None = None,
    overrides: list[str] | None = None,
    ema: bool = True,
    progress: bool = False,
    cpu: bool | None = None,
) -> TrainResult:
    """Fine-tune the model in ``teacher_run`` into a one-step student saved under ``out_dir``.

    teacher_run: a run or checkpoint folder (EMA weights by default). steps: optimisation steps.
    target: "hr" (reconstruction against the ground truth, HYPIR-style) or "teacher" (regress
    the teacher's ``teacher_steps``-step output from the same noise; default: its sample.steps).
    loss: the reconstruction term, "l1" | "l2" | "charbonnier". lr: learning rate (default: the
    teacher's). overrides: "key=value" items applied to the student config (e.g. extra loss
    terms, ``data.train``, ``train.ema_decay``). The result is an ordinary checkpoint:
    ``load_model(out_dir)`` samples it with one step.
    """
    from diffsr.sampling.infer import load_model

    out_dir = Path(out_dir)
    teacher = load_model(teacher_run, ema=ema, device="cpu")
    cfg = student_config(teacher.config, steps, target=target, loss=loss, lr=lr, time_limit=time_limit,
                         overrides=overrides, teacher_name=_run_name(teacher.config, Path(teacher_run)))
    if teacher_steps is not None and teacher_steps < 1:
        raise ConfigError(f"distill: --teacher-steps must be >= 1, got {teacher_steps}")
    log.info("distilling %s (step %d) into a one-step model in %s", teacher.checkpoint, teacher.step, out_dir)
    trainer = OneStepTrainer(cfg, out_dir, copy.deepcopy(teacher.model), target=target,
                             teacher_steps=teacher_steps or teacher.config.sample.steps, progress=progress,
                             cpu=cpu)
    return trainer.fit()


def _run_name(config: Config, path: Path) -> str:
    return config.name if config.name != "custom" else path.name


def run_distill_cli(
    teacher: Path | str,
    out: Path,
    steps: int,
    *,
    target: str = "hr",
    teacher_steps: int | None = None,
    loss: str = "l1",
    lr: float | None = None,
    time_limit: float | None = None,
    set_: list[str] | None = None,
    progress: bool = True,
    cpu: bool = False,
) -> str:
    """``diffsr distill``: checks the arguments, runs :func:`distill`, returns a one-line summary."""
    from diffsr.core.hub import is_hub_id
    from diffsr.train.checkpoint import list_checkpoints

    if not is_hub_id(str(teacher)) and not Path(teacher).exists():
        raise DiffsrError(f"{teacher}: no such run or checkpoint folder")
    if list_checkpoints(Path(out)):
        raise DiffsrError(f"{out}: already holds checkpoints; choose another --out")
    if target not in ("hr", "teacher"):
        raise DiffsrError(f"--target: '{target}' is not one of hr, teacher")
    result = distill(teacher, out, steps, target=target, teacher_steps=teacher_steps,  # type: ignore[arg-type]
                     loss=loss, lr=lr, time_limit=time_limit, overrides=set_ or [], progress=progress,
                     cpu=cpu or None)
    return (f"distilled {result.step} steps in {result.seconds:.0f} s; one-step checkpoint: {result.checkpoint} "
            f"(diffsr sr --ckpt {out} samples it with 1 step)")
