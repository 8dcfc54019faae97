"""The one training engine shared by every method.

``Trainer(cfg, run_dir).fit()`` does, in order: set up the device and (under ``torchrun``) the
process group; load the data and build the view pipeline; build the method from its backbone,
heads and loss; build the optimizer; resume if asked; then loop

    lr = schedule(step)                      per optimizer step
    out = method(views, progress)            under autocast (bf16 on GPUs)
    stop if out.loss is not finite           the last good checkpoint is kept
    out.loss.backward(); optimizer.step()    DDP averages the gradients
    method.after_optimizer_step(progress)    e.g. EMA targets

logging every ``log_every`` steps (metrics.jsonl, TensorBoard, progress bar), running the kNN
monitor every ``knn_every`` epochs, and writing a checkpoint atomically after every epoch and at
the end. Only rank 0 logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup import distributed as dist
from selfsup import runtime
from selfsup.augment.views import require_resolved
from selfsup.checkpoint import remove_stale_temporaries, save_checkpoint
from selfsup.config import ConfigError, TrainConfig
from selfsup.cross_rank_bn import convert_batchnorm
from selfsup.data import ViewBatch, build_pipeline, run_dataset
from selfsup.data.base import ImageDataset
from selfsup.engine import autotune
from selfsup.engine.bf16_guard import guard_bf16_convolutions
from selfsup.engine.checkpoints import check_free_space, first_nonfinite, keep_recent
from selfsup.engine.logging import MetricsLogger, ProgressBar, to_float
from selfsup.engine.stopping import Stopped, StopRequests, signal_name
from selfsup.evaluation.collapse import effective_rank, embedding_std
from selfsup.evaluation.features import dataset_features
from selfsup.evaluation.knn import knn_top1
from selfsup.methods import Method, Progress, build_method
from selfsup.models.backbones import ImageSizeError, check_image_sizes, is_library_name
from selfsup.optim import apply_lr, build_optimizer, lr_factor
from selfsup.rng import rng_state, seed_everything, set_rng_state
from selfsup.run_folder import SUMMARY, RunFolder
from selfsup.validate import FP16_ON_CPU


class TrainingDiverged(RuntimeError):
    """The loss, or a weight or buffer about to be checkpointed, became NaN or infinite. The message names the
    last good checkpoint and how to continue from it."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs_done: float
    final_loss: float
    summary: dict[str, Any]
    trained: bool = True
    """False when a resumed run had nothing left to train (its files are then unchanged)."""


