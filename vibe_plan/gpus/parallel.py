"""One process per GPU on this node, all measuring at the same time (power and heat are shared)."""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import threading
from collections.abc import Callable
from typing import Any

from vibe_plan.gpus.worker import BenchSpec, DeviceResult, PeerFailed, safe_measure

ProgressCb = Callable[[int, int, int], None]  # rank, done, total


def _child(spec: BenchSpec, device: str, rank: int, barrier: Any, results: Any) -> None:
    def sync(err: str | None) -> None:
        if err:
            barrier.abort()  # wake the others now instead of letting them wait forever
            raise PeerFailed([err])
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            raise PeerFailed([]) from None

    def progress(done: int, total: int) -> None:
        results.put(("progress", rank, (done, total)))

    results.put(("result", rank, safe_measure(spec, device, rank, sync, progress)))


def run_parallel(
    spec: BenchSpec, devices: list[str], on_progress: ProgressCb | None = None
) -> list[DeviceResult | list[str]]:
    """Spawn one worker per device; return each rank's result or failure messages, in order."""
    ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier = ctx.Barrier(len(devices))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(spec, d, r, barrier, results), daemon=True)
        for r, d in enumerate(devices)
    ]
    out: dict[int, DeviceResult | list[str]] = {}
    try:
        for p in procs:
            p.start()
        while len(out) < len(procs):
            try:
                kind, rank, payload = results.get(timeout=1.0)
            except queue_mod.Empty:
                _check_dead(procs, devices, out, barrier, results, on_progress)
                continue
            _handle(kind, rank, payload, out, on_progress)
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    return [out[r] for r in range(len(procs))]


def _handle(kind: str, rank: int, payload: Any, out: dict, on_progress: ProgressCb | None) -> None:
    if kind == "progress":
        if on_progress:
            on_progress(rank, *payload)
    else:
        out[rank] = payload


def _check_dead(procs, devices, out, barrier, results, on_progress) -> None:
    """A worker killed outright (OOM killer, driver fault) sends nothing: notice and say so."""
    dead = [r for r, p in enumerate(procs) if r not in out and p.exitcode not in (None, 0)]
    if not dead:
        return
    while True:  # a result may have arrived just before the process died
        try:
            kind, rank, payload = results.get_nowait()
            _handle(kind, rank, payload, out, on_progress)
        except queue_mod.Empty:
            break
    for r in dead:
        if r not in out:
            code = procs[r].exitcode
            out[r] = [f"{devices[r]}: worker process died (exit code {code}) without a result"]
            barrier.abort()
