"""Debian's headless Chromium for the browser tests (the dev setup installs it; never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps trying Google's hosts, which a closed network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Flags of every headless start (a fresh ``--user-data-dir`` is added per test)."""


def require_chromium() -> Path:
    """The browser, or a failure (never a skip) saying how to install it."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh --dev (apt-get install chromium)")
    return CHROMIUM
