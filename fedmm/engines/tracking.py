"""Experiment tracking: TensorBoard event files per run, in ``RUN_DIR/tensorboard/``.

TensorBoard rather than MLflow: it needs no tracking server or database, only files
beside the run's other outputs (copied, archived and deleted with the run directory),
and it is what researchers already open (``tensorboard --logdir runs``). The files are
written with ``torch.utils.tensorboard.SummaryWriter``; ``tracking = "none"`` in the
config turns them off.

:class:`Tracker` wraps the run's reporter (progress hooks of the round loop). After
each round it logs that round's rows of ``metrics.jsonl``, the file the round loop has
just appended to, so the event files hold exactly what ``metrics.jsonl`` holds:

* ``global/...``: mean validation macro-F1, effective clients, mean upload bytes,
  uploads, prototypes and wall time of the ``"client": "global"`` row;
* ``clients/<type>/val_macro_f1`` and ``clients/<type>/train_loss``: means over the
  image_only / text_only / multimodal (/ mixed) clients of the round.

The step is the ``round`` field of ``metrics.jsonl`` (0-based). At the end of the run,
the test metrics per scenario and client type and the per-class recall are logged at
the last round's step, and the run's main settings as hparams with the test macro-F1s
as their metrics. A resumed run appends: the (tag, step) pairs already in the event
files are read back first and never written twice; a run started afresh in the same
directory starts new event files. Tracking only reads what the run wrote, so it
changes no result; a failure of it is reported and turns it off, the run goes on.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from fedmm.engines.report import CLIENT_TYPES, SCENARIOS, read_metrics

TRACKERS = ("tensorboard", "none")
TB_DIR = "tensorboard"
GLOBAL_KEYS = ("val_macro_f1_mean", "effective_clients", "upload_bytes_mean", "n_uploads", "n_prototypes", "wall_s")
CLIENT_KEYS = ("val_macro_f1", "train_loss")
TEST_METRICS = ("macro_f1", "accuracy", "macro_auroc")
HPARAM_KEY = "_hparams_/session_start_info"


def round_scalars(rows: list[dict]) -> dict[int, dict[str, float]]:
    """``{round: {tag: value}}`` of ``metrics.jsonl`` rows: the global row's numbers under
    ``global/`` and, per client type, the mean validation macro-F1 and train loss under ``clients/``."""
    out: dict[int, dict[str, float]] = {}
    per_type: dict[tuple[int, str, str], list[float]] = {}
    for row in rows:
        r = int(row["round"])
        if row.get("client") == "global":
            for k in GLOBAL_KEYS:
                if isinstance(row.get(k), (int, float)):
                    out.setdefault(r, {})[f"global/{k}"] = float(row[k])
            continue
        for k in CLIENT_KEYS:
            if isinstance(row.get(k), (int, float)):
                per_type.setdefault((r, row.get("modality", "unknown"), k), []).append(float(row[k]))
    for (r, kind, k), vals in per_type.items():
        out.setdefault(r, {})[f"clients/{kind}/{k}"] = float(np.mean(vals))
    return out


def final_scalars(summary: dict) -> dict[str, float]:
    """``{tag: value}`` of a summary.json: test metrics per scenario (``test/<scenario>/<metric>``),
    per client type (``test_client_type/<type>/<metric>``) and recall per class (``test_recall/<class>``)."""
    out = {}
    for section, prefix, keys in (("test", "test", SCENARIOS), ("client_types", "test_client_type", CLIENT_TYPES)):
        for k in keys:
            for m in TEST_METRICS:
                v = summary.get(section, {}).get(k, {}).get(m)
                if isinstance(v, (int, float)):
                    out[f"{prefix}/{k}/{m}"] = float(v)
    for c, v in summary.get("per_class_recall", {}).items():
        out[f"test_recall/{c}"] = float(v)
    return out


def run_hparams(cfg) -> dict:
    """The run's main settings as TensorBoard hparams (str / int / float / bool values only)."""
    fed, train, data = cfg.fed, cfg.train, cfg.data
    return {"strategy": fed.strategy, "seed": int(cfg.seed), "rounds": int(fed.rounds),
            "n_clients": int(data.n_clients), "partition": data.partition, "modalities": data.modalities,
            "aggregation": fed.aggregation, "weighting": fed.weighting, "encoders": fed.encoders, "bn": fed.bn,
            "kd": fed.kd, "rep_kd": fed.rep_kd, "align": fed.align, "balance": fed.balance,
            "missing_views": fed.missing_views, "prototypes": fed.prototypes, "lr": float(train.lr),
            "local_epochs": int(train.local_epochs), "fusion": cfg.model.fusion}


