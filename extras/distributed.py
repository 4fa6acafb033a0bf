"""torchrun: `torchrun --nproc_per_node=N gpt.py` runs N processes, each on its share of every batch, their
gradients averaged (NCCL on GPUs, gloo on CPUs); only rank 0 prints and writes."""
import gc
import os
import sys

import torch


def start(cfg):
    """Under `torchrun --nproc_per_node=N gpt.py`, join the N processes (NCCL on GPUs, gloo on CPUs), one GPU each;
    the others print nothing. Returns (this process's rank, N): (0, 1) when run as `python gpt.py`."""
    if 'RANK' not in os.environ:
        return 0, 1
    if cfg.device == 'cuda':
        torch.cuda.set_device(int(os.environ['LOCAL_RANK']))  # 'cuda' is now this process's GPU
    torch.distributed.init_process_group('nccl' if cfg.device == 'cuda' else 'gloo')
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if rank:
        sys.stdout = open(os.devnull, 'w')
    print(f"torchrun: {world} processes, each on 1/{world} of every batch")
    return rank, world


def rank_and_world():
    """(this process's rank, the number of processes): (0, 1) outside torchrun."""
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def share(batch, rank, world):
    """This process's share of a batch drawn world times as large (all of it outside torchrun)."""
    return [t.chunk(world)[rank] for t in batch]


def stop():
    """Under torchrun, leave the process group together. DistributedDataParallel's last gloo work is freed first:
    a process that exits while it is still held can abort ('terminate called without an active exception')."""
    if torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
