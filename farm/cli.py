"""The `farm` command line."""

import typer

app = typer.Typer(help="Render farm for generative video ad campaigns.")
