"""Multi-process data-parallel training under ``torchrun`` (DistributedDataParallel).

:func:`from_env` reads torchrun's ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``.
With one process (no torchrun, or ``--nproc_per_node=1``) it returns a context
that does nothing, so single-process training is untouched. With more, it picks
``cuda:LOCAL_RANK`` (backend nccl) or the CPU (backend gloo), initialises the
process group (``env://`` rendezvous set up by torchrun) and :meth:`DistContext.close`
destroys it again. Set ``EDIFICE_DDP_DEBUG`` to a folder to have every rank write
``rank<R>.json`` there (hashes of its weights, the chips it trained on).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .devices import resolve_device
from .errors import InputError

DEBUG_ENV = "EDIFICE_DDP_DEBUG"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InputError(name, f"environment variable {name}='{raw}' is not an integer.",
                         "launch with torchrun, or unset it.") from exc


def is_main_process() -> bool:
    """True unless torchrun started this process with a RANK other than 0."""
    return _env_int("RANK", 0) == 0


@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: object = None  # torch.device when distributed, else None (the caller resolves it)
    backend: str | None = None
    owns_group: bool = False
    debug: dict = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, batch_size: int) -> str:
        return (f", {self.world_size} processes (DistributedDataParallel, {self.backend}): batch size "
                f"{batch_size} per process, effective batch size {batch_size * self.world_size}")

    def sum_all(self, values):
        """Sum a list of numbers over all ranks; every rank gets rank 0's copy of the
        result (bitwise identical, so all ranks take the same decisions)."""
        import torch
        import torch.distributed as dist

        dev = self.device if self.backend == "nccl" else "cpu"
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=dev)
        dist.all_reduce(t)
        dist.broadcast(t, 0)
        return t.cpu().tolist()

    def average_buffers(self, module) -> None:
        """Average floating buffers (BatchNorm running statistics) over the ranks so
        every rank holds the same model (DDP keeps parameters in step, not these)."""
        import torch.distributed as dist

        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b.div_(self.world_size)
                dist.broadcast(b, 0)

    def close(self, wait_for_all: bool = False) -> None:
        """Destroy the process group this context created. ``wait_for_all`` (after
        success) first waits at a barrier so that no rank tears the group down while
        another still uses it. Never wait after an error (a rank could wait for one
        that died). The CLI then ends worker processes with ``os._exit``."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                if wait_for_all:
                    dist.barrier()
                dist.destroy_process_group()
            self.owns_group = False

    def write_debug(self, **info) -> None:
        folder = os.environ.get(DEBUG_ENV)
        if not folder:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        data = {"rank": self.rank, "world_size": self.world_size, **self.debug, **info}
        (Path(folder) / f"rank{self.rank}.json").write_text(json.dumps(data, default=str))


def state_hash(state: dict) -> str:
    """SHA-256 of a state dict's names and tensor bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def from_env(device_spec: str = "auto") -> DistContext:
    """A :class:`DistContext` for this process: a no-op one without torchrun
    (``WORLD_SIZE`` unset or 1), else an initialised process group."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device_spec)
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if local >= n:
            raise InputError("DEVICE", f"LOCAL_RANK {local} but this node has {n} CUDA device(s).",
                             f"start at most {n} processes per node (torchrun --nproc_per_node).")
        dev = torch.device(f"cuda:{local}")
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise InputError("DEVICE", f"distributed training runs on CUDA or the CPU, not '{dev}'.",
                         "use --device auto, cuda or cpu.")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend)
    return DistContext(world, rank, local, dev, backend, owns)


__all__ = ["DistContext", "from_env", "is_main_process", "state_hash", "DEBUG_ENV"]
