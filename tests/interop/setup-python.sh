#!/usr/bin/env bash
# Create (or reuse) a Python venv with the official Azure IoT SDKs used as interop peers.
#
#   tests/interop/setup-python.sh VENV_DIR
#
# Idempotent: if VENV_DIR already holds the pinned packages and they import, it does nothing.
# Uses the machine's python3 (CPython 3.11 is the known-good version); override with PYTHON=...
# Prints little; exits non-zero on any failure (pip's output is shown only then).
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 64
fi
VENV_DIR=$1
PYTHON=${PYTHON:-python3}

# Exactly what the peers need. six is required by azure-iot-hub 2.7.0 but not declared by it.
# (The remaining dependencies resolve to versions that import cleanly on CPython 3.11: paho-mqtt is
# capped <2 by azure-iot-device and uamqp <2 by azure-iot-hub; the newest of those are pure Python
# 1.6.1 and a cp311 manylinux wheel 1.6.11, so nothing else needs pinning at the moment.)
REQUIREMENTS=(
    "azure-iot-device==2.14.0"
    "azure-iot-hub==2.7.0"
    "six"
    "azure-eventhub==5.15.1"
)

VPY="$VENV_DIR/bin/python"

check() {
    # Succeeds only if the pinned versions are installed and both SDKs import.
    "$VPY" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as md, sys
want = {"azure-iot-device": "2.14.0", "azure-iot-hub": "2.7.0", "azure-eventhub": "5.15.1"}
for name, ver in want.items():
    if md.version(name) != ver:
        sys.exit(1)
md.version("six")
import azure.iot.device, azure.iot.hub  # noqa: F401
EOF
}

if [ -x "$VPY" ] && check; then
    exit 0
fi

if [ ! -x "$VPY" ]; then
    if ! "$PYTHON" -m venv "$VENV_DIR"; then
        echo "setup-python: could not create venv at $VENV_DIR with $PYTHON" >&2
        exit 1
    fi
fi

ver=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$ver" != "3.11" ]; then
    echo "setup-python: warning: venv uses Python $ver; the peers are known good on 3.11" >&2
fi

log=$(mktemp "${TMPDIR:-/tmp}/setup-python.XXXXXX")
trap 'rm -f "$log"' EXIT
if ! "$VPY" -m pip install --disable-pip-version-check --no-input --quiet \
        "${REQUIREMENTS[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup-python: pip install failed" >&2
    exit 1
fi

if ! check; then
    "$VPY" -c "import azure.iot.device, azure.iot.hub" >&2 || true
    echo "setup-python: packages installed but the SDKs do not import" >&2
    exit 1
fi
echo "setup-python: ready: $VENV_DIR"
