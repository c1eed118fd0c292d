"""The `mlplatform` command."""

from __future__ import annotations

import importlib
import sys

import click

from mlplatform import __version__
from mlplatform.local.errors import LocalError

# command -> "module:attribute". A command's module loads only when that command runs, so the operator
# (this command's entry point in its image) loads neither the local platform's libraries nor the demo's.
COMMANDS = {
    "demo": "mlplatform.demo:demo",
    "local": "mlplatform.local.cli:local",
    "operator": "mlplatform.operator_cli:operator",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name].split(":")
        try:
            command = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:  # e.g. `local` in the operator image, which has only its libraries
            return unavailable(cmd_name, exc.name or str(exc))
        assert isinstance(command, click.Command)
        return command


def unavailable(name: str, missing: str) -> click.Command:
    def fail() -> None:
        raise click.ClickException(f"'{name}' needs the Python package {missing!r}, not installed here")

    return click.Command(
        name,
        callback=fail,
        help=f"(Not installed here: needs {missing}.)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlplatform")
def cli() -> None:
    """MLPlatform: a Kubernetes-native MLflow platform."""


def _fail(message: str, code: int) -> None:
    click.echo(f"mlplatform: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every failure is one line on stderr (plus a log tail where it helps), no traceback."""
    try:
        cli.main(args=argv, prog_name="mlplatform", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _fail(f"{exc.format_message()}{hint}", 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), 1)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except LocalError as exc:
        if exc.details:
            click.echo(exc.details, err=True)
        _fail(exc.message, 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