def logged_steps(log_dir: Path) -> set[tuple[str, int]]:
    """The (tag, step) pairs already held by the event files in ``log_dir``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen: set[tuple[str, int]] = set()
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            seen.update((v.tag, int(event.step)) for v in event.summary.value)
    return seen


class Tracker:
    """The run's reporter with TensorBoard logging added (see the module docstring).

    ``inner`` gets every progress hook as before. The event files are opened at the first
    round that ends (so a run that fails while preparing leaves no ``tensorboard/`` folder);
    :meth:`finish` logs rounds not seen yet (the Flower ServerApp runs the rounds in another
    process), the final test metrics and the hparams, and closes them. Raises ValueError for
    an unknown ``cfg.tracking``.
    """

    def __init__(self, cfg, run_dir: Path, inner, resume: bool = False) -> None:
        if cfg.tracking not in TRACKERS:
            raise ValueError(f"unknown tracking {cfg.tracking!r}; choose from {', '.join(TRACKERS)}")
        self.cfg, self.run_dir, self.inner, self.resume = cfg, Path(run_dir), inner, resume
        self.enabled = cfg.tracking == "tensorboard"
        self.writer = None
        self.seen: set[tuple[str, int]] = set()

    @property
    def log_dir(self) -> Path:
        return self.run_dir / TB_DIR

    def start_round(self, r: int, total_rounds: int, n_clients: int) -> None:
        self.inner.start_round(r, total_rounds, n_clients)

    def client_done(self, name: str, meta: dict) -> None:
        self.inner.client_done(name, meta)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def end_round(self, r: int, info: dict) -> None:
        """Pass the hook on, then log the rows ``metrics.jsonl`` got for round ``r`` (and any before)."""
        self.inner.end_round(r, info)
        self._guarded(self.sync)

    def __getattr__(self, name: str):   # anything else the wrapped reporter offers
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def sync(self) -> None:
        """Log every round of ``metrics.jsonl`` whose scalars are not in the event files yet; flush."""
        if not self.enabled:
            return
        per_round = round_scalars(read_metrics(self.run_dir))
        if not per_round:
            return
        writer = self._open()
        for step in sorted(per_round):
            for tag, value in sorted(per_round[step].items()):
                self._add(writer, tag, value, step)
        writer.flush()

    def finish(self, summary: dict) -> dict:
        """Log the remaining rounds, the final test metrics and the hparams; close the files.
        Returns ``summary`` unchanged."""
        self._guarded(self._finish, summary)
        return summary

    def _finish(self, summary: dict) -> None:
        if not self.enabled:
            return
        self.sync()
        rounds = read_metrics(self.run_dir)
        step = max((int(r["round"]) for r in rounds), default=max(int(summary.get("rounds", 1)) - 1, 0))
        scalars = final_scalars(summary)
        writer = self._open()
        for tag, value in sorted(scalars.items()):
            self._add(writer, tag, value, step)
        if scalars and HPARAM_KEY not in {tag for tag, _ in self.seen}:
            from torch.utils.tensorboard.summary import hparams

            metrics = {t: v for t, v in scalars.items() if t.startswith("test/") and t.endswith("/macro_f1")}
            for part in hparams(run_hparams(self.cfg), metrics):
                writer.file_writer.add_summary(part)
            self.seen.add((HPARAM_KEY, 0))
        self.close()

    def close(self) -> None:
        """Flush and close the event files (a later sync opens new ones)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _add(self, writer, tag: str, value: float, step: int) -> None:
        if (tag, step) not in self.seen:
            writer.add_scalar(tag, value, step)
            self.seen.add((tag, step))

    def _open(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            if self.resume:
                self.seen = logged_steps(self.log_dir) if self.log_dir.is_dir() else set()
            else:   # a fresh run in this directory: earlier event files belong to an older run
                shutil.rmtree(self.log_dir, ignore_errors=True)
                self.seen = set()
            self.resume = True   # files opened later in this run (after close) append
            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        return self.writer

    def _guarded(self, fn, *args) -> None:
        if not self.enabled:
            return
        try:
            fn(*args)
        except Exception as exc:   # tracking must never stop or change a run
            self.enabled = False
            self.close_quietly()
            self.inner.message(f"tensorboard tracking turned off: {type(exc).__name__}: {exc}")

    def close_quietly(self) -> None:
        """Close the event files, ignoring errors (after a tracking failure)."""
        try:
            self.close()
        except Exception:
            self.writer = None
