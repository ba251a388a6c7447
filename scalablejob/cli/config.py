"""`scalablejob config check`: validate service JSON files and show the JSON path of every error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from scalablejob.model.config_check import all_config_errors
from scalablejob.model.errors import ConfigError


@click.group()
def config() -> None:
    """Work with service config files."""


def check_file(path: Path) -> tuple[bool, list[str]]:
    """Whether one file is valid, and the lines that say so: what it describes, or each error with its path."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return False, [f"{path}: cannot read it: {exc}"]
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        return False, [f"{path}: 1 error", f"  $: expected valid JSON, found an error at {where}: {exc.msg}"]
    parsed, errors = all_config_errors(data)
    if parsed is not None:
        scale = f"{parsed.autoscaler.min} to {parsed.autoscaler.max} workers of {parsed.metadata.gpu} GPU(s)"
        return True, [f"{path}: ok (service {parsed.name}, {parsed.metadata.type}, {scale})"]
    return False, [f"{path}: {len(errors)} error(s)", *(f"  {_line(error)}" for error in errors)]


def _line(error: ConfigError) -> str:
    return f"{error.path}: {error.message}"


@config.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def check(files: tuple[Path, ...]) -> None:
    """Validate each service JSON FILE; list every error with its JSON path. Exits 1 if any file has one."""
    all_valid = True
    for path in files:
        valid, lines = check_file(path)
        all_valid = all_valid and valid
        click.echo("\n".join(lines))
    sys.exit(0 if all_valid else 1)
