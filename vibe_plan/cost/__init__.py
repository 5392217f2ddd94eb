"""The cost model: per-GPU expert time curves, and a plan's predicted MoE time.

`t_g(n)`: piecewise-linear through the measured points, made non-decreasing, `t_g(0) = 0`, linear
past the last point. An expert's tokens reach its replicas by the engine's dispatch rule
(`dispatch.py`; `even`: n / r each). Shared by profiling, planning and evaluating; the model is
described in docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vibe_plan.artifacts.gpu_profile import GpuCurve, GpuProfile
from vibe_plan.cost.dispatch import Dispatch, slot_tokens

EVEN = Dispatch()


@dataclass(frozen=True)
class TimeCurve:
    tokens: np.ndarray  # float, starts at 0, strictly increasing
    time_us: np.ndarray  # float, starts at 0, non-decreasing

    @classmethod
    def from_points(cls, tokens: list[int] | np.ndarray, time_us: list[float] | np.ndarray):
        t = np.asarray(tokens, dtype=float)
        y = np.maximum.accumulate(np.asarray(time_us, dtype=float))
        return cls(np.concatenate([[0.0], t]), np.concatenate([[0.0], y]))

    @property
    def tail_slope(self) -> float:
        dt = self.tokens[-1] - self.tokens[-2]
        return float((self.time_us[-1] - self.time_us[-2]) / dt)

    def __call__(self, n: np.ndarray | float) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        out = np.interp(n, self.tokens, self.time_us)
        past = n > self.tokens[-1]
        if np.any(past):
            out = np.where(past, self.time_us[-1] + self.tail_slope * (n - self.tokens[-1]), out)
        return out


def time_curve(curve: GpuCurve) -> TimeCurve:
    """A profile's measured points as the cost model's curve."""
    return TimeCurve.from_points(curve.tokens, curve.time_us)


def curves_of(profile: GpuProfile) -> list[TimeCurve]:
    return [time_curve(g.curve) for g in profile.gpus]


def expert_time(curves: list[TimeCurve], per_replica_load: np.ndarray) -> np.ndarray:
    """Time of each item on each GPU: `p[..., g] = t_g(load[...])`."""
    return np.stack([c(per_replica_load) for c in curves], axis=-1)


def gpu_times(
    curves: list[TimeCurve],
    phy2log: np.ndarray,
    load: np.ndarray,
    dispatch: Dispatch = EVEN,
    layer_ids: list[int] | None = None,
) -> np.ndarray:
    """Per-GPU MoE time of every layer for one load matrix: load [L, E] -> time_us [L, G]."""
    return batch_gpu_times(curves, phy2log, load[None], dispatch, layer_ids)[0]


def batch_gpu_times(
    curves: list[TimeCurve],
    phy2log: np.ndarray,
    counts: np.ndarray,
    dispatch: Dispatch = EVEN,
    layer_ids: list[int] | None = None,
) -> np.ndarray:
    """Per-GPU MoE time for every batch: counts [B, L, E] -> time_us [B, L, G]."""
    return slot_gpu_times(curves, slot_tokens(phy2log, counts, len(curves), dispatch, layer_ids))


def slot_gpu_times(curves: list[TimeCurve], tokens: np.ndarray) -> np.ndarray:
    """Tokens per physical slot [..., P] -> each GPU's time, the sum over its slots [..., G]."""
    G = len(curves)
    per_gpu = tokens.reshape(*tokens.shape[:-1], G, tokens.shape[-1] // G)
    return np.stack([curves[g](per_gpu[..., g, :]).sum(axis=-1) for g in range(G)], axis=-1)


def imbalance(times: np.ndarray) -> np.ndarray:
    """max over GPUs / mean over GPUs along the last axis."""
    mean = times.mean(axis=-1)
    return np.where(mean > 0, times.max(axis=-1) / np.where(mean > 0, mean, 1), 1.0)
