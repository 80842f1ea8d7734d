"""torch.distributed for the steps that run under ``torchrun``.

``torchrun --nproc_per_node N -m classification.train_classifier ...`` starts N
processes with RANK, WORLD_SIZE and LOCAL_RANK set; ``Dist.from_env()`` joins
them into one process group (nccl on CUDA, gloo on CPU). Without those
variables (plain ``python -m ...``) it is a single process and every method
here is a no-op.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from classification import utils

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env(device: torch.device, timeout_minutes: int = 30) -> Dist:
        """Joins the process group when started by torchrun; ``device`` is the
        device asked for (a CUDA device becomes this process's LOCAL_RANK GPU);
        collective calls wait at most ``timeout_minutes`` for the other ranks."""
        try:
            world = int(os.environ.get('WORLD_SIZE', '1'))
        except ValueError as e:
            raise utils.InputError(f'WORLD_SIZE {os.environ["WORLD_SIZE"]!r} is not a number '
                                   '(torchrun sets it)') from e
        if world <= 1:
            return Dist(device=device)
        try:
            rank, local = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
        except (KeyError, ValueError) as e:
            raise utils.InputError('WORLD_SIZE is set but RANK/LOCAL_RANK are not: start '
                                   'several processes with torchrun') from e
        if not 0 <= rank < world or local < 0:
            raise utils.InputError(f'RANK {rank} / LOCAL_RANK {local} do not fit WORLD_SIZE '
                                   f'{world}: start the processes with torchrun')
        if not os.environ.get('MASTER_ADDR') or not os.environ.get('MASTER_PORT'):
            raise utils.InputError('WORLD_SIZE is set but MASTER_ADDR/MASTER_PORT are not: '
                                   'start several processes with torchrun')
        if device.type == 'cuda':
            if local >= torch.cuda.device_count():
                raise utils.InputError(f'LOCAL_RANK {local} but only '
                                       f'{torch.cuda.device_count()} GPUs: start at most as '
                                       'many processes per machine as it has GPUs')
            device = torch.device('cuda', local)
            torch.cuda.set_device(device)
            backend = 'nccl'
        else:
            backend = 'gloo'        # torchrun gives each process OMP_NUM_THREADS=1
        if not dist.is_initialized():
            dist.init_process_group(backend,
                                    timeout=datetime.timedelta(minutes=timeout_minutes))
        logger.info('process %d of %d (%s, %s)', rank, world, backend, device)
        return Dist(rank, world, local, device)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (JSON-like values)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum_(self, array: np.ndarray) -> np.ndarray:
        """The element-wise sum of ``array`` over ranks (float64 or float32)."""
        if not self.enabled:
            return array
        t = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one."""
        if not self.enabled:
            return flag
        return bool(self.sum_(np.array([float(flag)]))[0] > 0)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (batch-norm statistics) on every rank: DDP syncs them at the
        start of each training step, so after the last step they differ slightly."""
        if self.enabled:
            for buf in model.buffers():
                dist.broadcast(buf.data, src=0)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
