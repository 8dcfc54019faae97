"""Train and evaluate every run of a comparison, resuming what was interrupted and skipping what is done.

For each run of the plan (:mod:`selfsup.compare.plan`), in its own folder ``OUT/<run name>``:

1. no checkpoint: train from scratch; a checkpoint that is not finished: resume it (the Trainer's
   ``--resume``, exact to the step); finished (or already at ``--max-steps``): skip training. A folder
   whose saved config differs from the requested one is an error, never overwritten;
2. evaluate with :func:`selfsup.evaluation.evaluate.evaluate_run` (kNN and linear probe on h and z)
   unless ``eval.json`` is newer than the checkpoint and was made on the same evaluation subset. The
   raw-pixel and random-init baselines are computed once per architecture;
3. record the run's state in ``compare.json``.

Training runs in a child process by default (``isolate=True``): the peak memory in ``summary.json``
is then the run's own, not the maximum of every run trained before it in the same process, and a
run that crashes cannot take the comparison down. A failed run is reported and the others go on.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsup.compare.plan import SUPERVISED, Plan, RunSpec, plan_runs, spec_config
from selfsup.compare.results import RunResult, load_result
from selfsup.config import ConfigError, TrainConfig, config_differences
from selfsup.run_folder import EMBEDDINGS, ERROR, EVALUATION, STATUS, RunFolder

IGNORED_CONFIG_KEYS = ("out", "progress", "max_steps", "device", "num_workers", "data_dir")
"""Config keys that may differ when a run is resumed or skipped (they do not change the result)."""


@dataclass
class CompareOptions:
    """Everything ``selfsup compare`` was asked for."""

    out: Path
    methods: list[str]
    dataset: str = "fashion-mnist"
    preset: str = "cpu"
    flags: dict[str, Any] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)
    ablations: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    ablation_seeds: list[int] | None = None
    supervised: bool = True
    isolate: bool = True
    progress: bool = True
    eval_train: int = 0
    eval_test: int = 0
    device: str = "auto"
    report_dir: Path | None = None
    command: str = ""
    train: bool = True

    @property
    def run_flags(self) -> dict[str, Any]:
        return {**self.flags, "dataset": self.dataset}


def log(message: str) -> None:
    print(f"selfsup compare: {message}", flush=True)


# ----------------------------------------------------------------------------- training


def _train_in_this_process(cfg_dict: dict[str, Any], run_dir: str, resume: bool) -> None:
    from selfsup.engine.trainer import Trainer

    Trainer(TrainConfig.from_dict(cfg_dict), run_dir, resume=resume).fit()


def _child(cfg_dict: dict[str, Any], run_dir: str, resume: bool) -> None:
    """Entry point of the training child process: errors go to ``RUN_DIR/error.txt``."""
    try:
        _train_in_this_process(cfg_dict, run_dir, resume)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as err:  # reported by the parent
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        RunFolder(run_dir).file(ERROR).write_text(f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
        sys.exit(1)


def train(cfg: TrainConfig, run_dir: Path, resume: bool, isolate: bool) -> str | None:
    """Train (or resume) one run; returns None on success, else the error message."""
    RunFolder(run_dir).file(ERROR).unlink(missing_ok=True)
    if not isolate:
        try:
            _train_in_this_process(cfg.to_dict(), str(run_dir), resume)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # one failed run must not stop the comparison
            return f"{type(err).__name__}: {err}"
        return None
    process = multiprocessing.get_context("spawn").Process(target=_child, args=(cfg.to_dict(), str(run_dir), resume))
    process.start()
    try:
        process.join()
    except KeyboardInterrupt:
        process.join(timeout=30)
        raise
    if process.exitcode == 0:
        return None
    if process.exitcode == 130:
        raise KeyboardInterrupt
    error = RunFolder(run_dir).file(ERROR)
    return (
        error.read_text().split("\n\n")[0]
        if error.is_file()
        else f"the training process exited with code {process.exitcode}"
    )


def checkpoint_state(run_dir: Path) -> tuple[int, bool] | None:
    """(step, finished) of the run's checkpoint, or None if there is none."""
    folder = RunFolder(run_dir)
    if not folder.has_checkpoint():
        return None
    state = folder.read_checkpoint()
    return int(state["step"]), bool(state.get("finished"))


