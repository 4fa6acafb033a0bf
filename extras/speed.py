"""The training step made fast where the hardware allows: TF32 matmuls on CUDA, torch.compile (tried on one batch;
plain PyTorch where it fails), and under torchrun DistributedDataParallel, which averages the gradients."""
import torch

from extras.precision import autocast


def wrap(model, cfg, world=1):
    """model as the training loop runs it: compiled if cfg.compile, wrapped for torchrun if world > 1. Its weights
    stay model's own: save and load model itself."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 matmuls on CUDA
    fast = model
    if cfg.compile:
        dummy = torch.zeros((cfg.batch_size, cfg.block_size), dtype=torch.long, device=cfg.device)
        fast = try_compile(model, (dummy, dummy), cfg.device, cfg.dtype)
    if world > 1:  # each process computes its share of the batch; backward averages the gradients
        fast = torch.nn.parallel.DistributedDataParallel(fast)
    return fast


def try_compile(model, batch, device, dtype='auto'):
    """torch.compile(model), tried on one batch: where compiling fails, plain PyTorch runs instead."""
    try:
        fast = torch.compile(model)
        with autocast(device, dtype):
            fast(*batch)
        return fast
    except Exception as e:
        print(f"torch.compile failed ({type(e).__name__}); training without it (--compile=False skips trying)")
        return model
