"""Device handling shared by the benchmark harnesses: choice, synchronised timing, peak memory, name.

On CUDA every timed call is bracketed by ``torch.cuda.synchronize`` (kernels run asynchronously,
so a host clock alone would time the launches), warm-up calls are not timed, and peak memory is
``torch.cuda.max_memory_allocated`` since the last :func:`reset_peak_memory`. On the CPU the
peak is not tracked here (the model harness reads the process's ``ru_maxrss`` instead).
"""

from __future__ import annotations

import time

import torch


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> ``torch.device``; a clear error when CUDA is missing.

    Raises:
        SystemExit: the device is not usable on this machine (with what to do instead).
    """
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise SystemExit(
            f"--device {name!r} is not a device name ({error}); use cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                f"--device {name} asked for CUDA, but torch {torch.__version__} sees no CUDA device "
                f"(torch.version.cuda = {torch.version.cuda}); run on a GPU machine with a CUDA build "
                "of torch, or use --device cpu"
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise SystemExit(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise SystemExit(f"--device {name}: the benchmarks run on cpu or cuda, not {device.type}")
    return device


def device_name(device: torch.device) -> str:
    """Human-readable name of the device (``torch.cuda.get_device_name`` on CUDA, the CPU model else)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device | None) -> None:
    """Start a new peak-memory window (CUDA only)."""
    if device is not None and device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device | None) -> float | None:
    """Peak allocated device memory since :func:`reset_peak_memory`, in MB (``None`` on the CPU)."""
    if device is not None and device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def time_call(fn, repeats: int, warmup: int = 2, device: torch.device | None = None) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    With a CUDA ``device`` each call is timed between two synchronisations, so the figure is
    the time the device took, not the time to queue the kernels.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times
