#!/usr/bin/env bash
# Sets up everything on a fresh machine: the .venv with telemed installed (editable), and with
# --test the system packages the test suite talks to (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
stamp=.venv/.telemed-installed

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
    .venv/bin/python -c "import telemed, signaling, diagnosis" # fail here, not in the tests
    touch "$stamp"
fi

if [ "${1:-}" = "--test" ]; then
    missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v ping >/dev/null || missing+=(iputils-ping)
    command -v storescu >/dev/null || missing+=(dcmtk)
    command -v chromium >/dev/null || missing+=(chromium)
    command -v whip-client >/dev/null || missing+=(simple-whip-client)
    command -v cc >/dev/null || missing+=(gcc)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi
