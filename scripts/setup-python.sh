#!/usr/bin/env bash
# Creates .venv and installs the Python dependencies listed in pyproject.toml, then builds the
# Rust bindings (psyche_client._core) into it with maturin. Idempotent: the pip step is skipped
# while pyproject.toml is unchanged; maturin rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup-python] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.deps-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup-python] installing dependencies (pip cache: ~/.cache/pip)"
  .venv/bin/python -m pip install -q --upgrade pip
  deps=$(.venv/bin/python - <<'PYEOF'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))
PYEOF
)
  mapfile -t deplist <<<"$deps"
  .venv/bin/python -m pip install -q "${deplist[@]}"
  echo "$want" >"$stamp"
fi
echo "[setup-python] building psyche_client._core (maturin develop --release)"
.venv/bin/maturin develop --release -q 2>&1 | grep -v "^📦\|^🔗\|^🐍\|^💻" || true
.venv/bin/python -c "import psyche_client._core as c; print('[setup-python] _core', c.__name__)"
