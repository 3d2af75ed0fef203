"""The one place that turns a user's device choice into a torch.device.

Never a silent fallback: ``auto`` picks CUDA when PyTorch sees a GPU, else the
CPU, and callers report the device used; an explicit device that does not exist
is an :class:`InputError`.
"""
from __future__ import annotations

from .errors import InputError


def resolve_device(spec: str | None = "auto"):
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` -> ``torch.device``."""
    import torch

    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("DEVICE", "'mps' was asked for but Apple's Metal backend is not available here.",
                             "use 'cpu' or 'auto'.")
        return torch.device("mps")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError("DEVICE", f"'{spec}' was asked for but CUDA is not available here.",
                             "use 'cpu' or 'auto', or install a CUDA build of PyTorch and a driver.")
        idx = 0
        if ":" in s:
            try:
                idx = int(s.split(":", 1)[1])
            except ValueError as exc:
                raise InputError("DEVICE", f"'{spec}' is not a device name.", "write e.g. cuda:0.") from exc
        n = torch.cuda.device_count()
        if not 0 <= idx < n:
            raise InputError("DEVICE", f"'{spec}' does not exist; this machine has {n} CUDA device(s) "
                             f"(cuda:0..cuda:{n - 1}).", "pick an existing device or 'auto'.")
        return torch.device(f"cuda:{idx}")
    raise InputError("DEVICE", f"'{spec}' is not a device name.", "use auto, cpu, cuda, cuda:N or mps.")


def explain_auto_device() -> tuple[str, str]:
    """(device that ``auto`` picks, why) without raising: PyTorch's view of CUDA and MPS."""
    try:
        import torch
    except ImportError as exc:
        return "none", f"PyTorch cannot be imported ({exc}): the model tools cannot run"
    if torch.cuda.is_available():
        return "cuda", f"PyTorch {torch.__version__} sees {torch.cuda.device_count()} CUDA device(s)"
    built = getattr(torch.version, "cuda", None)
    if built is None:
        why = f"PyTorch {torch.__version__} is a CPU-only build (install a CUDA build to use an NVIDIA GPU)"
    else:
        why = f"PyTorch {torch.__version__} is built for CUDA {built} but finds no usable GPU or driver"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        why += "; Apple's Metal (mps) is available: choose 'mps' to use it"
    return "cpu", why
