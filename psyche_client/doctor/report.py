"""One check's outcome, and how `psyche-client doctor` prints it.

A check is `ok`, `warn` (joining may work, but something will likely hurt: slow, fragile or
unverifiable) or `fail` (joining will not work as things are). Every warn and fail carries a fix
hint, so the output is a to-do list rather than a diagnosis to decode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """`name`: what was checked (a short word); `detail`: what was found; `hint`: the fix."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    def line(self) -> str:
        """`ok   coordinator  …` (one line, whatever the detail held)."""
        text = " ".join(self.detail.split())
        if self.hint and self.status != "ok":
            text += f" (fix: {' '.join(self.hint.split())})"
        return f"{self.status:<4} {self.name:<11} {text}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, hint: str) -> Check:
    return Check(name, "warn", detail, hint)


def fail(name: str, detail: str, hint: str) -> Check:
    return Check(name, "fail", detail, hint)


def gib(n: float) -> str:
    """Bytes as `1.2 GiB` / `340 MiB`: what a person compares against `free -h`."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.0f} MiB"
    return f"{n / 1024:.0f} KiB"
