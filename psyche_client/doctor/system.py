"""This machine against the run's model: memory for training, disk for checkpoints and data.

The client trains on the CPU (the model is loaded where `load_checkpoint` puts it: CPU memory),
so memory means available RAM (`MemAvailable`, which counts reclaimable page cache; a bare
`free` figure would understate it). torch is not imported: whether it is installed and which
version is read from its package metadata, so the check costs milliseconds.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

from psyche_client.doctor.model import ModelFacts, checkpoint_bytes, training_bytes
from psyche_client.doctor.report import Check, fail, gib, ok, warn

HEADROOM = 0.8
"""Warn when the estimate takes more than this share of what is available: the estimate
leaves out the interpreter, libp2p, data buffers and torch's allocator slack."""
DISK_SPARE_BYTES = 1 << 30


def available_memory() -> int | None:
    """Bytes of RAM available to a new process (Linux `MemAvailable`; else physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def device_check(facts: ModelFacts | None, batch: int) -> Check:
    """torch installed, and the training estimate against available memory."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return fail("device", "torch is not installed", "pip install torch (see README)")
    threads = os.cpu_count() or 1
    avail = available_memory()
    where = f"CPU ({threads} cores, torch {torch_version})"
    if avail is None:
        return warn("device", f"{where}: cannot read available memory", "check `free -h`")
    if facts is None or facts.config is None:
        return ok("device", f"{where}, {gib(avail)} available (model size unknown)")
    need = training_bytes(facts, batch)
    detail = (
        f"{where}: training needs ~{gib(need)} ({batch} samples a pass), {gib(avail)} available"
    )
    if need > avail:
        return fail("device", detail, "use a machine with more memory, or stop other processes")
    if need > HEADROOM * avail:
        return warn("device", detail, "little headroom: close other processes or add memory")
    return ok("device", detail)


def existing_parent(path: Path) -> Path:
    """`path`, or the nearest parent that exists (a checkpoint dir is created on first save)."""
    p = path.expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def disk_check(checkpoint_dir: Path, data_dirs: list[Path], facts: ModelFacts | None) -> Check:
    """Free space where checkpoints go (two at once: the new one is written beside the old)."""
    where = existing_parent(checkpoint_dir)
    try:
        free = shutil.disk_usage(where).free
    except OSError as e:
        return fail("disk", f"{where}: {e.strerror or e}", "pick another --checkpoint-dir")
    if not os.access(where, os.W_OK):
        return fail(
            "disk", f"{where} is not writable", "pick a writable --checkpoint-dir (or fix perms)"
        )
    ckpt = checkpoint_bytes(facts) if facts is not None else None
    parts = [f"{gib(free)} free at {where}"]
    seen = {where.stat().st_dev}
    for d in data_dirs:  # data on another filesystem: its space too (prepare writes there)
        try:
            if d.stat().st_dev not in seen:
                seen.add(d.stat().st_dev)
                parts.append(f"{gib(shutil.disk_usage(d).free)} free at {d}")
        except OSError:
            continue
    detail = ", ".join(parts)
    if ckpt is None:
        return ok("disk", f"{detail} (checkpoint size unknown)")
    detail += f"; a checkpoint takes ~{gib(ckpt)}"
    if free < 2 * ckpt:
        return fail("disk", detail, "free space or point --checkpoint-dir at a larger disk")
    if free < 2 * ckpt + DISK_SPARE_BYTES:
        return warn("disk", detail, "under 1 GiB would be left: free some space")
    return ok("disk", detail)
