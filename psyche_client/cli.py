"""The `psyche-client` command line.

Every user mistake (bad address, missing key file, missing data, unknown run) ends in one line on
stderr and a non-zero exit, never a traceback: commands raise `UserError` (or one of the known
input-error types) and `main` turns them into that line.
"""

from __future__ import annotations

import sys

import typer

from psyche_client.errors import UserError, user_error_types

app = typer.Typer(
    name="psyche-client",
    help="Train neural networks together: join a run, serve a coordinator or data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register_commands() -> None:
    """Attach the command groups (imported lazily so `--help` stays fast)."""
    from psyche_client.commands import register

    register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, mapping user errors to one line and exit code 2."""
    register_commands()
    try:
        app(args=argv, standalone_mode=False)
    except user_error_types() as e:
        print(f"psyche-client: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("psyche-client: interrupted", file=sys.stderr)
        return 130
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except Exception as e:  # click usage errors carry their own exit code and message
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 130
        raise
    return 0


__all__ = ["UserError", "app", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
