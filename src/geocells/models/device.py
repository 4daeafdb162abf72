"""Where inference runs: ``--device auto|cpu|cuda[:N]`` and bf16 autocast on CUDA.

``auto`` is CUDA when torch sees a GPU, else the CPU. On CUDA the encoders run under
``torch.autocast(bfloat16)`` (their outputs are cast back to float32 before they leave
``Encoder.encode``); on the CPU they run in float32, as before.
"""

from __future__ import annotations

import contextlib
import re

import torch

DEVICES = ("auto", "cpu", "cuda")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(name: str) -> str:
    """``name`` when it is auto, cpu, cuda or cuda:N; ``ValueError`` naming it otherwise."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return name


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if isinstance(name, torch.device):
        name = str(name)
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)"
            )
    return torch.device(name)


def batch_size_for(
    device: torch.device, batch_size: int = 0, cpu: int = 32, cuda: int = 256
) -> int:
    """``batch_size`` when > 0, else the default of the device's kind: a GPU wants large
    batches, a CPU gains nothing from them and holds the memory."""
    if batch_size > 0:
        return batch_size
    return cuda if device.type == "cuda" else cpu


def inference_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on other devices."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
