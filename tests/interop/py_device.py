#!/usr/bin/env python3
"""Interop peer: the official Python device SDK (azure-iot-device 2.14.0) receiving C2D messages.

The SDK is used unmodified except for one monkeypatch: it hard-codes port 8883 (MQTT/TLS) and 443
(MQTT over WebSockets), so paho.mqtt.client.Client.connect is wrapped to map 8883 -> --mqtt-port and
443 -> --wss-port (azure-iot-device's common/mqtt_transport.py calls connect(host, port=8883), or
443 for WebSockets).

Output on stdout, one line each, flushed:
  connected                 once connected and subscribed to C2D
  sent                      after the optional --send-telemetry message was acknowledged (PUBACK)
  {"data": ..., ...}        one JSON object per C2D message received
Exit codes: 0 after --count messages were received and the client was shut down; 1 on an error
(connect/auth/TLS failure, ...); 2 on timeout; 64 on bad arguments. Errors go to stderr.

Run with the venv made by setup-python.sh, e.g.
  VENV/bin/python py_device.py --connection-string "HostName=localhost;DeviceId=dev1;SharedAccessKey=..." \
      --ca-file ca.pem --mqtt-port 18883 --wss-port 18443 --count 1 --timeout 30
"""

import argparse
import json
import logging
import os
import sys
import threading


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on usage errors; 2 is reserved for "timeout" here.
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def parse_args(argv=None):
    p = _Parser(description="azure-iot-device 2.14.0 C2D/telemetry peer for the local hub")
    p.add_argument("--connection-string", required=True, help="device connection string")
    p.add_argument("--ca-file", required=True, help="PEM file of the CA that signed the hub's certificate")
    p.add_argument("--mqtt-port", type=int, default=8883, help="port used instead of 8883 (MQTT/TLS)")
    p.add_argument("--wss-port", type=int, default=443, help="port used instead of 443 (MQTT/WSS)")
    p.add_argument("--websockets", action="store_true", help="use MQTT over WebSockets")
    p.add_argument("--count", type=int, default=1, help="C2D messages to receive before exiting (0 = none)")
    p.add_argument("--timeout", type=float, default=30.0, help="overall deadline in seconds")
    p.add_argument("--send-telemetry", metavar="TEXT", help="send one telemetry message after connecting")
    p.add_argument("--verbose", action="store_true", help="SDK debug logging on stderr")
    args = p.parse_args(argv)
    if args.count < 0:
        p.error("--count must be >= 0")
    if args.timeout <= 0:
        p.error("--timeout must be > 0")
    for name in ("mqtt_port", "wss_port"):
        if not 0 < getattr(args, name) < 65536:
            p.error("--%s out of range" % name.replace("_", "-"))
    return args


_out_lock = threading.Lock()


def emit(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fail(code, text):
    with _out_lock:
        sys.stdout.flush()
    sys.stderr.write("py_device: %s\n" % text)
    sys.stderr.flush()
    os._exit(code)  # SDK threads may be blocked; do not wait for them


def patch_paho_ports(mqtt_port, wss_port):
    import paho.mqtt.client as paho

    local_ports = {8883: mqtt_port, 443: wss_port}
    orig_connect = paho.Client.connect

    def _connect_local(self, host, port=1883, *a, **kw):
        return orig_connect(self, host, local_ports.get(port, port), *a, **kw)

    paho.Client.connect = _connect_local


def message_to_json(msg):
    data = msg.data
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", errors="replace")
    return json.dumps(
        {
            "data": data,
            "message_id": msg.message_id,
            "correlation_id": msg.correlation_id,
            "user_id": msg.user_id,
            "content_type": msg.content_type,
            "content_encoding": msg.content_encoding,
            "expiry_time_utc": msg.expiry_time_utc,
            "ack": msg.ack,
            "custom_properties": dict(msg.custom_properties or {}),
        },
        sort_keys=True,
    )


def main(argv=None):
    args = parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

    stage = ["starting"]
    watchdog = threading.Timer(
        args.timeout,
        lambda: fail(2, "timeout after %gs while %s" % (args.timeout, stage[0])),
    )
    watchdog.daemon = True
    watchdog.start()

    try:
        with open(args.ca_file, "r", encoding="utf-8") as f:
            ca_pem = f.read()
    except OSError as e:
        fail(1, "cannot read --ca-file: %s" % e)

    patch_paho_ports(args.mqtt_port, args.wss_port)
    from azure.iot.device import IoTHubDeviceClient, Message

    try:
        client = IoTHubDeviceClient.create_from_connection_string(
            args.connection_string,
            server_verification_cert=ca_pem,  # PEM text, not a path
            websockets=args.websockets,
        )
    except Exception as e:
        fail(1, "cannot create client: %r" % (e,))

    received = [0]
    done = threading.Event()
    if args.count == 0:
        done.set()

    def on_c2d(msg):
        if received[0] >= args.count:
            return
        received[0] += 1
        emit(message_to_json(msg))
        if received[0] >= args.count:
            done.set()

    try:
        stage[0] = "connecting"
        client.connect()
        stage[0] = "subscribing to C2D"
        client.on_message_received = on_c2d  # subscribes devices/<id>/messages/devicebound/# (QoS 1)
    except Exception as e:
        fail(1, "%s failed: %r" % (stage[0], e))
    emit("connected")

    if args.send_telemetry is not None:
        stage[0] = "sending telemetry"
        m = Message(
            args.send_telemetry,
            message_id="d2c-1",
            content_encoding="utf-8",
            content_type="application/json",
        )
        m.custom_properties["k"] = "v v"
        try:
            client.send_message(m)
        except Exception as e:
            fail(1, "send_message failed: %r" % (e,))
        emit("sent")

    stage[0] = "waiting for C2D messages (%d of %d received)" % (received[0], args.count)
    while not done.wait(0.2):
        stage[0] = "waiting for C2D messages (%d of %d received)" % (received[0], args.count)

    stage[0] = "shutting down"
    try:
        client.shutdown()
    except Exception as e:
        fail(1, "shutdown failed: %r" % (e,))
    watchdog.cancel()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
