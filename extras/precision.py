"""Mixed precision: bfloat16 where the hardware has it natively, float16 with its loss scaler on older GPUs."""
import contextlib

import torch


def amp_dtype(device, dtype='auto'):
    """The precision of autocast: as given, or 'auto': bfloat16 where the hardware has it natively (CUDA compute
    capability 8.0 and up, CPUs with AVX512-BF16), float16 on older GPUs (Colab's T4, V100, P100), else float32."""
    if dtype != 'auto':
        return dtype
    if device == 'cuda':
        return 'bfloat16' if torch.cuda.get_device_capability()[0] >= 8 else 'float16'
    native_bf16 = getattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)()
    return 'bfloat16' if device == 'cpu' and native_bf16 else 'float32'


def autocast(device, dtype='auto'):
    """Mixed precision in amp_dtype(device, dtype): matmuls in 16 bits where that is chosen, else plain float32."""
    dtype = amp_dtype(device, dtype)
    return contextlib.nullcontext() if dtype == 'float32' else torch.autocast(device, dtype=getattr(torch, dtype))


def grad_scaler(cfg):
    """float16's loss scaler (its small range needs the loss scaled up so that small gradients survive); in any
    other precision one that is off and passes everything through unchanged."""
    return torch.amp.GradScaler(cfg.device, enabled=amp_dtype(cfg.device, cfg.dtype) == 'float16')
