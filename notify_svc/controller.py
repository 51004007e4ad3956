"""A volume controller: holds a target send rate by moving the policy's decision threshold.

A PI controller on the *relative* rate error. Every `interval` of decision time (the engine's
clock, so a simulator's clock works too) it takes the sends counted in that interval, smooths the
rate with an EWMA, and sets

    threshold = base + kp · e + ki · Σ e,    e = (observed − target) / target,

clamped to [low, high]. Sending too much raises the threshold (fewer sends); too little lowers it.
The relative error makes the gains independent of the target's scale; the integral term removes
the steady-state error a pure P controller would leave; while the output is clamped the integral
is frozen (anti-windup), so a long stretch at a bound does not overshoot when it lets go.

Only budget-spending sends count — non-transactional SEND_NOW and DELAY_UNTIL recorded for the
first time (replays and transactional messages do not). The controller drives any policy with a
settable `threshold` attribute (the learned policy); the rule policy has none and is left alone.
The threshold and the observed rate are exported as OpenTelemetry gauges and stamped on every
decision's scores (`threshold`, `observed_sends_per_min`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from kindred import telemetry_schema as schema
from kindred.telemetry import get_meter
from notify_svc.domain import Action, Decision

METRIC_THRESHOLD = schema.METRIC_NOTIFY_THRESHOLD
METRIC_SEND_RATE = schema.METRIC_NOTIFY_SEND_RATE


@runtime_checkable
class Thresholded(Protocol):
    """A policy whose send threshold the controller may set."""

    threshold: float


@dataclass(frozen=True)
class ControllerParams:
    target_per_minute: float  # budget-spending sends per minute, over all fans
    interval: timedelta = timedelta(minutes=1)
    kp: float = 0.05
    ki: float = 0.05
    smoothing: float = 0.5  # EWMA weight of the newest interval's rate
    # Bounds of the threshold. The learned policy's threshold is on utility (0 = its base), so the
    # controller may go below it to send more as well as above it to send less.
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.target_per_minute <= 0:
            raise ValueError("target_per_minute must be positive")
        if self.interval <= timedelta(0) or not 0 < self.smoothing <= 1 or self.low >= self.high:
            raise ValueError("need a positive interval, smoothing in (0, 1] and low < high")


def counts_as_send(decision: Decision) -> bool:
    return (
        not decision.duplicate
        and decision.action in (Action.SEND_NOW, Action.DELAY_UNTIL)
        and decision.reason != "transactional"
    )


class VolumeController:
    def __init__(
        self, params: ControllerParams, initial_threshold: float = 0.5, *, meter: Meter | None = None
    ) -> None:
        self.params = params
        self._base = initial_threshold
        self._threshold = initial_threshold
        self._integral = 0.0
        self._rate: float | None = None
        self._sends = 0
        self._window_start: datetime | None = None
        self._lock = threading.Lock()
        meter = meter or get_meter(__name__)
        meter.create_observable_gauge(
            METRIC_THRESHOLD, callbacks=[self._observe_threshold], description="notify send threshold"
        )
        meter.create_observable_gauge(
            METRIC_SEND_RATE,
            callbacks=[self._observe_rate],
            unit="{send}/min",
            description="observed budget-spending sends per minute (EWMA) the controller acts on",
        )

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def observed_per_minute(self) -> float:
        return self._rate if self._rate is not None else 0.0

    def scores(self) -> dict[str, float]:
        return {
            "threshold": self._threshold,
            "observed_sends_per_min": self.observed_per_minute,
            "target_sends_per_min": self.params.target_per_minute,
        }

    def observe(self, decisions: Iterable[Decision], now: datetime) -> float:
        """Counts recorded decisions, closes any finished intervals; returns the threshold to use."""
        sends = sum(1 for d in decisions if counts_as_send(d))
        with self._lock:
            if self._window_start is None:
                self._window_start = now
            self._sends += sends
            elapsed = now - self._window_start
            if elapsed >= self.params.interval:
                self._update(self._sends / (elapsed.total_seconds() / 60.0))
                self._sends = 0
                self._window_start = now
            return self._threshold

    def _update(self, rate: float) -> None:
        p = self.params
        a = p.smoothing
        self._rate = rate if self._rate is None else a * rate + (1 - a) * self._rate
        error = (self._rate - p.target_per_minute) / p.target_per_minute
        integral = self._integral + error
        raw = self._base + p.kp * error + p.ki * integral
        clamped = min(p.high, max(p.low, raw))
        if clamped == raw:  # anti-windup: integrate only while the output is not saturated
            self._integral = integral
        self._threshold = clamped

    def _observe_threshold(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._threshold)

    def _observe_rate(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.observed_per_minute)
