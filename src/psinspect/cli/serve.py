"""``psinspect serve``: the Gradio web app for inspectors, on 127.0.0.1 by default (see
:mod:`psinspect.app`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import app
from psinspect.errors import PsinspectError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve_cmd(
    model_dir: Annotated[list[Path] | None, typer.Option(
        "--model-dir", help="A trained MODEL_DIR to offer besides the bundled default "
        "(repeatable).")] = None,
    default_model: Annotated[bool, typer.Option(
        "--default-model/--no-default-model",
        help="Offer the model bundled with psinspect (first in the list).")] = True,
    host: Annotated[str, typer.Option(
        help="Address to bind. The default serves this machine only; 0.0.0.0 exposes the app "
        "to the network (only do that on purpose).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 7860,
    max_upload_mb: Annotated[int, typer.Option(
        help="Largest accepted upload in MB.", min=1)] = 200,
    max_image_side: Annotated[int, typer.Option(
        help="Largest accepted image side in pixels.", min=16)] = 2048,
) -> None:
    """Start the web app: upload a normal map (.png/.npy) or a capture .zip, get a heatmap, a
    defect mask, regions and a PASS/FAIL verdict. Runs until Ctrl-C; no public share link."""
    from psinspect.app import Limits, check_bindable, load_model_choices, serve

    dirs = list(model_dir or [])
    for d in dirs:
        if not d.is_dir():
            raise PsinspectError(f"--model-dir {d}: folder not found")
    # load (and check) the models before binding the port, so errors are one line and exit 2
    choices = load_model_choices(dirs, include_default=default_model)
    check_bindable(host, port)  # (before the warning below: a host that is not ours is an error)
    if not _is_loopback(host):
        typer.echo(f"warning: binding {host}: the app is reachable from other machines",
                   err=True)
    limits = Limits(max_upload_bytes=max_upload_mb * 1024 * 1024, max_image_side=max_image_side)
    labels = "; ".join(c.label for c in choices)  # labels may hold commas
    serve(lambda: choices, host=host, port=port, limits=limits,
          on_ready=lambda url: typer.echo(f"psinspect app on {url} (models: {labels}); "
                                          "Ctrl-C to stop", err=True))
