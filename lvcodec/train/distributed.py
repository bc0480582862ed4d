"""One process or many: the process group from torchrun's environment, and the few collectives training needs.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) the group is initialised with NCCL on CUDA
and gloo on the CPU (multi-node works the same: torchrun's rendezvous provides ``MASTER_ADDR``); alone,
every collective is a no-op. Rank 0 reads and writes files; the others receive what they need from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised: bool = False  # by us (and so to be destroyed by us)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: str) -> "Dist":
        """Join torchrun's process group if there is one; ``device`` is auto, cpu or cuda."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda and not torch.cuda.is_available():
            from ..errors import InputError

            raise InputError("device cuda asked for, but torch sees no CUDA device")
        dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1)) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(dev)
        d = cls(rank, world, local, dev)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
            d.initialised = True
        return d

    def close(self) -> None:
        if self.initialised and dist.is_initialized():
            dist.destroy_process_group()
            self.initialised = False

    # -- collectives (no-ops alone) ---------------------------------------------------------------
    def broadcast_object(self, obj=None):
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def gather_objects(self, obj) -> list | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` over the ranks in place (one flat all-reduce)."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for t in tensors:
            t.copy_(flat[i : i + t.numel()].view_as(t))
            i += t.numel()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
