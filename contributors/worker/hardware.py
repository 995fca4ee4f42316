"""What the node has: GPUs (nvidia-smi, else torch if installed), CPUs, RAM, OS."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from typing import Any


def detect_gpus() -> list[dict[str, Any]]:
    gpus = _nvidia_smi()
    if gpus is not None:
        return gpus
    return _torch_gpus()


def _nvidia_smi() -> list[dict[str, Any]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(out)


def parse_nvidia_smi(out: str) -> list[dict[str, Any]]:
    gpus = []
    for line in out.strip().splitlines():
        name, _, mem = line.rpartition(",")
        try:
            gpus.append({"name": name.strip(), "memory_mb": int(float(mem.strip()))})
        except ValueError:
            continue
    return gpus


def _torch_gpus() -> list[dict[str, Any]]:
    # torch is optional (the models extra) and slow to import: only look when it is installed.
    if importlib.util.find_spec("torch") is None:
        return []
    try:
        import torch

        if torch.cuda.is_available():
            return [
                {
                    "name": torch.cuda.get_device_name(i),
                    "memory_mb": torch.cuda.get_device_properties(i).total_memory // 2**20,
                }
                for i in range(torch.cuda.device_count())
            ]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            # Apple silicon: the GPU shares system memory.
            return [{"name": f"Apple {platform.machine()} GPU", "memory_mb": ram_mb()}]
    except Exception:  # a broken CUDA install must not stop registration
        return []
    return []


def ram_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5
            )
            return int(out.stdout.strip()) // 2**20
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return 0


def detect_hardware() -> dict[str, Any]:
    return {
        "gpus": detect_gpus(),
        "cpu_count": os.cpu_count() or 1,
        "ram_mb": ram_mb(),
        "os": platform.platform(),
    }
