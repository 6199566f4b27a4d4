"""Training curves: losses per step and validation metrics per epoch, as CSV files and one PNG.

The history lives in the checkpoint, so after a restart the curves continue from the checkpointed
epoch and every epoch appears exactly once. Files written next to the checkpoints:

    losses.csv   epoch, step, one column per loss (l_g_pix, l_d_real, ... or loss)
    epochs.csv   epoch, step, images_per_s, lr, train_<loss> means, val_<metric>
    curves.png   losses against step (left), validation metrics against epoch (right)
    events.out.tfevents.attrgan   the epochs.csv values for TensorBoard, one point per epoch
                 (`tensorboard --logdir <run folder or the runs/ folder above it>`)
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import pandas as pd

from attrgan.config import StorageConfig
from attrgan.data.storage import join, write_bytes

LOSSES_CSV = "losses.csv"
EPOCHS_CSV = "epochs.csv"
CURVES_PNG = "curves.png"
EVENTS_FILE = "events.out.tfevents.attrgan"  # TensorBoard reads any file named *tfevents*


@dataclasses.dataclass
class Curves:
    """Loss points (one dict per logged step) and epoch summaries (one dict per finished epoch)."""

    steps: list[dict[str, float]] = dataclasses.field(default_factory=list)
    epochs: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def add_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Append an epoch's report: its "step_log" points and its numeric summary values.

        An epoch already recorded (a retried epoch) replaces the earlier record, so each epoch
        appears once.
        """
        epoch = metrics["epoch"]
        self.steps = [s for s in self.steps if s["epoch"] != epoch] + [dict(s) for s in metrics.get("step_log", [])]
        summary = {k: v for k, v in metrics.items() if k != "step_log" and isinstance(v, (int, float))}
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [summary]

    def state(self) -> dict[str, list[dict[str, float]]]:
        """Plain data for a checkpoint."""
        return {"steps": [dict(s) for s in self.steps], "epochs": [dict(e) for e in self.epochs]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> "Curves":
        state = state or {}
        return cls(steps=[dict(s) for s in state.get("steps", [])], epochs=[dict(e) for e in state.get("epochs", [])])


def plot(curves: Curves) -> bytes:
    """PNG bytes: losses against step, validation metrics against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    steps = pd.DataFrame(curves.steps)
    for column in steps.columns:
        if column not in ("epoch", "step"):
            ax_loss.plot(steps["step"], steps[column], label=column)
    ax_loss.set(xlabel="step", ylabel="loss", title="training losses")
    epochs = pd.DataFrame(curves.epochs)
    for column in epochs.columns:
        if column.startswith("val_"):
            ax_val.plot(epochs["epoch"], epochs[column], marker="o", label=column)
    ax_val.set(xlabel="epoch", title="validation")
    for ax in (ax_loss, ax_val):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def tensorboard_events(curves: Curves) -> bytes:
    """A TensorBoard event file of every epoch summary: `train/<loss>`, `val/<metric>`, `lr` and
    `images_per_s` against the epoch number (1-based). Rebuilt whole from the history each time,
    like the CSVs, so a resumed run never holds an epoch twice."""
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(logdir=folder, filename_suffix=".attrgan")
        for row in curves.epochs:
            epoch = int(row["epoch"]) + 1
            for key, value in row.items():
                if key.startswith(("train_", "val_")):
                    writer.add_scalar(key.replace("_", "/", 1), value, epoch)
                elif key in ("lr", "images_per_s"):
                    writer.add_scalar(key, value, epoch)
        writer.close()
        (path,) = Path(folder).glob("*tfevents*")
        return path.read_bytes()


def write_curves(folder_uri: str, curves: Curves, storage: StorageConfig | None = None) -> None:
    """Write losses.csv, epochs.csv, curves.png and the TensorBoard events under `folder_uri`
    (local or s3://)."""
    for name, rows in ((LOSSES_CSV, curves.steps), (EPOCHS_CSV, curves.epochs)):
        write_bytes(join(folder_uri, name), pd.DataFrame(rows).to_csv(index=False).encode(), storage=storage)
    write_bytes(join(folder_uri, CURVES_PNG), plot(curves), storage=storage)
    write_bytes(join(folder_uri, EVENTS_FILE), tensorboard_events(curves), storage=storage)
