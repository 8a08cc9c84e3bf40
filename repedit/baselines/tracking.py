"""Forget-level tracking for the trained baselines (GA, NPO, RMU).

A `Tracker` evaluates a monitor every few steps — in recipe runs, the run's own forget measure
(mean answer probability over the recipe's forms, `repedit.verify.recall.recall_probability`) and the
neighbours' — records (step, training seconds so far, monitored values) and says when to stop.
Monitoring time is excluded from the training seconds, so the trajectory answers "how long did this
baseline train to reach forget level x?", which is what the comparison's time ratio needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from repedit.errors import ConfigError

Monitor = Callable[[], dict]                  #: returns at least {"forget": float}


class Tracker:
    def __init__(self, monitor: Monitor | None, every: int, stop_at: float):
        if every < 1:
            raise ConfigError(f"check_every must be >= 1, got {every}")
        self.monitor, self.every, self.stop_at = monitor, every, stop_at
        self.rows: list[dict] = []
        self.t0, self.monitor_seconds = time.perf_counter(), 0.0

    @property
    def train_seconds(self) -> float:
        return time.perf_counter() - self.t0 - self.monitor_seconds

    def due(self, step: int, last: bool = False) -> bool:
        return last or step % self.every == 0

    def check(self, step: int, fallback: Callable[[], float]) -> bool:
        """Record a point at `step`; True once the monitored forget (or `fallback()` without a monitor)
        is at or below `stop_at`."""
        t = time.perf_counter()
        with torch.no_grad():
            values = self.monitor() if self.monitor is not None else {"forget": float(fallback())}
        if "forget" not in values:
            raise ConfigError(f"a monitor must return {{'forget': ...}}, got keys {sorted(values)}")
        self.monitor_seconds += time.perf_counter() - t
        self.rows.append({"step": step, "train_seconds": round(self.train_seconds, 3),
                          **{k: round(float(v), 5) for k, v in values.items()}})
        return values["forget"] <= self.stop_at

    def stats(self) -> dict:
        return {"trajectory": self.rows, "monitored": self.monitor is not None,
                "train_seconds": round(self.train_seconds, 2), "monitor_seconds": round(self.monitor_seconds, 2)}


def seconds_to_level(trajectory: list[dict], level: float) -> float | None:
    """Training seconds at the first tracked point whose forget is at or below `level` (None: never)."""
    return next((r["train_seconds"] for r in trajectory if r["forget"] <= level), None)
