"""What ran the calibration: the ``device`` block of a profile.

A profile is only meaningful next to the machine that produced it, so the
runner records the device name, its kind (``gpu`` or ``cpu``), SM count, clocks
(read-only, through ``nvidia-smi`` when present), L2 size, driver, CUDA, torch
and Triton versions. Nothing here changes the device's settings.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _nvidia_smi(index: int) -> dict[str, Any]:  # pragma: no cover - needs a GPU
    """Clocks and driver through a read-only nvidia-smi query (empty if absent)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    fields = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit"
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits", f"--id={index}"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    parts = [p.strip() for p in out.split(",")]
    if len(parts) != 5:
        return {}
    info: dict[str, Any] = {"driver": parts[0]}
    for key, value in zip(("sm_clock_mhz", "max_sm_clock_mhz", "mem_clock_mhz", "power_limit_w"), parts[1:]):
        try:
            info[key] = float(value)
        except ValueError:
            pass
    return info


def describe_device(device: Any) -> dict[str, Any]:
    """The profile's ``device`` object for a torch device (``cuda`` or ``cpu``)."""
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "triton": _version("triton"),
        "python": platform.python_version(),
    }
    if getattr(device, "type", str(device)) == "cuda":  # pragma: no cover - needs a GPU
        from calibration.clocks import device_index

        index = device_index(device)
        props = torch.cuda.get_device_properties(index)
        info.update(
            name=props.name,
            kind="gpu",
            sms=int(props.multi_processor_count),
            capability=f"{props.major}.{props.minor}",
            memory_bytes=int(props.total_memory),
            l2_bytes=int(getattr(props, "L2_cache_size", 0)) or None,
            cuda=torch.version.cuda,
            device_count=torch.cuda.device_count(),
        )
        info.update(_nvidia_smi(index))
    else:
        info.update(
            name=_cpu_name(),
            kind="cpu",
            cores=os.cpu_count(),
            torch_threads=torch.get_num_threads(),
        )
    return {k: v for k, v in info.items() if v is not None}
