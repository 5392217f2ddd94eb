"""The cost model of DESIGN.md: per-GPU expert time curves, and a plan's predicted MoE time.

`t_g(n)`: piecewise-linear through the measured points, made non-decreasing, `t_g(0) = 0`, linear
past the last point. An expert with `r` replicas sends `n / r` tokens to each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vibe_plan.artifacts.gpu_profile import GpuProfile


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


def curves_of(profile: GpuProfile) -> list[TimeCurve]:
    return [TimeCurve.from_points(g.curve.tokens, g.curve.time_us) for g in profile.gpus]


def expert_time(curves: list[TimeCurve], per_replica_load: np.ndarray) -> np.ndarray:
    """Time of each item on each GPU: `p[..., g] = t_g(load[...])`."""
    return np.stack([c(per_replica_load) for c in curves], axis=-1)


def gpu_times(curves: list[TimeCurve], phy2log: np.ndarray, load: np.ndarray) -> np.ndarray:
    """Per-GPU MoE time of every layer for one load matrix: load [L, E] -> time_us [L, G]."""
    return batch_gpu_times(curves, phy2log, load[None])[0]


def batch_gpu_times(curves: list[TimeCurve], phy2log: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-GPU MoE time for every batch: counts [B, L, E] -> time_us [B, L, G]."""
    G = len(curves)
    B, L, E = counts.shape
    S = phy2log.shape[1] // G
    out = np.empty((B, L, G))
    for layer in range(L):
        cnt = np.bincount(phy2log[layer], minlength=E)
        per_rep = counts[:, layer, :] / np.maximum(cnt, 1)
        slot_load = per_rep[:, phy2log[layer]].reshape(B, G, S)
        for g in range(G):
            out[:, layer, g] = curves[g](slot_load[:, g, :]).sum(axis=-1)
    return out


def imbalance(times: np.ndarray) -> np.ndarray:
    """max over GPUs / mean over GPUs along the last axis."""
    mean = times.mean(axis=-1)
    return np.where(mean > 0, times.max(axis=-1) / np.where(mean > 0, mean, 1), 1.0)
