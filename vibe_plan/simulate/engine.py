"""The event loop and the scheduler: continuous batching with chunked prefill.

Events are request arrivals and iteration ends; between them nothing changes, so each server
jumps from one to the next (to the next arrival when it is idle). An iteration is formed, as
vLLM's and SGLang's chunked-prefill schedulers do, within a token budget:

1. one decode token for every running request whose prompt is done, in admission order;
2. the remaining budget goes to prompt chunks: first requests already admitted whose prompt is
   not finished, then waiting requests in arrival order (FIFO), each admitted only if it gets at
   least one token and fewer than `max_running` requests run;
3. the iteration's last prompt chunk of a request also yields its first output token (TTFT);
   every decode token yields one more; a request leaves when it has all its output tokens.

Servers of several rates advance in lock step, so that their iterations are priced together;
a pure-decode batch that stays unchanged until a request finishes or arrives is priced as one
stretch of iterations (the same result as one iteration at a time, only faster).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vibe_plan.simulate.model import LoadSampler, StepModel
from vibe_plan.simulate.workload import Workload

MAX_STRETCH = 256  # decode iterations priced together at most


@dataclass
class Batch:
    decode: np.ndarray  # request ids that generate one token
    prefill: np.ndarray  # request ids that get a prompt chunk
    chunk: np.ndarray  # prompt tokens of each
    admitted: int  # waiting requests admitted by this iteration (the head of the queue)
    ctx_keys: float  # keys attended, summed over the scheduled tokens
    repeat: int  # iterations this batch repeats unchanged (pure decode) unless a request arrives

    @property
    def n_prefill(self) -> int:
        return int(self.chunk.sum())

    @property
    def n_decode(self) -> int:
        return len(self.decode)


class Server:
    """One serving engine replaying one workload (all requests, to completion)."""

    def __init__(self, w: Workload, batch_tokens: int, max_running: int, fast_forward: bool):
        self.arrival = w.arrival_s
        self.inp = w.input_len
        self.out = w.output_len
        self.N = w.num_requests
        self.batch_tokens = batch_tokens
        self.max_running = max_running
        self.fast_forward = fast_forward
        self.prefilled = np.zeros(self.N, dtype=np.int64)
        self.generated = np.zeros(self.N, dtype=np.int64)
        self.first_s = np.full(self.N, np.nan)
        self.finish_s = np.full(self.N, np.nan)
        self.running = np.zeros(0, dtype=np.int64)  # admitted, not finished; admission order
        self.admit = 0  # requests [0, admit) are admitted
        self.done = 0
        self.now = 0.0
        # per-iteration sums
        self.iterations = 0
        self.busy_us = 0.0
        self.expert_us = 0.0
        self.imbalance_sum = 0.0

    def form(self) -> Batch | None:
        """The next iteration's batch at `now` (after idling to the next arrival), or None when
        every request has finished."""
        if self.done == self.N:
            return None
        if len(self.running) == 0 and self.arrival[self.admit] > self.now:
            self.now = float(self.arrival[self.admit])
        budget = self.batch_tokens
        run = self.running
        left = self.inp[run] - self.prefilled[run]
        decode = run[left == 0][:budget]
        budget -= len(decode)
        arrived = int(np.searchsorted(self.arrival, self.now, side="right"))
        free = self.max_running - len(run)
        new = np.arange(self.admit, max(self.admit, min(arrived, self.admit + free)))
        cont = run[left > 0]
        cand = np.concatenate([cont, new])
        need = self.inp[cand] - self.prefilled[cand]
        before = np.cumsum(need) - need
        chunk = np.clip(budget - before, 0, need)
        take = chunk > 0
        prefill, chunk = cand[take], chunk[take]
        admitted = int(take[len(cont) :].sum())
        # Keys attended: a decode token sees the prompt and the tokens generated so far; a chunk
        # of m tokens after o done sees o + 1, ..., o + m.
        offset = self.prefilled[prefill].astype(float)
        ctx = float((self.inp[decode] + self.generated[decode]).sum())
        ctx += float((chunk * offset + chunk * (chunk + 1) / 2.0).sum())
        repeat = 1
        if self.fast_forward and len(prefill) == 0 and len(decode) == len(run):
            # Unchanged until a request finishes (or one is admitted: see `complete`).
            repeat = int(min((self.out[decode] - self.generated[decode]).min(), MAX_STRETCH))
        return Batch(decode, prefill, chunk, admitted, ctx, repeat)

    def can_admit(self, b: Batch) -> bool:
        """Whether a request arriving during a decode stretch would join the next iteration."""
        return (
            self.admit < self.N
            and len(self.running) < self.max_running
            and self.batch_tokens > b.n_decode
        )

    def complete(self, b: Batch, times_us: np.ndarray) -> tuple[int, int]:
        """Run the batch for up to len(times_us) iterations of these durations (a pure-decode
        batch repeats until the next iteration would admit an arrival); emit the tokens.
        Returns (iterations run, requests finished)."""
        ends = np.cumsum(np.concatenate([[self.now], np.asarray(times_us) * 1e-6]))
        k = len(times_us)
        if k > 1 and self.can_admit(b):
            # Iteration i starts at ends[i]; the engine admits requests arrived by then.
            late = np.flatnonzero(ends[1:k] >= self.arrival[self.admit])
            if len(late):
                k = int(late[0]) + 1
        self.now = float(ends[k])
        self.generated[b.decode] += k
        self.prefilled[b.prefill] += b.chunk
        ready = b.prefill[self.prefilled[b.prefill] == self.inp[b.prefill]]
        self.first_s[ready] = self.now
        self.generated[ready] = 1
        if b.admitted:
            self.running = np.concatenate(
                [self.running, np.arange(self.admit, self.admit + b.admitted)]
            )
            self.admit += b.admitted
        run = self.running
        gone = self.generated[run] >= self.out[run]
        n_gone = int(gone.sum())
        if n_gone:
            self.finish_s[run[gone]] = self.now
            self.running = run[~gone]
            self.done += n_gone
        return k, n_gone


class DrawStream:
    """Two uniforms per iteration, indexed by the iteration's number, from one seeded stream
    drawn in fixed blocks: iteration t meets the same draws however the loop groups iterations."""

    BLOCK = 4096

    def __init__(self, seed: int, index: int):
        self.rng = np.random.default_rng([seed, index, 0xD1CE])
        self.u = np.zeros((0, 2))

    def take(self, start: int, count: int) -> np.ndarray:
        while len(self.u) < start + count:
            self.u = np.concatenate([self.u, self.rng.random((self.BLOCK, 2))])
        return self.u[start : start + count]


@dataclass
class ServerResult:
    """One placement at one rate: per-request times and per-iteration sums."""

    arrival_s: np.ndarray
    output_len: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray  # NaN for requests with one output token
    finish_s: np.ndarray
    iterations: int
    busy_s: float
    expert_share: float  # of the busy time, what the experts add
    imbalance: float  # mean over iterations of the per-layer expert max/mean


def _result(s: Server) -> ServerResult:
    ttft = s.first_s - s.arrival
    more = s.out > 1
    tpot = np.full(s.N, np.nan)
    tpot[more] = (s.finish_s[more] - s.first_s[more]) / (s.out[more] - 1)
    return ServerResult(
        arrival_s=s.arrival,
        output_len=s.out,
        ttft_s=ttft,
        tpot_s=tpot,
        finish_s=s.finish_s,
        iterations=s.iterations,
        busy_s=s.busy_us * 1e-6,
        expert_share=s.expert_us / s.busy_us if s.busy_us > 0 else 0.0,
        imbalance=s.imbalance_sum / max(s.iterations, 1),
    )


def run_placement(
    model: StepModel,
    sampler: LoadSampler,
    workloads: list[Workload],
    batch_tokens: int,
    max_running: int,
    seed: int,
    on_done: Callable[[int], None] | None = None,
    fast_forward: bool = True,
) -> list[ServerResult]:
    """Serve every workload (one per rate) to completion with one placement's step model.

    Iteration t of workload i draws its expert load with the t-th uniforms of a stream seeded by
    (seed, i) alone, so every placement meets the same draws (common random numbers).
    `fast_forward` prices a stretch of identical decode iterations at once; the result is the
    same as one iteration at a time."""
    servers = [Server(w, batch_tokens, max_running, fast_forward) for w in workloads]
    streams = [DrawStream(seed, i) for i in range(len(workloads))]
    live = list(range(len(servers)))
    while live:
        formed = [(i, servers[i].form()) for i in live]
        batches = [(i, b) for i, b in formed if b is not None]
        live = [i for i, _ in batches]
        if not batches:
            break
        keys = []
        for i, b in batches:
            u = streams[i].take(servers[i].iterations, b.repeat)
            keys.append([sampler.key(x, b.n_prefill, b.n_decode) for x in u])
        priced = model.expert_times([k for ks in keys for k in ks])
        finished, at = 0, 0
        for (i, b), ks in zip(batches, keys, strict=True):
            part = priced[at : at + len(ks)]
            at += len(ks)
            expert = np.stack([p[0] for p in part])
            ctx = b.ctx_keys + b.n_decode * np.arange(len(ks), dtype=float)
            times, expert_part = model.steps(expert, b.n_prefill + b.n_decode, ctx)
            s = servers[i]
            ran, gone = s.complete(b, times)
            s.iterations += ran
            s.busy_us += float(times[:ran].sum())
            s.expert_us += float(expert_part[:ran].sum())
            s.imbalance_sum += float(sum(p[1] for p in part[:ran]))
            finished += gone
        if on_done is not None and finished:
            on_done(finished)
    return [_result(s) for s in servers]
