"""GPUs, for a client run under torchrun (its ranks train on their own GPU; a plain `join`
trains on the CPU). Read from `nvidia-smi`, not torch: importing torch to ask would cost
seconds, and doctor stays torch-free. No `nvidia-smi` (no NVIDIA driver): no GPU line at all.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from psyche_client.doctor.report import Check, gib, ok, warn

QUERY = "--query-gpu=name,memory.total,memory.free"


@dataclass(frozen=True)
class Gpu:
    name: str
    total_bytes: int
    free_bytes: int


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """`nvidia-smi QUERY --format=csv,noheader,nounits` lines: `NAME, TOTAL_MIB, FREE_MIB`."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3:
            continue
        try:
            total, free = int(float(parts[1])) << 20, int(float(parts[2])) << 20
        except ValueError:
            continue
        gpus.append(Gpu(parts[0], total, free))
    return gpus


def list_gpus(timeout_s: float = 5.0) -> list[Gpu] | None:
    """The NVIDIA GPUs, or None when there is no driver to ask."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, QUERY, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def gpu_check(gpus: list[Gpu], need_bytes: int | None) -> Check:
    """Per-rank fit under torchrun: `dp` holds the whole model on every GPU; `fsdp` shards it."""
    if not gpus:
        return warn("gpu", "nvidia-smi is present but lists no GPU", "check the NVIDIA driver")
    names = ", ".join(sorted({g.name for g in gpus}))
    free = min(g.free_bytes for g in gpus)
    detail = f"{len(gpus)} × {names}, {gib(free)} free on the fullest"
    if need_bytes is None:
        return ok("gpu", f"{detail} (torchrun ranks train there; model size unknown)")
    detail += f"; a rank holding the whole model needs ~{gib(need_bytes)}"
    if need_bytes <= free:
        return ok("gpu", detail)
    if need_bytes <= free * len(gpus):
        return ok("gpu", f"{detail}: too big for one GPU, `--parallel auto` shards it (FSDP)")
    return warn(
        "gpu",
        f"{detail}: more than all {len(gpus)} GPUs hold",
        "train on the CPU (plain join) or use more / larger GPUs",
    )
