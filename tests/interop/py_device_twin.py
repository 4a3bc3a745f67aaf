#!/usr/bin/env python3
"""Interop peer: the official Python device SDK (azure-iot-device 2.14.0) with twins and methods.

Same port patch as py_device.py (paho's connect maps 8883 -> --mqtt-port, 443 -> --wss-port).
After connecting it:
  1. reads its twin (get_twin) and prints {"twin": <the twin>};
  2. patches reported properties with --reported (JSON) and prints "reported";
  3. sets on_twin_desired_properties_patch_received and on_method_request_received (each makes
     the SDK subscribe and wait for the SUBACK) and prints "ready";
  4. prints {"desired": <patch>} for each desired-properties patch, and for each method request
     {"method": <name>, "payload": <payload>}, answering it with status 200 and
     {"echo": <payload>, "by": "python"} (status 404 for a method called "missing");
  5. exits 0 after --patches patches and --methods method requests (after shutdown()).
Exit codes: 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.

  VENV/bin/python py_device_twin.py --connection-string "HostName=localhost;DeviceId=dev1;SharedAccessKey=..." \
      --ca-file ca.pem --mqtt-port 18883 --reported '{"a":1}' --patches 1 --methods 1 --timeout 60
"""

import argparse
import json
import os
import sys
import threading


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def parse_args(argv=None):
    p = _Parser(description="azure-iot-device 2.14.0 twin/method peer for the local hub")
    p.add_argument("--connection-string", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--mqtt-port", type=int, default=8883)
    p.add_argument("--wss-port", type=int, default=443)
    p.add_argument("--reported", default='{"python": true}', help="reported-properties patch (JSON)")
    p.add_argument("--patches", type=int, default=1, help="desired patches to wait for")
    p.add_argument("--methods", type=int, default=1, help="method requests to wait for")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    try:
        args.reported = json.loads(args.reported)
    except ValueError as e:
        p.error("--reported is not JSON: %s" % e)
    return args


_lock = threading.Lock()


def emit(value):
    line = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fail(code, text):
    sys.stderr.write("py_device_twin: %s\n" % text)
    sys.stderr.flush()
    os._exit(code)


def main(argv=None):
    args = parse_args(argv)
    stage = ["starting"]
    watchdog = threading.Timer(args.timeout, lambda: fail(2, "timeout while %s" % stage[0]))
    watchdog.daemon = True
    watchdog.start()

    with open(args.ca_file, "r", encoding="utf-8") as f:
        ca_pem = f.read()

    import paho.mqtt.client as paho

    ports = {8883: args.mqtt_port, 443: args.wss_port}
    orig_connect = paho.Client.connect

    def _connect_local(self, host, port=1883, *a, **kw):
        return orig_connect(self, host, ports.get(port, port), *a, **kw)

    paho.Client.connect = _connect_local

    from azure.iot.device import IoTHubDeviceClient, MethodResponse

    client = IoTHubDeviceClient.create_from_connection_string(
        args.connection_string, server_verification_cert=ca_pem
    )
    counts = {"patches": 0, "methods": 0}
    done = threading.Event()

    def check_done():
        if counts["patches"] >= args.patches and counts["methods"] >= args.methods:
            done.set()

    def on_desired(patch):
        emit({"desired": patch})
        with _lock:
            counts["patches"] += 1
        check_done()

    def on_method(request):
        emit({"method": request.name, "payload": request.payload})
        status = 404 if request.name == "missing" else 200
        response = MethodResponse.create_from_method_request(
            request, status, {"echo": request.payload, "by": "python"}
        )
        try:
            client.send_method_response(response)
        except Exception as e:
            fail(1, "send_method_response failed: %r" % (e,))
        with _lock:
            counts["methods"] += 1
        check_done()

    try:
        stage[0] = "connecting"
        client.connect()
        stage[0] = "getting the twin"
        emit({"twin": client.get_twin()})
        stage[0] = "patching reported properties"
        client.patch_twin_reported_properties(args.reported)
        emit("reported")
        stage[0] = "subscribing to desired patches and methods"
        client.on_twin_desired_properties_patch_received = on_desired
        client.on_method_request_received = on_method
    except Exception as e:
        fail(1, "%s failed: %r" % (stage[0], e))
    emit("ready")
    check_done()
    stage[0] = "waiting for desired patches and method requests"
    while not done.wait(0.2):
        pass
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
