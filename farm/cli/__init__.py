"""The `farm` command line (typer + rich); each module registers its commands on `app`."""

from farm.cli import campaign, render, serve, tools  # noqa: F401  (registers the commands)
from farm.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