def train_if_needed(spec: RunSpec, cfg: TrainConfig, run_dir: Path, isolate: bool) -> dict[str, Any]:
    """Train, resume or skip ``spec``; returns its status (``state``, ``action``, ``step``)."""
    existing = checkpoint_state(run_dir)
    if existing is not None:
        diffs = config_differences(RunFolder(run_dir).read_config(), cfg, IGNORED_CONFIG_KEYS)
        if diffs:
            raise ConfigError(
                f"{run_dir} holds a run of {spec.label} with other settings ({', '.join(diffs)}); "
                "nothing was overwritten. Choose another --out, or delete that folder to retrain."
            )
        step, finished = existing
        if finished or (cfg.max_steps is not None and step >= cfg.max_steps):
            log(f"{spec.name}: already trained ({step} steps), skipped")
            return {"state": "finished" if finished else f"stopped at step {step}", "action": "skipped", "step": step}
        log(f"{spec.name}: resuming from step {step}")
        action = "resumed"
    else:
        log(
            f"{spec.name}: training {cfg.method} ({cfg.backbone}, batch {cfg.batch_size}, {cfg.epochs} "
            f"epoch{'s' if cfg.epochs != 1 else ''})"
        )
        action = "trained"
    run_dir.mkdir(parents=True, exist_ok=True)
    error = train(cfg, run_dir, resume=existing is not None, isolate=isolate)
    after = checkpoint_state(run_dir)
    step = after[0] if after else 0
    if error is not None:
        log(f"{spec.name}: FAILED: {error}")
        return {"state": f"failed: {error}", "action": action, "step": step}
    finished = bool(after and after[1])
    return {"state": "finished" if finished else f"stopped at step {step}", "action": action, "step": step}


# ----------------------------------------------------------------------------- evaluation


def baseline_signature(cfg: TrainConfig) -> tuple[Any, ...]:
    """Runs with equal signatures have equal raw-pixel and random-init baselines."""
    return (
        cfg.backbone,
        cfg.stem,
        cfg.norm,
        cfg.zero_init_residual,
        cfg.seed,
        cfg.augment.image_size,
        tuple(cfg.backbone_args),
        cfg.backbone_patch_size,
        cfg.freeze_patch_embed,
        cfg.pos_embed,
    )


def eval_is_current(run_dir: Path, status: dict[str, Any], opts: CompareOptions) -> bool:
    folder = RunFolder(run_dir)
    evaluation, ckpt = folder.file(EVALUATION), folder.checkpoint_path
    if not (evaluation.is_file() and ckpt.is_file() and folder.file(EMBEDDINGS).is_file()):
        return False
    same_subset = status.get("eval_subset") == [opts.eval_train, opts.eval_test]
    return same_subset and evaluation.stat().st_mtime >= ckpt.stat().st_mtime


def evaluate(spec: RunSpec, run_dir: Path, opts: CompareOptions, baselines: bool) -> dict[str, Any]:
    """Run the evaluation of one run; returns the extra fields for ``compare.json``."""
    from selfsup.evaluation.evaluate import evaluate_run

    started = time.perf_counter()
    log(f"{spec.name}: evaluating (kNN and linear probe on h and z{', baselines' if baselines else ''})")
    evaluate_run(
        run_dir,
        "all",
        opts.device,
        baselines=baselines,
        progress=opts.progress,
        max_train=opts.eval_train,
        max_test=opts.eval_test,
        save_embeddings=True,
    )
    log(f"{spec.name}: evaluated in {time.perf_counter() - started:.0f} s")
    return {"eval_subset": [opts.eval_train, opts.eval_test]}


# ----------------------------------------------------------------------------- the comparison


