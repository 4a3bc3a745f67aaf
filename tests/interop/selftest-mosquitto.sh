#!/usr/bin/env bash
# Self-test of py_device.py without the local hub: a stock mosquitto 2.0 broker with a TLS listener
# and a TLS WebSocket listener on 127.0.0.1 stands in for the hub (a stock broker speaks the
# same MQTT topics, which tells client-side setup problems from hub bugs).
# Checks the port patch, CA trust, C2D subscription and the JSON output for both transports.
#
#   tests/interop/selftest-mosquitto.sh VENV_DIR
#
# Needs: mosquitto, mosquitto_pub (Debian: apt-get install mosquitto mosquitto-clients), openssl,
# and a venv from setup-python.sh. Runs inside a private network namespace (unshare -n, only `lo`)
# when possible, so the broker is reachable from nowhere else. Kills the broker it started.
set -euo pipefail

if [ "${1:-}" = "--in-netns" ]; then
    INNER=1
    shift
else
    INNER=0
fi
if [ $# -ne 1 ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 64
fi
VENV_DIR=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)

if [ "$INNER" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
    exec unshare -n "$0" --in-netns "$VENV_DIR"
fi
if [ "$INNER" = 1 ]; then
    ip link set lo up
fi

for tool in mosquitto mosquitto_pub openssl; do
    command -v "$tool" >/dev/null || { echo "selftest: $tool not found" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/iothub-interop-selftest.XXXXXX")
MOSQ_PID=
cleanup() {
    if [ -n "$MOSQ_PID" ]; then kill "$MOSQ_PID" 2>/dev/null || true; wait "$MOSQ_PID" 2>/dev/null || true; fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

# Throwaway PKI: a test CA and a server certificate for localhost and 127.0.0.1.
{
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca.key -out ca.pem \
        -subj "/CN=iothub-local selftest CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 2 -sha256 -extfile server.ext
} >openssl.log 2>&1 || { cat openssl.log >&2; exit 1; }
chmod 755 "$WORK"
chmod 644 ./*.pem ./*.key   # mosquitto drops root privileges before reading them

MQTT_PORT=18883
WSS_PORT=18443
PUB_PORT=11883
cat > mosquitto.conf <<EOF
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type all
listener $MQTT_PORT 127.0.0.1
certfile $WORK/server.pem
keyfile $WORK/server.key
cafile $WORK/ca.pem
listener $WSS_PORT 127.0.0.1
protocol websockets
certfile $WORK/server.pem
keyfile $WORK/server.key
cafile $WORK/ca.pem
listener $PUB_PORT 127.0.0.1
EOF
mosquitto -c mosquitto.conf >mosquitto.log 2>&1 &
MOSQ_PID=$!
for _ in $(seq 50); do
    grep -q "running" mosquitto.log && break
    sleep 0.1
done
grep -q "running" mosquitto.log || { cat mosquitto.log >&2; echo "selftest: mosquitto did not start" >&2; exit 1; }

CS="HostName=localhost;DeviceId=dev1;SharedAccessKey=$(printf 'selftest-key-0123456789abcdef' | base64)"
TOPIC='devices/dev1/messages/devicebound/%24.mid=m1&%24.ct=application%2Fjson&prop1=v1'
PY="$VENV_DIR/bin/python"
failures=0

run_case() {
    local name=$1; shift
    local out="$WORK/$name.out" err="$WORK/$name.err"
    "$PY" "$HERE/py_device.py" --connection-string "$CS" --ca-file "$WORK/ca.pem" \
        --mqtt-port $MQTT_PORT --wss-port $WSS_PORT --count 1 --timeout 20 "$@" >"$out" 2>"$err" &
    local pid=$!
    for _ in $(seq 150); do
        grep -q '^connected$' "$out" && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    if grep -q '^connected$' "$out"; then
        mosquitto_pub -h 127.0.0.1 -p $PUB_PORT -q 1 -t "$TOPIC" -m '{"hello":"c2d"}'
    fi
    local rc=0
    wait $pid || rc=$?
    if "$PY" - "$out" "$rc" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
rc = int(sys.argv[2])
assert rc == 0, "exit code %d" % rc
assert lines[0] == "connected", lines
msg = json.loads(lines[-1])
assert msg["data"] == '{"hello":"c2d"}', msg
assert msg["message_id"] == "m1", msg
assert msg["content_type"] == "application/json", msg
assert msg["custom_properties"] == {"prop1": "v1"}, msg
for k in ("correlation_id", "user_id", "content_encoding", "expiry_time_utc", "ack"):
    assert msg[k] is None, (k, msg)
EOF
    then
        echo "selftest: $name ok: $(tail -n 1 "$out")"
    else
        echo "selftest: $name FAILED (exit $rc); stdout:" >&2
        cat "$out" >&2
        echo "--- stderr:" >&2
        cat "$err" >&2
        failures=$((failures + 1))
    fi
}

mosquitto_sub -h 127.0.0.1 -p $PUB_PORT -q 1 -v -C 1 -W 30 -t 'devices/dev1/messages/events/#' \
    >"$WORK/telemetry.out" 2>&1 &
SUB_PID=$!
sleep 0.3
run_case mqtt-tls --send-telemetry '{"hello":"d2c"}'
wait $SUB_PID || true
want='devices/dev1/messages/events/%24.mid=d2c-1&%24.ct=application%2Fjson&%24.ce=utf-8&k=v%20v {"hello":"d2c"}'
if [ "$(cat "$WORK/telemetry.out")" = "$want" ] && grep -q '^sent$' "$WORK/mqtt-tls.out"; then
    echo "selftest: telemetry ok: $(cat "$WORK/telemetry.out")"
else
    echo "selftest: telemetry FAILED: $(cat "$WORK/telemetry.out")" >&2
    failures=$((failures + 1))
fi
run_case mqtt-wss --websockets

# Timeout path: nothing is published, so the peer must exit 2 with a message on stderr.
rc=0
"$PY" "$HERE/py_device.py" --connection-string "$CS" --ca-file "$WORK/ca.pem" \
    --mqtt-port $MQTT_PORT --count 1 --timeout 3 >"$WORK/timeout.out" 2>"$WORK/timeout.err" || rc=$?
if [ $rc = 2 ] && grep -q timeout "$WORK/timeout.err"; then
    echo "selftest: timeout ok: $(cat "$WORK/timeout.err")"
else
    echo "selftest: timeout FAILED (exit $rc)" >&2; cat "$WORK/timeout.err" >&2
    failures=$((failures + 1))
fi

if [ $failures != 0 ]; then
    echo "--- mosquitto log:" >&2
    cat mosquitto.log >&2
    echo "selftest: $failures case(s) failed" >&2
    exit 1
fi
echo "selftest: all passed"
