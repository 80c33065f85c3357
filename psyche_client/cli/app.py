"""The root `psyche-client` app and its entry point.

Every user mistake (bad address, missing key file, missing data, unknown run) ends in one line on
stderr and a non-zero exit, never a traceback: commands raise a `UserError` (every input-error
type of the package is one) and `main` turns it into that line. Usage errors (typer's bundled
click) and OS errors about a path the user named (not a directory, permission denied) are shown
the same way.
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
    from psyche_client.cli import dashboard, data, demo, doctor, join, model, run, serve

    app.command()(serve.serve)
    app.command()(join.join)
    app.command()(doctor.doctor)
    app.add_typer(model.model_app, name="model")
    app.add_typer(data.data_app, name="data")
    app.command()(demo.demo)
    app.add_typer(run.run_app, name="run")
    app.command()(dashboard.dashboard)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, mapping user errors to one line and exit code 2."""
    register_commands()
    try:
        app(args=argv, prog_name="psyche-client", standalone_mode=False)
    except UserError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("psyche-client: interrupted", file=sys.stderr)
        return 130
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except typer.Abort:
        print("psyche-client: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as e:  # typer's bundled click: usage errors and file errors
        return _usage_error(e)
    except OSError as e:
        if e.filename is None:  # not about a path the user gave: a real failure, keep its trace
            raise
        return _fail(f"{e.strerror or e}: {e.filename}")
    return 0


def _fail(message: str, code: int = 2) -> int:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"psyche-client: error: {line}", file=sys.stderr)
    return code


def _usage_error(e: typer.TyperException) -> int:
    """One line for a usage error (click prints usage, a hint and the error on three)."""
    ctx = getattr(e, "ctx", None)
    if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
        print(ctx.get_help())  # a bare group or command: its help is the answer
        return 2
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return _fail(f"{e.format_message()}{hint}", int(getattr(e, "exit_code", 2) or 2))


__all__ = ["UserError", "app", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