def _num_classes(opts: CompareOptions) -> int:
    from selfsup.data import load_dataset

    dataset = load_dataset(opts.dataset, "train", opts.flags.get("data_dir"), int(opts.sets.get("channels", 0)))
    if not dataset.has_labels:
        raise ConfigError(
            f"the {opts.dataset} data has no labels: kNN/linear evaluation and the supervised "
            "baseline need them (use --no-supervised to train without it; evaluation still "
            "needs labels)"
        )
    return dataset.num_classes


def build_configs(plan: Plan, opts: CompareOptions) -> dict[str, TrainConfig]:
    """The resolved config of every run of ``plan``. The supervised baseline gets the longest budget of
    the compared runs when no ``--epochs`` is given."""
    configs: dict[str, TrainConfig] = {}
    for spec in plan.all_runs():
        if spec.method != SUPERVISED:
            configs[spec.name] = spec_config(spec, opts.preset, opts.run_flags, opts.sets)
    for spec in plan.supervised:
        flags = dict(opts.run_flags)
        if flags.get("epochs") is None and configs:
            flags["epochs"] = max(c.epochs for c in configs.values())
        configs[spec.name] = spec_config(spec, opts.preset, flags, opts.sets, _num_classes(opts))
    for name, cfg in configs.items():
        cfg.out = str(opts.out / name)
        cfg.progress = opts.progress
    return configs


def run_compare(
    opts: CompareOptions, plan: Plan | None = None, on_run: Callable[[RunSpec, dict[str, Any]], None] | None = None
) -> tuple[Plan, list[RunResult]]:
    """Train and evaluate every run of the comparison, then write the report; returns the plan and results.
    Every run's config is resolved (so checked) before anything is written; the comparison folder's writer
    lock is then held throughout (each run's trainer takes its own folder's)."""
    plan = plan or plan_runs(
        opts.methods,
        opts.ablations,
        opts.preset,
        opts.run_flags,
        opts.sets,
        opts.seeds,
        opts.supervised,
        opts.ablation_seeds,
    )
    configs = build_configs(plan, opts)
    with RunFolder(opts.out).writer_lock():
        return _run_compare(opts, plan, configs, on_run)


def _run_compare(
    opts: CompareOptions,
    plan: Plan,
    configs: dict[str, TrainConfig],
    on_run: Callable[[RunSpec, dict[str, Any]], None] | None,
) -> tuple[Plan, list[RunResult]]:
    from selfsup.compare.report import write_report

    RunFolder(opts.out).write_json(STATUS, {"command": opts.command, "runs": list(configs), "time": time.ctime()})
    with_baselines: set[tuple[Any, ...]] = set()
    for spec in plan.all_runs():
        run_dir, cfg = opts.out / spec.name, configs[spec.name]
        folder = RunFolder(run_dir)
        status = folder.read_json(STATUS)
        if opts.train:
            status.update(train_if_needed(spec, cfg, run_dir, opts.isolate))
        signature = baseline_signature(cfg)
        has_baselines = "raw_pixels_knn_top1" in folder.read_evaluation()
        trained = checkpoint_state(run_dir) is not None
        if (
            opts.train
            and trained
            and not status.get("state", "").startswith("failed")
            and not eval_is_current(run_dir, status, opts)
        ):
            status.pop("eval_error", None)
            try:
                status.update(evaluate(spec, run_dir, opts, baselines=signature not in with_baselines))
                has_baselines = has_baselines or signature not in with_baselines
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # reported; the other runs go on
                status["eval_error"] = f"{type(err).__name__}: {err}"
                log(f"{spec.name}: evaluation FAILED: {status['eval_error']}")
        if has_baselines:
            with_baselines.add(signature)
        if trained or status:
            folder.write_json(STATUS, status)
        if on_run is not None:
            on_run(spec, status)
    results = [load_result(spec, opts.out / spec.name) for spec in plan.all_runs()]
    for result in results:
        result.config = result.config or configs[result.spec.name]  # not run yet: the planned recipe
    report_dir = opts.report_dir or opts.out
    write_report(plan, results, opts, report_dir)
    log(f"report written to {report_dir / 'report.md'} and {report_dir / 'report.html'}")
    return plan, results
