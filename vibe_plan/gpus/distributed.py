"""Many nodes under torchrun: one rank per GPU; rank 0 sends the plan and gathers every result.

NCCL on GPUs, gloo on CPUs (override with VIBE_DIST_BACKEND). Only Python objects travel, at the
sync points between phases, never while a device is being timed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from vibe_plan.errors import VibeError
from vibe_plan.gpus.worker import PeerFailed


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    local_world: int


def dist_env() -> DistEnv | None:
    """The torchrun environment when this process is one of several ranks, else None."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world <= 1:
        return None
    try:
        return DistEnv(
            rank=int(os.environ["RANK"]),
            world=world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        )
    except (KeyError, ValueError) as e:
        raise VibeError(
            f"WORLD_SIZE={world} but {e} is missing or bad; launch with torchrun"
        ) from None


class DistGroup:
    """The process group, and the three collectives profiling needs."""

    def __init__(self, env: DistEnv, device_kind: str) -> None:
        import torch
        import torch.distributed as dist

        self.env = env
        self.dist = dist
        backend = os.environ.get("VIBE_DIST_BACKEND") or (
            "nccl" if device_kind == "cuda" else "gloo"
        )
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=30)}
        if backend == "nccl":
            # Object collectives over NCCL go through the current device: set it first.
            torch.cuda.set_device(env.local_rank)
            kwargs["device_id"] = torch.device("cuda", env.local_rank)
        try:
            dist.init_process_group(**kwargs)
        except Exception as e:
            raise VibeError(
                f"rank {env.rank}: cannot join the process group ({backend}): {e}; check "
                "MASTER_ADDR/MASTER_PORT and that every node runs the same command"
            ) from None

    @property
    def rank(self) -> int:
        return self.env.rank

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's object, in global rank order, on every rank."""
        out: list[Any] = [None] * self.env.world
        self.dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's object on every rank."""
        box = [obj if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync(self, err: str | None) -> None:
        """Phase barrier that also tells every rank whether any rank failed."""
        errors = [e for e in self.gather(err) if e]
        if errors:
            raise PeerFailed(errors)

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()
