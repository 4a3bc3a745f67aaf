#!/usr/bin/env bash
# Create (or reuse) a directory with the official Azure IoT Node SDKs used as interop peers.
#
#   tests/interop/setup-node.sh DIR      # then IOTHUB_NODE_MODULES=DIR/node_modules
#
# Idempotent: if DIR already holds the pinned packages, it does nothing. Uses the machine's node
# and npm (Node 20 is the known-good version). Prints little; exits non-zero on any failure
# (npm's output is shown only then).
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 64
fi
DIR=$1

# Versions known good against the local hub (the versions the interop tests were written against).
PACKAGES=(
    "azure-iot-device@1.18.4"
    "azure-iot-device-mqtt@1.16.4"
    "azure-iothub@1.16.6"
    "azure-iot-common@1.13.3"
    "@azure/event-hubs@6.0.4"
)

check() {
    # Succeeds only if every pinned version is installed and the SDKs load.
    (cd "$DIR" && node -e '
const want = process.argv.slice(1);
for (const spec of want) {
  const at = spec.lastIndexOf("@");
  const name = spec.slice(0, at), version = spec.slice(at + 1);
  const got = require("./node_modules/" + name + "/package.json").version;
  if (got !== version) process.exit(1);
}
require("./node_modules/azure-iothub");
require("./node_modules/azure-iot-common");
require("./node_modules/azure-iot-device");
require("./node_modules/azure-iot-device-mqtt");
' "${PACKAGES[@]}") >/dev/null 2>&1
}

if [ -d "$DIR/node_modules" ] && check; then
    exit 0
fi

mkdir -p "$DIR"
if [ ! -f "$DIR/package.json" ]; then
    printf '{"name":"iothub-interop-peers","private":true}\n' >"$DIR/package.json"
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" != "20" ]; then
    echo "setup-node: warning: node $(node --version); the peers are known good on Node 20" >&2
fi

log=$(mktemp "${TMPDIR:-/tmp}/setup-node.XXXXXX")
trap 'rm -f "$log"' EXIT
if ! (cd "$DIR" && npm install --no-audit --no-fund --loglevel=error "${PACKAGES[@]}") >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup-node: npm install failed" >&2
    exit 1
fi
if ! check; then
    echo "setup-node: packages installed but the SDKs do not load" >&2
    exit 1
fi
echo "setup-node: ready: $DIR/node_modules"
