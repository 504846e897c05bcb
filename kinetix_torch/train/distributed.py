"""Data-parallel training over several processes with :mod:`torch.distributed`.

``torchrun --nproc-per-node N -m kinetix_torch train ...`` starts N ranks of the same run. Each
rank steps its own ``num_envs / N`` environments (``--num-envs`` is the total, as upstream's) with
its own seed, so each draws its own share of the levels; the network starts from rank 0's weights,
every minibatch's gradients are averaged over the ranks (one all-reduce), and each rank's
minibatch is its share of the global one: ``num_envs / (N x num_minibatches)`` trajectories, with
the advantage standardised over the whole global minibatch. An update of N ranks is therefore the
update one process would make on all N shares of the rollout. Rank 0 alone logs, evaluates and
writes checkpoints; a checkpoint holds every rank's env and RNG state (gathered to rank 0), and on
``--resume`` every rank reads its own back, so the run needs the same number of processes. With
``--curriculum`` each rank has its own level source (SFL's ``sfl_scale`` divided by the number of
ranks); on an update that some ranks train on and others only score (robust PLR's new levels), the
others contribute zero, and gradients are averaged over the training ranks. The
ranks talk over NCCL when training on CUDA devices (rank ``LOCAL_RANK`` of a node uses
``cuda:LOCAL_RANK``) and over gloo on the CPU.

One machine, N processes::

    torchrun --standalone --nproc-per-node N -m kinetix_torch train --num-envs 2048 ...

Several machines: run the same command on every node, naming one rendezvous point that all of them
reach (a ``host:port`` on one of the nodes) and a run id; torchrun's c10d rendezvous then numbers
the ranks over all nodes::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint node0:29400 \\
        --rdzv-id pretrain-s -m kinetix_torch train --num-envs 16384 --out /shared/runs/pretrain-s ...

Rank 0 may land on any node, and on ``--resume`` every rank reads the checkpoint: ``--out`` (and the
level paths) must be on a file system every node sees. Machines with several network interfaces
may need ``NCCL_SOCKET_IFNAME`` / ``GLOO_SOCKET_IFNAME`` to pick the one the nodes share.

Ctrl-C, or SIGTERM to any rank, stops every rank after the current update, once rank 0 has written a
checkpoint. SIGTERM to torchrun itself reaches the ranks too, but torchrun kills them 30 s later: an
update and checkpoint that take longer lose the work since the previous checkpoint (which stays
intact).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Shard", "RANK_SEED_STRIDE", "joined_process_group", "resolve_device"]

RANK_SEED_STRIDE = 1 << 20
"""Rank r seeds everything with ``seed + r * RANK_SEED_STRIDE`` (rank 0 with ``seed`` itself)."""


@dataclass(frozen=True)
class Shard:
    """This process's share of a data-parallel run: rank 0 of 1 when run without torchrun."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def num_envs(self, total: int) -> int:
        """This rank's environments out of ``total`` (divisible by the world size: see
        :meth:`~kinetix_torch.train.config.TrainConfig.validate`)."""
        return total // self.world_size

    def seed(self, seed: int) -> int:
        return seed + self.rank * RANK_SEED_STRIDE

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place."""
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def count(self, flag: bool, device) -> int:
        """How many ranks have ``flag`` set (one all-reduce and a host read with several ranks)."""
        if self.world_size == 1:
            return int(flag)
        return int(self.sum(torch.tensor(float(flag), device=device)).item())

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter], ranks: int | None = None) -> None:
        """Replace every gradient by its sum over the ranks divided by ``ranks`` (default: all of
        them, the mean; one all-reduce of all gradients)."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = self.sum(torch.cat([g.reshape(-1) for g in grads])) / (ranks or self.world_size)
        for grad, mean in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(mean.view_as(grad))

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if self.world_size > 1:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def reduce_to_host(self, sums: dict[str, torch.Tensor], means: dict[str, torch.Tensor]) -> dict[str, float]:
        """``sums`` summed and ``means`` averaged over the ranks (scalar tensors), read on the host:
        one all-reduce and one host synchronisation."""
        values = self.sum(torch.stack([*sums.values(), *means.values()]).double())
        values[len(sums):] /= self.world_size
        return dict(zip([*sums, *means], values.tolist()))

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            dist.barrier()

    def gather(self, item) -> list | None:
        """Every rank's ``item`` (a picklable object), in rank order, on rank 0; ``None`` elsewhere."""
        if self.world_size == 1:
            return [item]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(item, gathered, dst=0)
        return gathered


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``--device`` for the rank ``local_rank`` of a node: ``"auto"`` is CUDA when available, else the
    CPU; ``"auto"`` and ``"cuda"`` without an index mean ``cuda:<local_rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: not a torch device: {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


@contextmanager
def joined_process_group(device_name: str) -> Iterator[tuple[Shard, torch.device]]:
    """This process's shard and device. Started by torchrun with ``WORLD_SIZE`` > 1, it joins the
    process group (NCCL for CUDA devices, gloo for the CPU) and leaves it on exit; a group the
    caller already started is used as it is."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        yield Shard(dist.get_rank(), dist.get_world_size()), resolve_device(device_name, local_rank)
        return
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size == 1:
        yield Shard(), device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Shard(dist.get_rank(), world_size), device
    finally:
        dist.destroy_process_group()
