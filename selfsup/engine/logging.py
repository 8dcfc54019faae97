"""Run outputs: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard, progress bar.

Only rank 0 writes. Every metrics row holds at least ``step``, ``epoch``, ``loss``, ``lr`` and
``images_per_s`` (source images per second of wall time, over the logging interval).
"""

from __future__ import annotations

import json
import math
from typing import Any

from tqdm.auto import tqdm

from selfsup.run_folder import RunFolder


def to_float(value: Any) -> float:
    return float(value.detach().float().item()) if hasattr(value, "detach") else float(value)


class MetricsLogger:
    """Appends rows to ``DIR/metrics.jsonl`` and mirrors the scalars to TensorBoard."""

    def __init__(self, folder: RunFolder, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = folder.metrics_path
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(folder.tensorboard_dir))
            except ImportError:  # tensorboard is a dependency, but keep training without it
                self.writer = None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {
            k: (to_float(v) if not isinstance(v, (str, int)) or isinstance(v, bool) else v) for k, v in row.items()
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self.writer is not None:
            for key, value in clean.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, clean["step"])

    def truncate_after(self, step: int) -> None:
        """Drop rows beyond ``step`` (after resuming from an earlier checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        rows = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        self.path.write_text("".join(r + "\n" for r in rows))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar:
    """A tqdm bar over optimizer steps showing loss, LR, images/s and the ETA."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = tqdm(
            total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, desc="pretrain"
        )

    def update(self, loss: float, lr: float, images_per_s: float, epoch: int) -> None:
        self.bar.set_postfix(
            epoch=epoch, loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{images_per_s:.0f}", refresh=False
        )
        self.bar.update(1)

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
