#!/usr/bin/env bash
# Runs the README's quickstart (`cargo run --features local-hub --example quickstart`) and checks
# its output: both tutorial messages received with their data and properties, and a `Success`
# feedback record for each, and the device's telemetry read back. Exits non-zero, saying what is
# missing, if anything is.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build first, so that the time limit below is for the run alone.
cargo build --quiet --features local-hub --example quickstart

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
timeout 60 cargo run --quiet --features local-hub --example quickstart >"$out" 2>&1 || status=$?
cat "$out"

missing=0
expect_line() { # an exact line, at least once
  if ! grep -qxF -- "$1" "$out"; then
    echo "check-quickstart: missing line: $1" >&2
    missing=1
  fi
}
expect_count() { # a regular expression matching exactly N whole lines
  local n
  n="$(grep -cxE -- "$2" "$out" || true)"
  if [ "$n" != "$1" ]; then
    echo "check-quickstart: expected $1 line(s) matching $2, found $n" >&2
    missing=1
  fi
}

if [ "$status" != 0 ]; then
  echo "check-quickstart: the quickstart exited with status $status" >&2
  missing=1
fi
for i in 0 1; do
  expect_line "Sending message: $i"
  expect_line "    message_id: message_$i"
  expect_line "    correlation_id: correlation_$i"
  expect_line "    custom property testProperty: PropMsg_$i"
  expect_line "Feedback for message_$i: Success (device quickstart-device)"
done
expect_count 2 'Message received:'
expect_count 2 '    data: \{"service client sent a message": [0-9]+\.[0-9]{2}\}'
expect_count 2 '    content_type: application/json'
expect_count 2 '    ack: full'
expect_count 2 'Feedback for message_[01]: Success \(device quickstart-device\)'
expect_line "Total calls received: 1"
expect_line "Total calls received: 2"
expect_count 1 'Telemetry from quickstart-device \(partition [0-9]+, sequence number 0\): \{"messagesReceived": 2\}'
expect_line "Done"

if [ "$missing" != 0 ]; then
  echo "check-quickstart: FAILED" >&2
  exit 1
fi
echo "check-quickstart: the quickstart received both messages with their properties and got Success feedback for both, and read the device's telemetry back"
