#!/usr/bin/env python3
"""Bench peer: device-to-cloud telemetry from many devices with the official Python device SDK
(azure-iot-device 2.14.0, MQTT/TLS), for benches/telemetry.rs.

Connects one IoTHubDeviceClient per line of --connection-strings (device connection strings
without GatewayHostName, see tests/interop/peer.rs), then runs --rounds rounds, each started by a
line "go" on stdin: every device sends --count messages one after the other (send_message waits
for the PUBACK), all devices at once (one thread each). Each message has a small JSON body and
the custom properties flow=--flow, round=N and sent-us (the wall-clock time just before the send,
in microseconds since the Unix epoch), from which the bench's reader computes the latency. The
port patch is py_device.py's (paho connect 8883 -> --mqtt-port); the SDK is otherwise unmodified.

Output on stdout, one line each: "ready" once every device is connected; per round one JSON
object {"round": N, "start_us": T0, "acked_us": T1}. Exit codes: 0 after the last round and
shutdown; 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.

  VENV/bin/python py_telemetry_bench.py --connection-strings FILE --ca-file ca.pem \
      --mqtt-port 18883 --count 10 --rounds 6 --flow python
"""

import argparse
import concurrent.futures
import json
import os
import sys
import threading
import time


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(code, text):
    sys.stdout.flush()
    sys.stderr.write("py_telemetry_bench: %s\n" % text)
    sys.stderr.flush()
    os._exit(code)  # SDK threads may be blocked; do not wait for them


def now_us():
    return time.time_ns() // 1000


def main(argv=None):
    p = _Parser(description="azure-iot-device telemetry from many devices")
    p.add_argument("--connection-strings", required=True, help="file: one device connection string per line")
    p.add_argument("--ca-file", required=True)
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--count", type=int, default=10, help="messages per device and round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--flow", default="python", help="the flow property of every message")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    if args.count < 1 or args.rounds < 1:
        p.error("--count and --rounds must be >= 1")

    stage = ["starting"]
    watchdog = threading.Timer(args.timeout, lambda: fail(2, "timeout while %s" % stage[0]))
    watchdog.daemon = True
    watchdog.start()

    with open(args.ca_file, "r", encoding="utf-8") as f:
        ca_pem = f.read()
    with open(args.connection_strings, "r", encoding="utf-8") as f:
        connection_strings = [line.strip() for line in f if line.strip()]

    import paho.mqtt.client as paho

    orig_connect = paho.Client.connect

    def _connect_local(self, host, port=1883, *a, **kw):
        return orig_connect(self, host, args.mqtt_port if port == 8883 else port, *a, **kw)

    paho.Client.connect = _connect_local

    from azure.iot.device import IoTHubDeviceClient, Message

    stage[0] = "connecting %d devices" % len(connection_strings)
    clients = [
        IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca_pem)
        for cs in connection_strings
    ]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(clients))
    try:
        for future in [pool.submit(c.connect) for c in clients]:
            future.result()
    except Exception as e:
        fail(1, "connect failed: %r" % (e,))
    emit("ready")

    def send_all(device, client, round_no):
        for k in range(args.count):
            msg = Message('{"device":%d,"seq":%d}' % (device, k))
            msg.custom_properties["flow"] = args.flow
            msg.custom_properties["round"] = str(round_no)
            msg.custom_properties["sent-us"] = str(now_us())
            client.send_message(msg)

    for round_no in range(args.rounds):
        stage[0] = "waiting for go %d" % round_no
        line = sys.stdin.readline()
        if line.strip() != "go":
            fail(1, "expected 'go' on stdin, got %r" % line)
        stage[0] = "round %d" % round_no
        start_us = now_us()
        futures = [pool.submit(send_all, i, c, round_no) for i, c in enumerate(clients)]
        try:
            for future in futures:
                future.result()
        except Exception as e:
            fail(1, "send failed in round %d: %r" % (round_no, e))
        emit(json.dumps({"round": round_no, "start_us": start_us, "acked_us": now_us()}))

    stage[0] = "shutting down"
    for future in [pool.submit(c.shutdown) for c in clients]:
        future.result()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
