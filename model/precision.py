"""Device and numeric precision: the one rule that inference and training share.

What is tuned must be what ships: hard negatives are ranked, checkpoints picked and thresholds tuned by the same
autocast setting that `process.py` runs with, so one function decides it for everyone. fp16 on CUDA (training adds a
gradient scaler), bf16 on a CPU whose oneDNN supports it (about 2x faster than fp32 on AVX512-BF16 and AMX CPUs),
else fp32.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(requested: str | None = None) -> torch.device:
    """The requested torch device, or CUDA when available, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_supports_bf16() -> bool:
    """Does oneDNN on this CPU run bf16 natively (AVX512-BF16 or AMX)? Emulated bf16 is slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: fp32, no autocast).

    "auto": fp16 on CUDA, bf16 on a CPU that supports it, else fp32. Raises ValueError for an unknown precision and
    for fp16 on a CPU (no fast fp16 kernels there)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.float16 if precision in ("auto", "fp16") else torch.bfloat16
    if precision == "fp16":
        raise ValueError("fp16 autocast is for CUDA; use bf16 or fp32 on CPU")
    return torch.bfloat16 if (precision == "bf16" or cpu_supports_bf16()) else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """`torch.autocast` context for `dtype` on `device` (a no-op context for None)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
