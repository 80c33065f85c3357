"""The root `psyche-client` app and its entry point.

Every user mistake (bad address, missing key file, missing data, unknown run) ends in one line on
stderr and a non-zero exit, never a traceback: commands raise a `UserError` (every input-error
type of the package is one) and `main` turns it into that line.
"""

from __future__ import annotations

import sys

import typer

from psyche_client.errors import UserError

app = typer.Typer(
    name="psyche-client",
    help="Train neural networks together: join a run, serve a coordinator or data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register_commands() -> None:
    """Attach the command groups (each imports its heavy dependencies only when it runs)."""
    from psyche_client.cli import data, demo, join, model, run, serve

    app.command()(serve.serve)
    app.command()(join.join)
    app.add_typer(model.model_app, name="model")
    app.add_typer(data.data_app, name="data")
    app.command()(demo.demo)
    app.add_typer(run.run_app, name="run")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, mapping user errors to one line and exit code 2."""
    register_commands()
    try:
        app(args=argv, standalone_mode=False)
    except UserError as e:
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