class Trainer:
    """Pretrain ``cfg.method`` on ``cfg.dataset``; outputs go to ``run_dir``."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(run_dir)
        self.resume = resume
        self.stop_requests = StopRequests()
        self._stop_signal = 0
        self._last_save = time.monotonic()
        self._nonfinite: torch.Tensor | None = None  # a non-finite loss since the flags were last read
        self.check_every = 1

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Build device, data pipeline, method and optimizer (called by :meth:`fit`)."""
        cfg = self.cfg
        if cfg.device in ("auto", "cpu"):
            runtime.keep_freed_memory()
        self.device = runtime.resolve_device(cfg.device)
        dist.init_from_env(self.device.type)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0
        if cfg.batch_size % self.world:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} is the global batch and must be divisible by the {self.world} processes"
            )
        seed_everything(cfg.seed)

        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                FP16_ON_CPU if self.device.type == "cpu" else f"precision=fp16 needs CUDA, not {self.device}"
            )
        self.dataset = run_dataset(cfg, "pretrain")
        if cfg.train_subset:
            self.dataset = self.dataset.evenly_spaced(cfg.train_subset)
        self.image_size = int(require_resolved(cfg.augment).image_size)  # type: ignore[arg-type]
        self.pipeline = build_pipeline(
            self.dataset,
            cfg.augment,
            batch_size=cfg.batch_size,
            device=self.device,
            data_path=cfg.data_path,
            seed=cfg.seed,
            rank=self.rank,
            world_size=self.world,
            num_workers=cfg.num_workers,
            memory_budget_mb=cfg.memory_budget_mb,
            cache_dir=cfg.cache_dir,
            max_bad_fraction=cfg.max_bad_fraction,
        )
        self.steps_per_epoch = len(self.pipeline)
        self.total_steps = cfg.epochs * self.steps_per_epoch

        seed_everything(cfg.seed)
        self.method = build_method(cfg, self.dataset.channels, gather_distributed=self.world > 1)
        if self.method.uses_labels and not self.dataset.has_labels:
            raise ConfigError(f"{cfg.method} trains with labels, and the {cfg.dataset} images have none")
        if self.device.type == "cpu":
            guard_bf16_convolutions(self.method)
        self.method.to(self.device)
        if is_library_name(cfg.backbone):  # a library model may not fit small images: say so before writing
            views = (self.image_size, cfg.augment.small_size) if cfg.augment.small_crops else (self.image_size,)
            try:
                check_image_sizes(self.method.backbone, cfg.backbone, self.dataset.channels, views)
            except ImageSizeError as err:
                raise ConfigError(str(err)) from None
        self.runtime_trial = self._settle_runtime()  # on copies, before BN is synced (copies of process groups fail)
        self._nonfinite = None  # the trial's steps are not the run's
        # on CUDA the finiteness and stop flags are read with the logged loss, not after every step (see
        # _check_finite); on the CPU reading them costs nothing
        self.check_every = max(1, cfg.log_every) if self.device.type == "cuda" else 1
        if cfg.sync_bn:
            self.method = cast(Method, convert_batchnorm(self.method, self.device.type, cfg.sync_bn_group))
        self.amp_dtype = runtime.precision_dtype(cfg.precision)
        self.channels_last = cfg.channels_last == "true"
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.method.parameter_groups(), cfg, self.method.no_weight_decay_parameters())
        self.model: nn.Module = self.method
        if self.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=device_ids)
        if cfg.compile:
            self.model = cast(nn.Module, torch.compile(self.model))  # an OptimizedModule for a module
        self._setup_monitor()

    def _setup_monitor(self) -> None:
        self.monitor: tuple[ImageDataset, ImageDataset] | None = None
        if not self.main or self.cfg.knn_every == 0:
            return
        try:
            bank = run_dataset(self.cfg, "train")
            queries = run_dataset(self.cfg, "test")
        except Exception:  # unlabeled data: no monitor, training goes on
            return
        if not (bank.has_labels and queries.has_labels):
            return
        self.monitor = (bank.evenly_spaced(self.cfg.knn_bank), queries.evenly_spaced(self.cfg.knn_queries))

    # ------------------------------------------------------------------ checkpoints

    def _position(self, epoch: int, batch: int) -> tuple[int, int]:
        """Where a resumed run starts after ``batch`` batches of ``epoch``: the next batch (or epoch)."""
        return (epoch + 1, 0) if batch >= self.steps_per_epoch else (epoch, batch)

    def _save(self, epoch: int, batch: int, step: int, elapsed: float) -> None:
        """Checkpoint the run after ``batch`` batches of ``epoch`` (rank 0 writes; every state is checked
        finite first, so a checkpoint is never poisoned: a diverged run keeps its last good one)."""
        if not self.main:
            return
        if self._nonfinite is not None:  # flags not read yet (CUDA): a NaN loss since then stops here; rank 0
            self._read_flags(step - 1, epoch, collective=False)  # saves alone, so no collective

        bad = first_nonfinite(self.method)
        if bad is not None:
            raise TrainingDiverged(
                f"{bad} became non-finite by step {step} (the loss was still finite); training stopped and "
                f"{self._kept()}. {self._recovery()}"
            )
        epoch, batch = self._position(epoch, batch)
        state = {
            "method": self.method.state_dict(),
            "method_state": self.method.state_for_checkpoint(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "elapsed_s": elapsed,
            "finished": epoch >= self.cfg.epochs,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
        }
        save_checkpoint(state, self.folder.checkpoint_path)
        self._last_save = time.monotonic()
        if self.cfg.keep_checkpoints > 1:
            keep_recent(self.folder, step, self.cfg.keep_checkpoints)

    def _load(self) -> tuple[int, int, int, float, bool]:
        state = self.folder.read_checkpoint(map_location=self.device)
        self.method.load_state_dict(state["method"])
        self.method.load_state_for_checkpoint(state.get("method_state", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        return state["epoch"], state["batch"], state["step"], state.get("elapsed_s", 0.0), bool(state["finished"])

    def _kept(self) -> str:
        path = self.folder.checkpoint_path
        return f"the last good checkpoint is kept at {path}" if path.exists() else "no checkpoint had been written yet"

    def _recovery(self) -> str:
        if self.folder.checkpoint_path.exists():
            again = f"then continue: selfsup pretrain --out {self.folder.path} --resume --set base_lr=..."
        else:
            again = "then start again"
        return (
            f"Lower the learning rate (now base_lr={self.cfg.base_lr:g}), or --set grad_clip=1.0, or "
            f"--set precision=fp32; {again}"
        )

    # ------------------------------------------------------------------ monitoring

    @torch.no_grad()
    def knn_monitor(self) -> dict[str, float]:
        """kNN top-1 of h on a held-out subset, plus the embedding's effective rank and std."""
        if self.monitor is None:
            return {}
        bank, queries = self.monitor
        assert bank.labels is not None and queries.labels is not None  # _setup_monitor keeps labelled sets only
        was_training = self.method.training
        self.method.eval()
        try:
            with runtime.autocast(self.device, self.amp_dtype):
                features = [
                    dataset_features(
                        self.method.embed,
                        part,
                        self.image_size,
                        self.device,
                        channels_last=self.channels_last,
                        max_bad_fraction=self.cfg.max_bad_fraction,
                    )
                    for part in (bank, queries)
                ]
        finally:
            self.method.train(was_training)
        if any(len(f.kept) < len(part) for f, part in zip(features, (bank, queries))):
            # unreadable files (warned about once): keep the readable ones for the next epochs
            bank, queries = (part.subset(f.kept) for f, part in zip(features, (bank, queries)))
            self.monitor = (bank, queries)
        assert bank.labels is not None and queries.labels is not None
        h_bank, z_bank, h_query = features[0].h, features[0].z, features[1].h
        return {
            "knn_top1": knn_top1(h_bank, bank.labels, h_query, queries.labels),
            "effective_rank": effective_rank(z_bank),
            "embedding_std": embedding_std(z_bank),
        }

    # ------------------------------------------------------------------ the loop

    def fit(self) -> TrainResult:
        """Train (or resume) to the end, or until a signal: see the module docstring. The run folder's writer
        lock is held throughout; every check (settings, data, the model, disk space) runs before anything
        is written, and a folder this call created is removed again if the run cannot start."""
        main = dist.env_rank() == 0
        existed = self.folder.path.exists()
        with self.folder.writer_lock() if main else contextlib.nullcontext():
            try:
                self.setup()
                if main:
                    check_free_space(self.folder, self.method, self.optimizer, self.cfg.keep_checkpoints)
            except BaseException:
                if main and not existed:
                    shutil.rmtree(self.folder.path, ignore_errors=True)
                raise
            if main:
                remove_stale_temporaries(self.folder.path)
                remove_stale_temporaries(self.folder.checkpoint_dir)
            return self._train()

    def _train(self) -> TrainResult:
        cfg = self.cfg
        epoch, start_batch, step, elapsed, finished = 0, 0, 0, 0.0, False
        if self.resume:
            epoch, start_batch, step, elapsed, finished = self._load()
        stop_at = min(self.total_steps, cfg.max_steps) if cfg.max_steps else self.total_steps
        if self.resume and (finished or step >= stop_at):
            if self.main:
                print(
                    f"selfsup: {self.folder.path} has nothing left to train (step {step}"
                    f"{', finished' if finished else ''}); its files are unchanged",
                    flush=True,
                )
            summary = self.folder.read_summary()
            final = summary.get("final_loss")
            loss = float(final) if isinstance(final, (int, float)) else math.nan
            return TrainResult(self.run_dir, step, step / self.steps_per_epoch, loss, summary, trained=False)
        if self.main:
            self.folder.write_config(cfg)
        logger = MetricsLogger(self.folder, enabled=self.main, resume_step=step if self.resume else None)
        bar = ProgressBar(stop_at, step, enabled=self.main and cfg.progress)
        window_start, window_steps = time.perf_counter(), 0
        run_start = time.perf_counter() - elapsed
        self._last_save = time.monotonic()
        last_loss, last_logs, monitor = float("nan"), {}, {}
        images_per_s = 0.0
        initial = {}
        if not self.resume and cfg.knn_every:
            initial = {f"initial_{k}": v for k, v in self.knn_monitor().items()}
            if initial:
                bar.write(f"kNN top-1 (monitor) at initialisation: {initial['initial_knn_top1']:.4f}")
        self.method.train()
        try:
            with self.stop_requests:
                while epoch < cfg.epochs and step < stop_at:
                    batch = start_batch
                    for batch_views in self.pipeline.epoch(epoch, start_batch):
                        out = self.train_step(batch_views, step, epoch)
                        step += 1
                        batch += 1
                        window_steps += 1
                        end_of_epoch = batch == self.steps_per_epoch
                        if step % max(1, cfg.log_every) == 0 or end_of_epoch or step == stop_at:
                            now = time.perf_counter()
                            images_per_s = window_steps * cfg.batch_size / max(now - window_start, 1e-9)
                            last_loss = to_float(dist.all_reduce_mean(out.loss.detach()))
                            last_logs = {k: to_float(v) for k, v in out.logs.items()}
                            if out.embedding is not None:
                                last_logs["z_std"] = embedding_std(out.embedding)
                            row = {
                                "step": step,
                                "epoch": epoch + batch / self.steps_per_epoch,
                                "loss": last_loss,
                                "lr": self.optimizer.param_groups[0]["lr"],
                                "images_per_s": images_per_s,
                                **last_logs,
                            }
                            if (
                                end_of_epoch
                                and cfg.knn_every
                                and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs)
                            ):
                                monitor = self.knn_monitor()
                                row.update(monitor)
                                if monitor:
                                    bar.write(f"epoch {epoch + 1}: kNN top-1 (monitor) {monitor['knn_top1']:.4f}")
                            logger.log(row)
                            window_start, window_steps = time.perf_counter(), 0
                        bar.update(last_loss, self.optimizer.param_groups[0]["lr"], images_per_s, epoch + 1)
                        if self._stop_signal:
                            self._save(epoch, batch, step, time.perf_counter() - run_start)
                            raise Stopped(self._stop_signal, self._stopped_message(step, epoch))
                        if self._checkpoint_due():
                            self._save(epoch, batch, step, time.perf_counter() - run_start)
                        if step >= stop_at:
                            break
                    self._save(epoch, batch, step, time.perf_counter() - run_start)
                    epoch, start_batch = self._position(epoch, batch)
                    dist.barrier()
        finally:
            bar.close()
            logger.close()
        wall = time.perf_counter() - run_start
        summary = {
            "method": cfg.method,
            "dataset": cfg.dataset,
            "preset": cfg.preset,
            "steps": step,
            "epochs": step / self.steps_per_epoch,
            "wall_time_s": round(wall, 2),
            "images_per_s": round(step * cfg.batch_size / max(wall, 1e-9), 2),
            "peak_rss_mib": round(runtime.peak_rss_mib(), 1),
            "peak_gpu_mib": runtime.peak_gpu_mib(self.device),
            "final_loss": last_loss,
            **initial,
            **{f"final_{k}": v for k, v in last_logs.items()},
            **{f"final_{k}": v for k, v in monitor.items()},
            "world_size": self.world,
            "device": str(self.device),
            "finished": epoch >= cfg.epochs,
            "precision": cfg.precision,
            "channels_last": self.channels_last,
            "machine": runtime.machine(),
            **({"runtime_trial": self.runtime_trial} if self.runtime_trial else {}),
        }
        if self.main:
            self.folder.write_json(SUMMARY, summary)
        return TrainResult(self.run_dir, step, step / self.steps_per_epoch, last_loss, summary)

    def train_step(self, batch: ViewBatch, step: int, epoch: int) -> Any:
        """One optimizer step on a batch of views: LR, forward, finiteness check, backward, step, hooks."""
        return self._step(
            self.model, self.method, self.optimizer, self.amp_dtype, self.memory_format, batch, step, epoch
        )

    def _step(
        self,
        model: nn.Module,
        method: Method,
        optimizer: torch.optim.Optimizer,
        amp_dtype: torch.dtype | None,
        memory_format: torch.memory_format,
        batch: ViewBatch,
        step: int,
        epoch: int,
    ) -> Any:
        """:meth:`train_step` on any replica of the method (the runtime trial trains copies)."""
        cfg = self.cfg
        progress = Progress(step, self.total_steps, epoch, self.steps_per_epoch)
        factor = lr_factor(
            step,
            self.steps_per_epoch,
            cfg.epochs,
            schedule=cfg.schedule,
            warmup_epochs=cfg.warmup_epochs,
            warmup_start_ratio=cfg.warmup_start_ratio,
            final_lr_ratio=cfg.final_lr_ratio,
            milestones=cfg.lr_milestones,
            gamma=cfg.lr_gamma,
            per_step=cfg.schedule_per_step,
        )
        apply_lr(optimizer, cfg.lr, factor)
        views = [v.contiguous(memory_format=memory_format) for v in batch.views]
        with runtime.autocast(self.device, amp_dtype):
            out = model(views, progress, batch.labels)
        self._check_finite(out.loss, step, epoch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
        method.before_optimizer_step(progress)
        optimizer.step()
        method.after_optimizer_step(progress)
        return out

    # ------------------------------------------------------------------ runtime choices

    def _settle_runtime(self) -> dict[str, Any]:
        """Replace ``precision=auto`` / ``channels_last=auto`` by the fastest qualifying choice, measured on
        copies of the real model and the first real batches (:mod:`selfsup.engine.autotune`). Returns the
        trial's record for ``summary.json`` (empty when nothing was left to choose)."""
        cfg = self.cfg
        precisions = runtime.precision_candidates(cfg.precision, self.device)
        formats = runtime.channels_last_candidates(cfg.channels_last, self.device)
        options = autotune.candidates(precisions, formats)
        if len(options) == 1:
            cfg.precision, cfg.channels_last = options[0].precision, "true" if options[0].channels_last else "false"
            return {}
        needed = autotune.WARMUP_STEPS + autotune.TIMED_STEPS
        batches = list(itertools.islice(self.pipeline.epoch(0), needed))
        saved_rng = rng_state()
        runners = [self._trial_runner(option, batches, saved_rng) for option in options]
        results = autotune.measure(options, runners, self._sync)
        set_rng_state(saved_rng)
        autotune.check_agreement(results)
        autotune.agree_across_ranks(results)
        chosen = autotune.choose(results)
        cfg.precision = chosen.candidate.precision
        cfg.channels_last = "true" if chosen.candidate.channels_last else "false"
        if self.main:
            print(f"selfsup: {autotune.describe(results, chosen, cfg.batch_size // self.world)}", flush=True)
        return {"chosen": chosen.candidate.label, "candidates": [r.as_dict() for r in results]}

    def _trial_runner(
        self, option: autotune.Candidate, batches: list[ViewBatch], rng: dict[str, Any]
    ) -> autotune.StepRunner:
        """Trial steps of ``option`` on a copy of the method with its own optimizer and its own random state
        (starting from ``rng``, so that every candidate draws the same numbers)."""
        replica = copy.deepcopy(self.method)
        memory_format = torch.channels_last if option.channels_last else torch.contiguous_format
        replica = replica.to(memory_format=memory_format)
        optimizer = build_optimizer(replica.parameter_groups(), self.cfg, replica.no_weight_decay_parameters())
        amp_dtype = runtime.precision_dtype(option.precision)
        state = {"rng": rng}

        def run(i: int) -> float:
            set_rng_state(state["rng"])
            out = self._step(replica, replica, optimizer, amp_dtype, memory_format, batches[i % len(batches)], i, 0)
            state["rng"] = rng_state()
            return to_float(out.loss)

        return run

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _check_finite(self, loss: torch.Tensor, step: int, epoch: int) -> None:
        """Stop if the loss is not finite (on any rank), and note a stop request (a signal on any rank), so
        that every rank stops after the same step: both travel in one all-reduce under DDP.

        On the CPU the flags are read after every forward pass, before the backward one. On CUDA reading a
        device value makes the host wait for the GPU, which would serialise every step, so the non-finite flag
        is accumulated on the device and read every ``check_every`` (= ``log_every``) steps, with the logged
        loss (which waits anyway). A NaN can then reach the weights for up to ``log_every - 1`` steps, but not
        a checkpoint: :meth:`_save` reads the flags and checks every weight and buffer first."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        if (step + 1) % self.check_every == 0:
            self._read_flags(step, epoch)

    def _read_flags(self, step: int, epoch: int, collective: bool = True) -> None:
        """Read (and under DDP, if ``collective``, agree on) the pending non-finite flag and the stop request."""
        device = self._nonfinite.device if self._nonfinite is not None else self.device
        pending = self._nonfinite if self._nonfinite is not None else torch.zeros((), dtype=torch.bool, device=device)
        self._nonfinite = None
        flags = torch.stack([pending.float(), torch.tensor(float(self.stop_requests.signum), device=device)])
        if collective and dist.is_distributed():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        nonfinite, signum = bool(flags[0].item()), int(flags[1].item())
        if collective:
            self._stop_signal = signum
        if not nonfinite:
            return
        every = self.check_every
        when = f"at step {step + 1}" if every == 1 else f"within the {every} steps up to {step + 1}"
        raise TrainingDiverged(
            f"the loss became nan or infinite {when} (epoch {epoch + 1}); training stopped and "
            f"{self._kept()}. {self._recovery()}"
        )

    def _checkpoint_due(self) -> bool:
        minutes = self.cfg.checkpoint_every_min
        return self.main and minutes > 0 and time.monotonic() - self._last_save >= 60 * minutes

    def _stopped_message(self, step: int, epoch: int) -> str:
        return (
            f"{signal_name(self._stop_signal)} received: stopped after step {step} of {self.total_steps} "
            f"(epoch {epoch + 1}); the checkpoint is {self.folder.checkpoint_path}. Continue with: "
            f"selfsup pretrain --out {self.folder.path} --resume"
        )
