"""The learning-rate schedule: linear warmup, then cosine decay (or a constant lr).

Every client computes a step's learning rate from the step number and the run's settings
(`DeMoConfig`, stored in `psyche.json`) alone, with no state, so a trainer, every applier and
every verifier use the very same value for the same step, also after a resync or a checkpoint
load. The value has to be bit-identical on every machine: the apply moves each weight by ±lr,
and a 1-ulp difference would split the parameters. `math.cos` comes from the platform's libm,
whose last bit may differ between systems, so the cosine here is a fixed Taylor polynomial
evaluated with IEEE-754 additions, multiplications and divisions only (correctly rounded, the
same on every platform Python runs on).

Shape (`step` counts from 0; `warmup` and `total` in steps):

* step < warmup: peak · (step + 1) / warmup;
* then, with total > warmup: cosine from peak down to final · peak at step total − 1 … and
  final · peak after total (the run continuing past its planned length is not an error);
* total = 0: constant peak after the warmup.
"""

from __future__ import annotations

_PI = 3.141592653589793
_TERMS = 24  # (π/2)^48 / 48! < 1e-50: far below a double's precision


def _cos_half_turn(t: float) -> float:
    """cos(π·t) for t in [0, 1], from +, −, ×, ÷ only (deterministic across platforms).

    Reduced to |x| ≤ π/2 by cos(π·t) = −cos(π·(1 − t)), then a Taylor series with a fixed
    number of terms summed in a fixed order."""
    sign = 1.0
    if t > 0.5:
        t, sign = 1.0 - t, -1.0
    x = _PI * t
    x2 = x * x
    term, total = 1.0, 1.0
    for n in range(1, _TERMS):
        term = -term * x2 / ((2 * n - 1) * (2 * n))
        total += term
    return sign * total


def lr_at(step: int, peak: float, warmup: int = 0, total: int = 0, final: float = 0.1) -> float:
    """The learning rate of `step` (see the module docstring)."""
    if step < 0:
        raise ValueError("step must be non-negative")
    if step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return peak
    t = min(1.0, (step - warmup) / (total - warmup))
    return peak * (final + (1.0 - final) * 0.5 * (1.0 + _cos_half_turn(t)))
