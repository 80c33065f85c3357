"""The localnet fixture of tests/solana (one solana-test-validator for this directory's
session, the program preloaded), for the SDK's Solana path and the notebook's localnet run."""

from tests.solana.conftest import program_so, rpc_url

__all__ = ["program_so", "rpc_url"]
