"""The one training loop every family runs through.

The model returns losses keyed by parameter group; the trainer owns one
optimizer per group, backward (restricted to the group's parameters so
gradients cannot leak between groups), gradient clipping, precision, the
learning-rate schedule, the weight EMA, logging, periodic samples and
checkpoints. A step updates every group once in ``param_groups()`` order, each
group ``train.group_steps[group]`` times (e.g. several discriminator updates per
generator update), each update on a fresh batch.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genforge.config import TrainConfig
from genforge.models.base import GenerativeModel, eval_mode
from genforge.rundir import CHECKPOINTS_DIR, EMA_WEIGHTS, STATE, WEIGHTS
from genforge.training.checkpoint import (TrainingError, describe_error, free_bytes, is_disk_full, latest_checkpoint,
                                          load_state, newest_valid_checkpoint, rng_state, save_checkpoint,
                                          set_rng_state)
from genforge.training.cpu_memory import retain_freed_memory
from genforge.training.distributed import (GroupReplicas, ShardedBatches, World, agree, barrier, check_batch,
                                           check_same, lost_rank, mean_scalars, sync_batch_norms, sync_rng)
from genforge.training.ema import EMA
from genforge.training.logger import MetricsLogger, NullLogger
from genforge.training.optim import build_optimizer, lr_factor, set_lr
from genforge.training.precision import resolve_device, resolve_precision

SampleHook = Callable[[GenerativeModel, int], None]  # (model to sample from, step)
SaveHook = Callable[[GenerativeModel], None]  # writes the sampling model into the run dir
EvalHook = Callable[[GenerativeModel, int], dict[str, float]]  # (sampling model, step) → metrics
BestHook = Callable[[GenerativeModel, int, dict[str, float]], None]  # a new best evaluation
EvalReport = Callable[[int, dict[str, float]], bool]  # (step, metrics) after each evaluation → True stops the run


STOP_REASONS = ("interrupted", "stopped_by_hook", "max_minutes")
__all__ = ["Trainer", "TrainResult", "TrainingError"]  # TrainingError lives in checkpoint (which raises it too)


def _relative(path: Path, base: Path) -> Path:
    """``path`` relative to ``base`` when inside it (``checkpoints/step-00000300``), else as given."""
    try:
        return path.relative_to(base)
    except ValueError:
        return path


@dataclass
class TrainResult:
    step: int
    stopped: str  # "max_steps" | "max_minutes" | "interrupted" | "stopped_by_hook" (on_eval asked to stop)
    elapsed_s: float
    last_losses: dict[str, float]
    checkpoint: Path | None


class Trainer:
    """Runs ``model`` on ``batches`` according to ``cfg``, writing into ``run_dir``.

    Args:
        model: a GenerativeModel (moved to the resolved device).
        cfg: the ``train`` section.
        batches: infinite iterator of batches with ``state_dict``/``load_state_dict``
            (``genforge.data.BatchStream``), so resume replays the same data order.
        run_dir: where metrics, samples and checkpoints go.
        on_sample: called with the sampling model (EMA when on) every
            ``sample_every`` steps and at the end.
        on_save: called with the sampling model whenever a checkpoint is
            written, to refresh the run's sampling weights.
        evaluate: called with the sampling model every ``eval_every`` steps and
            at the end; its numbers are logged (``metrics.jsonl``, TensorBoard
            ``eval/``) and, when ``best_metric`` is among them, the lowest so far
            triggers ``on_best``.
        best_metric: the key of ``evaluate``'s result to minimise (e.g. ``val/loss``).
        on_best: called with (sampling model, step, metrics) on a new best.
        on_eval: called with (step, metrics) after every evaluation; returning True ends the run after
            this step with a checkpoint (``stopped="stopped_by_hook"``), e.g. a hyperparameter search
            pruning a trial on its intermediate numbers.
        examples_per_batch / unit: throughput accounting, e.g. B·T ``tokens``
            per batch for text (default: ``batch_size`` ``images``).
        world: this process's rank in a data-parallel job (see ``training.distributed``): each rank
            trains on its share of every global batch; only rank 0 logs, keeps the EMA and checkpoints
            (give the hooks on rank 0 only).
    """

    def __init__(self, model: GenerativeModel, cfg: TrainConfig, batches: Iterator[dict[str, Tensor]],
                 run_dir: Path, *, on_sample: SampleHook | None = None, on_save: SaveHook | None = None,
                 evaluate: EvalHook | None = None, best_metric: str | None = None, on_best: BestHook | None = None,
                 on_eval: EvalReport | None = None, examples_per_batch: int | None = None, unit: str = "images",
                 world: World = World(), trackers: Sequence[Any] = ()) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.world = world
        self.trackers = list(trackers)
        check_batch(world, cfg.batch_size)
        self.batches = ShardedBatches(batches, world) if world.distributed else batches
        self.on_sample = on_sample
        self.on_save = on_save
        self.evaluate = evaluate
        self.best_metric = best_metric
        self.on_best = on_best
        self.on_eval = on_eval
        self._evaluated_at: int | None = None  # step of the latest evaluation
        self._hook_stop = False
        self.best_value = math.inf
        self.examples_per_batch = examples_per_batch or cfg.batch_size
        self.unit = unit
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.precision = resolve_precision(resolve_device(cfg.device), cfg.precision)
        self.device = self.precision.device
        if self.device.type == "cpu":
            retain_freed_memory()  # no page faults on re-allocated step buffers (see cpu_memory)
        self.model = model.to(self.device).train()
        sync_batch_norms(self.model, world, self.device)  # several CUDA ranks: BatchNorm over the global batch
        self.groups = model.param_groups()
        unknown = set(cfg.group_lr) | set(cfg.group_steps)
        unknown -= set(self.groups)
        if unknown:
            raise TrainingError(f"train.group_lr/group_steps name unknown parameter groups {sorted(unknown)}; "
                                f"this model has {list(self.groups)}")
        self.peak_lr = {g: cfg.group_lr.get(g, cfg.lr) for g in self.groups}
        self.optimizers = {g: build_optimizer(p, self.peak_lr[g], cfg, model=model) for g, p in self.groups.items()}
        self.scalers = {g: torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)
                        for g in self.groups}
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 and world.is_main else None
        self.replicas = GroupReplicas(self.model, self.groups, world)  # DDP per group; the model alone for 1 rank
        self.step = 0
        self.elapsed_before = 0.0  # wall seconds spent by earlier (resumed-from) processes
        self._stop_signal: str | None = None

    # ------------------------------------------------------------------ state
    @property
    def sampling_model(self) -> GenerativeModel:
        return self.ema.shadow if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "elapsed_s": self.elapsed_before + (time.perf_counter() - self._t0),
            "optimizers": {g: o.state_dict() for g, o in self.optimizers.items()},
            "scalers": {g: s.state_dict() for g, s in self.scalers.items()},
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "best_value": self.best_value,
            "rng": rng_state(),
            "data": self.batches.state_dict(),
        }

    def resume(self) -> Path:
        """Restore everything from the newest checkpoint that verifies and loads; raises if there is none.

        Newer checkpoints that do not verify (truncated, changed or deleted
        files) or do not load are skipped, one stderr line each.
        """
        root = self.run_dir / CHECKPOINTS_DIR
        ckpt, skipped = newest_valid_checkpoint(self.run_dir, load=self._restore)
        for folder, reason in skipped:
            print(f"skipped {_relative(folder, self.run_dir)}: {reason}", file=sys.stderr)
        if ckpt is None:
            if not skipped:
                raise TrainingError(f"--resume: no checkpoint in {root}; nothing to resume")
            reasons = "; ".join(f"{folder.name}: {reason}" for folder, reason in skipped)
            raise TrainingError(f"--resume: none of the {len(skipped)} checkpoint(s) in {root} verifies, "
                                f"nothing to resume from ({reasons})")
        return ckpt

    def _restore(self, ckpt: Path) -> None:
        """Load checkpoint ``ckpt`` into the trainer; ValueError naming the file that does not load or fit."""
        try:
            state = load_state(ckpt)
        except Exception as e:
            raise ValueError(f"{STATE} does not load ({describe_error(e)})") from None
        ema_file = ckpt / EMA_WEIGHTS if (ckpt / EMA_WEIGHTS).is_file() else ckpt / WEIGHTS
        for target, file in ((self.model, ckpt / WEIGHTS), (self.ema.shadow if self.ema else None, ema_file)):
            if target is not None:
                try:
                    target.load_weights(file)
                except Exception as e:
                    raise ValueError(f"{file.name} does not load ({describe_error(e)})") from None
        try:
            self.step = state["step"]
            self.elapsed_before = state["elapsed_s"]
            for g, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][g])
            for g, s in self.scalers.items():
                s.load_state_dict(state["scalers"][g])
            if self.ema is not None:
                self.ema.updates = state["ema_updates"]
            self.best_value = state.get("best_value", math.inf)
            set_rng_state(state["rng"])
            self.batches.load_state_dict(state["data"])
        except Exception as e:
            raise ValueError(f"{STATE} does not fit this run ({type(e).__name__}: {describe_error(e)})") from None

    def save(self) -> Path | None:
        """Checkpoint (rank 0; the other ranks wait for it and return None)."""
        if not self.world.is_main:
            barrier(self.world)
            return None
        ema_model = self.ema.shadow if self.ema is not None else None
        path = save_checkpoint(self.run_dir, self.step, self.model, ema_model, self.state_dict(),
                               self.cfg.keep_checkpoints)  # a full disk: TrainingError, earlier ones intact
        if self.on_save is not None:
            try:
                self.on_save(self.sampling_model)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                raise TrainingError(f"no space left on device while writing the sampling weights into "
                                    f"{self.run_dir} ({free_bytes(self.run_dir)} bytes free); "
                                    f"checkpoint {path} is intact") from None
        barrier(self.world)
        return path

    # ------------------------------------------------------------------ loop
    def _update(self, group: str) -> dict[str, float]:
        """One optimizer update of ``group`` over ``grad_accum`` fresh batches; returns logged scalars."""
        params = self.groups[group]
        opt, scaler = self.optimizers[group], self.scalers[group]
        accum = self.cfg.grad_accum
        opt.zero_grad(set_to_none=True)
        logged: dict[str, float] = {}
        for i in range(accum):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(self.batches).items()}
            with self.replicas.no_sync(group, last=i == accum - 1):  # all-reduce on the update's last batch only
                with self.precision.autocast():
                    out = self.replicas.losses(batch, group)
                loss = out[group].float()
                value = loss.item()
                if not math.isfinite(value):
                    last = latest_checkpoint(self.run_dir)
                    kept = f"the last good checkpoint {last} is intact" if last \
                        else "no checkpoint had been written yet"
                    raise TrainingError(
                        f"step {self.step}: the {group!r} loss became {value}; stopping ({kept}). "
                        f"Try a lower train.lr, train.grad_clip > 0, or train.precision=fp32.")
                scaler.scale(loss / accum if accum > 1 else loss).backward(inputs=params)
            logged[group] = logged.get(group, 0.0) + value / accum
            for k, v in out.items():
                if k not in self.groups:
                    logged[k] = logged.get(k, 0.0) + float(v) / accum
        if self.cfg.grad_clip > 0:
            scaler.unscale_(opt)
            logged[f"grad_norm/{group}"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        scaler.step(opt)
        scaler.update()
        return logged

    def run_evaluation(self, logger: MetricsLogger) -> dict[str, float]:
        """Evaluate the sampling model, log the numbers, and report a new best."""
        if self.evaluate is None:
            return {}
        model = self.sampling_model
        t = time.perf_counter()
        with eval_mode(model):
            metrics = self.evaluate(model, self.step)
        record = dict(metrics, eval_s=time.perf_counter() - t,
                      elapsed_s=self.elapsed_before + time.perf_counter() - self._t0)
        logger.log(self.step, record, prefix="eval")
        self._evaluated_at = self.step
        if self.on_eval is not None and self.on_eval(self.step, metrics):
            self._hook_stop = True
        value = metrics.get(self.best_metric) if self.best_metric else None
        if value is not None and value < self.best_value:
            self.best_value = value
            if self.on_best is not None:
                self.on_best(model, self.step, metrics)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        tqdm.write(f"step {self.step}: {shown}", file=sys.stderr)
        return metrics

    def _handle_signal(self, signum, frame) -> None:
        self._stop_signal = signal.Signals(signum).name

    @contextmanager
    def _graceful_stop(self) -> Iterator[None]:
        """SIGINT/SIGTERM set a flag that ends the run after the current step (main thread only)."""
        old = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self._handle_signal)
        except ValueError:  # not the main thread: no graceful stop, nothing else changes
            old = {}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _progress_bar(self) -> tqdm:
        cfg = self.cfg
        return tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                    disable=not cfg.progress or not self.world.is_main,
                    mininterval=0.5 if sys.stderr.isatty() else 30.0,
                    desc=self.run_dir.name)

    def _show(self, bar: tqdm, losses: dict[str, float]) -> None:
        """The bar's postfix: the last window's losses and, with ``max_minutes``, the time left to it
        (the bar's ETA counts to ``max_steps`` and knows nothing of the time budget)."""
        parts = [f"{k}={v:.4g}" for k, v in losses.items() if "/" not in k]
        if self.cfg.max_minutes:
            left = max(0.0, self.cfg.max_minutes - (time.perf_counter() - self._t0) / 60)
            parts.append(f"stop ≤ {left:.1f}m")
        bar.set_postfix_str(", ".join(parts), refresh=False)

    def _step(self, order: list[tuple[str, int]], window: _Window) -> float:
        """One training step: every group's updates, the EMA, the step counter; returns the lr factor used."""
        factor = lr_factor(self.step, self.cfg)
        for g, opt in self.optimizers.items():
            set_lr(opt, self.peak_lr[g] * factor)
        for group, repeats in order:
            for _ in range(repeats):
                window.add(self._update(group))
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        window.steps += 1
        return factor

    def _periodic(self, logger: MetricsLogger, window: _Window) -> None:
        """Evaluation, samples and checkpoints due at the current step (the last step's come after the loop).

        What is due follows from the config and the step alone, never from which hooks this rank was given,
        so every rank of a data-parallel job takes the same collectives (the checkpoint's barrier, the RNG
        broadcast) at the same steps, whatever the intervals; rank 0 alone runs the hooks."""
        cfg, step = self.cfg, self.step
        evaluate = bool(cfg.eval_every) and step % cfg.eval_every == 0 and step < cfg.max_steps
        sample = bool(cfg.sample_every) and step % cfg.sample_every == 0
        checkpoint = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0 and step < cfg.max_steps
        if evaluate:
            self.run_evaluation(logger)  # rank-local: no collective inside
            window.restart_clock()  # evaluation time is not training throughput
        if sample and self.on_sample is not None:
            self.on_sample(self.sampling_model, step)
        if checkpoint:
            self.save()  # every rank: rank 0 writes, all meet at its barrier
        if evaluate or sample or checkpoint:
            sync_rng(self.world)  # rank 0's hooks may have drawn from the RNG the training noise comes from

    def _stop_reason(self) -> str | None:
        """Why to stop after this step, if at all; in a data-parallel job rank 0 decides for every rank."""
        reason = None
        if self._stop_signal is not None:
            reason = "interrupted"
        elif self._hook_stop:
            reason = "stopped_by_hook"
        elif self.cfg.max_minutes and time.perf_counter() - self._t0 > self.cfg.max_minutes * 60:
            reason = "max_minutes"
        return agree(self.world, reason, STOP_REASONS)

    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train until ``max_steps`` (or ``max_minutes``, or SIGINT/SIGTERM), then checkpoint."""
        cfg = self.cfg
        resumed_from = self.resume() if resume else None
        check_same(self.world, self.step, "the step to start from")  # the intervals below count from it
        self._t0 = time.perf_counter()
        order = [(g, cfg.group_steps.get(g, 1)) for g in self.groups]
        per_step = sum(n for _, n in order) * cfg.grad_accum * self.examples_per_batch
        window = _Window()
        last: dict[str, float] = {}
        stopped = "max_steps"
        logger = MetricsLogger(self.run_dir, tensorboard="tensorboard" in cfg.trackers, trackers=self.trackers) \
            if self.world.is_main else NullLogger()
        bar = self._progress_bar()
        if resumed_from is not None:
            tqdm.write(f"resumed from {resumed_from} (step {self.step})", file=sys.stderr)

        def log_window(factor: float) -> dict[str, float]:
            """Log the window's means and throughput at the current step; returns the means."""
            means, throughput = window.flush(per_step, self.unit)
            means = mean_scalars(self.world, means)  # the global batch's losses, not this rank's share
            logger.log(self.step, dict(means, lr=self.peak_lr[order[-1][0]] * factor, **throughput,
                                       elapsed_s=self.elapsed_before + time.perf_counter() - self._t0))
            self._show(bar, means)
            return means

        self._show(bar, {})
        factor = lr_factor(self.step, cfg)
        try:
            with self._graceful_stop(), lost_rank(self.world, lambda: self.step):
                while self.step < cfg.max_steps:
                    factor = self._step(order, window)
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        last = log_window(factor)
                    self._periodic(logger, window)
                    reason = self._stop_reason()
                    if reason is not None:
                        stopped = reason
                        break
                if window.steps:  # stopped early between log steps: the partial window is the run's last record
                    last = log_window(factor)
                if self._evaluated_at != self.step:  # not when this step's evaluation just ran
                    self.run_evaluation(logger)
                ckpt = self.save()
                if self.on_sample is not None and not (cfg.sample_every and self.step % cfg.sample_every == 0):
                    self.on_sample(self.sampling_model, self.step)
                barrier(self.world)
        finally:
            bar.close()
            logger.close()
        elapsed = self.elapsed_before + time.perf_counter() - self._t0
        return TrainResult(self.step, stopped, elapsed, last, ckpt)


class _Window:
    """Scalars of the steps since the last log line, and the clock their throughput is measured with."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.steps = 0
        self.restart_clock()

    def restart_clock(self) -> None:
        self.t = time.perf_counter()

    def add(self, logged: dict[str, float]) -> None:
        for k, v in logged.items():
            self.values.setdefault(k, []).append(v)

    def flush(self, examples_per_step: int, unit: str) -> tuple[dict[str, float], dict[str, float]]:
        """(mean of each scalar, throughput record) of the window; starts a new one."""
        dt = max(time.perf_counter() - self.t, 1e-9)
        means = {k: sum(v) / len(v) for k, v in self.values.items()}
        record = {"steps_per_s": self.steps / dt, f"{unit}_per_s": self.steps * examples_per_step / dt}
        self.values, self.steps = {}, 0
        self.restart_clock()
        return means, record
