#!/usr/bin/env bash
# Starts solana-test-validator on 127.0.0.1 with the coordinator program preloaded, waits until
# its RPC reports healthy, prints one "ready" line, then stays in the foreground until stopped
# (Ctrl-C / SIGTERM stop the validator and remove a temporary ledger).
#
# Settings (environment):
#   PSYCHE_RPC_PORT            RPC port; the websocket is on the next port  (default 8899)
#   PSYCHE_FAUCET_PORT         faucet port                                   (default 9900)
#   PSYCHE_GOSSIP_PORT         gossip port                         (default: from the range)
#   PSYCHE_DYNAMIC_PORT_RANGE  MIN-MAX for the validator's other ports      (default: any free)
#   PSYCHE_LEDGER_DIR          ledger directory, reset at start  (default: a new temp dir)
#   PSYCHE_PROGRAM_SO          program to load      (default: target/deploy/psyche_coordinator.so)
#   PSYCHE_START_TIMEOUT       seconds to wait for health                     (default 180)
#   PSYCHE_VALIDATOR_BIN       solana-test-validator to run (default: the cached 3.1.12 build)
#   PSYCHE_DEMO_RUN            when set, a run with this id is created and resumed once the
#                              validator is healthy (owner keypair: $LEDGER/demo-owner.json,
#                              airdropped; config defaults with min_clients=2)
#   PSYCHE_PYTHON              python with psyche_client installed  (default: .venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PSYCHE_CACHE:-$HOME/.cache/psyche}"
VALIDATOR="${PSYCHE_VALIDATOR_BIN:-$CACHE/validator-3.1.12/bin/solana-test-validator}"
PROGRAM_SO="${PSYCHE_PROGRAM_SO:-$ROOT/target/deploy/psyche_coordinator.so}"
IDL="$ROOT/idl/psyche_coordinator.json"
RPC_PORT="${PSYCHE_RPC_PORT:-8899}"
FAUCET_PORT="${PSYCHE_FAUCET_PORT:-9900}"
START_TIMEOUT="${PSYCHE_START_TIMEOUT:-180}"

die() {
  echo "start-validator: $*" >&2
  exit 1
}

[ -x "$VALIDATOR" ] || die "missing $VALIDATOR: run \`make validator\` (bash localnet/install-validator.sh)"
[ -s "$PROGRAM_SO" ] || die "missing $PROGRAM_SO: run \`make sbf\` (bash scripts/build-sbf.sh)"
command -v curl >/dev/null || die "curl is needed to poll the validator's health"
# The program id is the IDL's metadata.address (the key of localnet/psyche_coordinator-keypair.json).
PROGRAM_ID=$(grep -o '"address": *"[1-9A-HJ-NP-Za-km-z]*"' "$IDL" | grep -o '[1-9A-HJ-NP-Za-km-z]\{32,44\}' || true)
[ -n "$PROGRAM_ID" ] || die "no metadata.address in $IDL"

temp_ledger=0
if [ -n "${PSYCHE_LEDGER_DIR:-}" ]; then
  LEDGER="$PSYCHE_LEDGER_DIR"
  mkdir -p "$LEDGER"
else
  LEDGER="$(mktemp -d "${TMPDIR:-/tmp}/psyche-localnet.XXXXXX")"
  temp_ledger=1
fi

args=(
  --ledger "$LEDGER" --reset --quiet
  --bind-address 127.0.0.1
  --rpc-port "$RPC_PORT"
  --faucet-port "$FAUCET_PORT"
  --bpf-program "$PROGRAM_ID" "$PROGRAM_SO"
)
[ -n "${PSYCHE_GOSSIP_PORT:-}" ] && args+=(--gossip-port "$PSYCHE_GOSSIP_PORT")
[ -n "${PSYCHE_DYNAMIC_PORT_RANGE:-}" ] && args+=(--dynamic-port-range "$PSYCHE_DYNAMIC_PORT_RANGE")

validator_pid=""
cleanup() {
  if [ -n "$validator_pid" ] && kill -0 "$validator_pid" 2>/dev/null; then
    kill -TERM "$validator_pid" 2>/dev/null || true
    wait "$validator_pid" 2>/dev/null || true
  fi
  if [ "$temp_ledger" = 1 ] && [ -z "${PSYCHE_KEEP_LEDGER:-}" ]; then
    rm -rf "$LEDGER"
  fi
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

echo "start-validator: $VALIDATOR ${args[*]}"
# The validator's own log is $LEDGER/validator.log; its console output goes next to it.
"$VALIDATOR" "${args[@]}" >"$LEDGER/console.log" 2>&1 &
validator_pid=$!

url="http://127.0.0.1:$RPC_PORT"
health='{"jsonrpc":"2.0","id":1,"method":"getHealth"}'
deadline=$(($(date +%s) + START_TIMEOUT))
until curl -s -m 2 -X POST -H 'Content-Type: application/json' -d "$health" "$url" 2>/dev/null |
  grep -Eq '"result": *"ok"'; do
  if ! kill -0 "$validator_pid" 2>/dev/null; then
    tail -n 20 "$LEDGER/console.log" "$LEDGER/validator.log" 2>/dev/null >&2 || true
    temp_ledger=0 # keep the logs
    die "solana-test-validator exited during start-up (logs above, ledger $LEDGER)"
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    tail -n 20 "$LEDGER/validator.log" 2>/dev/null >&2 || true
    temp_ledger=0 # keep the logs
    die "solana-test-validator not healthy at $url after ${START_TIMEOUT} s"
  fi
  sleep 0.5
done

if [ -n "${PSYCHE_DEMO_RUN:-}" ]; then
  python="${PSYCHE_PYTHON:-$ROOT/.venv/bin/python}"
  owner="$LEDGER/demo-owner.json"
  "$python" -m psyche_client.cli run new-keypair "$owner" >/dev/null
  created=$("$python" -m psyche_client.cli run create --rpc "$url" --keypair "$owner" \
    --run-id "$PSYCHE_DEMO_RUN" --airdrop 10 --resume --set min_clients=2) ||
    die "creating the demo run failed"
  echo "start-validator: demo run '$PSYCHE_DEMO_RUN' $created owner-keypair=$owner"
fi

echo "start-validator: ready rpc=$url program=$PROGRAM_ID ledger=$LEDGER"
wait "$validator_pid"
