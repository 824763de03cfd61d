"""Screenshots of the dashboard in headless Chromium (the README's picture, and the browser tests' record).

    uv run python -m orchestrator.web.screenshot --state-dir state -o docs/dashboard.png --path /campaign/1

Needs the `playwright` Python package (dev dependency group) and a Chromium on the machine:
Playwright's own browser download is not used, so Debian's `chromium` package (or $ARX_CHROMIUM) works
offline.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = {"width": 1360, "height": 900}


def chromium() -> str | None:
    """The Chromium to drive: $ARX_CHROMIUM, else the first of the usual names on PATH."""
    found = os.environ.get("ARX_CHROMIUM")
    if found:
        return found if Path(found).exists() else None
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def launch(playwright):
    executable = chromium()
    if executable is None:
        raise RuntimeError("no Chromium found: apt-get install chromium (or set ARX_CHROMIUM to its path)")
    return playwright.chromium.launch(executable_path=executable)


def capture(page, url: str, out: Path, full_page: bool = True) -> None:
    """Open `url`, wait until the page is live and its charts are drawn, then write a PNG."""
    page.goto(url)
    page.wait_for_selector("body[data-live=on]")
    page.wait_for_function("() => [...document.querySelectorAll('[data-chart]')].every(el => el.children.length > 0)")
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=full_page)


@click.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="state directory holding experiments.db",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("docs/dashboard.png"),
    show_default=True,
    help="PNG to write",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    default=["/"],
    show_default=True,
    help="page to capture (repeat for several: NAME-1.png, ...)",
)
@click.option(
    "--full-page/--viewport", default=False, show_default=True, help="the whole page, or what fits in 1360x900"
)
def main(state_dir: Path, output: Path, paths: tuple[str, ...], full_page: bool) -> None:
    """Serve the dashboard over STATE_DIR on a free loopback port and screenshot pages of it."""
    from playwright.sync_api import sync_playwright

    from .app import create_app, running

    with running(create_app(state_dir)) as base, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport=VIEWPORT)
        for i, path in enumerate(paths):
            out = output if len(paths) == 1 else output.with_name(f"{output.stem}-{i + 1}{output.suffix}")
            capture(page, base + path, out, full_page)
            click.echo(f"wrote {out}")
        browser.close()


if __name__ == "__main__":
    main()
