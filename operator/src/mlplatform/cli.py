"""The `mlplatform` command."""

from __future__ import annotations

import sys

import click

from mlplatform import __version__
from mlplatform.demo import demo
from mlplatform.local.cli import local
from mlplatform.local.errors import LocalError
from mlplatform.operator_cli import operator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlplatform")
def cli() -> None:
    """MLPlatform: a Kubernetes-native MLflow platform."""


cli.add_command(local)
cli.add_command(operator)
cli.add_command(demo)


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
