"""``relay init [PATH]``: write a commented starter config with a fresh secret.

The secret is generated per file and never a fixed default, so a copied example can
not accept forged events; the file is created mode 0600 because it holds that secret.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import click

from relay.signing import generate_secret

PLACEHOLDER = "__OPS_SECRET__"


def render() -> str:
    """The template with a freshly generated secret for the ``ops`` source."""
    template = files("relay.cli").joinpath("starter.yaml").read_text(encoding="utf-8")
    return template.replace(PLACEHOLDER, generate_secret())


def write_private(path: Path, text: str, *, force: bool) -> None:
    """Create ``path`` as 0600 (refusing an existing file unless ``force``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # also when --force reuses a wider file
        handle.write(text)


@click.command()
@click.argument("path", default="relay.yaml", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def init(path: Path, force: bool) -> None:
    """Write a starter config to PATH (default relay.yaml) and print the next steps."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, render(), force=force)
    except FileExistsError:
        click.echo(f"{path} already exists; pass --force to overwrite it.", err=True)
        raise SystemExit(1) from None
    except OSError as exc:
        click.echo(f"{path}: cannot write: {exc.strerror}", err=True)
        raise SystemExit(1) from None
    config_flag = "" if path == Path("relay.yaml") else f" --config {path}"
    outbox = path.parent / ".relay" / "outbox" / "outbox.jsonl"
    click.echo(
        f"Wrote {path}: source `ops` with a fresh secret, file target `outbox`.\n\n"
        "Next:\n"
        f"  relay up{config_flag}\n"
        f"  relay send ops{config_flag}        (in another terminal)\n"
        f"  tail {outbox}"
    )


COMMANDS = [init]
