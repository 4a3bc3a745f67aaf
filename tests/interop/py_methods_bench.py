#!/usr/bin/env python3
"""Bench peer: direct-method round trips between the official Python SDKs, through the local hub.

azure-iot-device 2.14.0 (MQTT/TLS) answers method "echo" with status 200 and the request's
payload (`on_method_request_received`, `send_method_response`); azure-iot-hub 2.7.0
(`IoTHubRegistryManager.invoke_device_method`, HTTPS) calls it --count times, one call at a time
(the SDK is synchronous). One untimed warm-up call first. Both SDKs are used unmodified except
for the port patches of py_device.py (paho connect 8883 -> --mqtt-port) and py_registry.py
(requests: https URLs without a port -> --https-port); the CA is --ca-file.

Output: one JSON line {"count": N, "elapsed_s": S, "latencies_ms": [...]} (the timed loop only:
process start-up, SDK import and connection are not counted). Exit codes: 0 on success; 1 on an
error; 2 on timeout; 64 on bad arguments.

  VENV/bin/python py_methods_bench.py --device-connection-string "HostName=localhost;DeviceId=..." \
      --service-connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;..." \
      --ca-file ca.pem --mqtt-port 18883 --https-port 18443 --count 500
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def fail(code, text):
    sys.stdout.flush()
    sys.stderr.write("py_methods_bench: %s\n" % text)
    sys.stderr.flush()
    os._exit(code)


def main(argv=None):
    p = _Parser(description="azure-iot-device + azure-iot-hub method round trips")
    p.add_argument("--device-connection-string", required=True)
    p.add_argument("--service-connection-string", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--https-port", type=int, required=True)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)

    stage = ["starting"]
    watchdog = threading.Timer(args.timeout, lambda: fail(2, "timeout while %s" % stage[0]))
    watchdog.daemon = True
    watchdog.start()

    ca = os.path.abspath(args.ca_file)
    with open(ca, "r", encoding="utf-8") as f:
        ca_pem = f.read()
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    os.environ["CURL_CA_BUNDLE"] = ca

    import paho.mqtt.client as paho

    orig_connect = paho.Client.connect

    def _connect_local(self, host, port=1883, *a, **kw):
        return orig_connect(self, host, args.mqtt_port if port == 8883 else port, *a, **kw)

    paho.Client.connect = _connect_local

    import requests

    orig_request = requests.Session.request

    def _request_local(self, method, url, *a, **kw):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https" and parts.port is None and parts.hostname:
            url = urllib.parse.urlunsplit(parts._replace(netloc="%s:%d" % (parts.netloc, args.https_port)))
        return orig_request(self, method, url, *a, **kw)

    requests.Session.request = _request_local

    from azure.iot.device import IoTHubDeviceClient, MethodResponse
    from azure.iot.hub import IoTHubRegistryManager
    from azure.iot.hub.models import CloudToDeviceMethod

    try:
        stage[0] = "connecting the device"
        device = IoTHubDeviceClient.create_from_connection_string(
            args.device_connection_string, server_verification_cert=ca_pem
        )
        device.connect()

        def on_method(request):
            response = MethodResponse.create_from_method_request(request, 200, request.payload)
            device.send_method_response(response)

        stage[0] = "subscribing to methods"
        device.on_method_request_received = on_method
        device_id = dict(
            part.split("=", 1) for part in args.device_connection_string.split(";") if "=" in part
        )["DeviceId"]
        registry = IoTHubRegistryManager.from_connection_string(args.service_connection_string)

        def call(n):
            result = registry.invoke_device_method(
                device_id,
                CloudToDeviceMethod(
                    method_name="echo",
                    payload={"n": n},
                    response_timeout_in_seconds=30,
                    connect_timeout_in_seconds=10,
                ),
            )
            if result.status != 200 or result.payload != {"n": n}:
                fail(1, "unexpected answer %r %r" % (result.status, result.payload))

        stage[0] = "warming up"
        call(-1)
        stage[0] = "timing"
        latencies = []
        start = time.perf_counter()
        for n in range(args.count):
            t0 = time.perf_counter()
            call(n)
            latencies.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - start
    except Exception as e:
        fail(1, "%s failed: %r" % (stage[0], e))
    sys.stdout.write(json.dumps({"count": args.count, "elapsed_s": elapsed, "latencies_ms": latencies}) + "\n")
    sys.stdout.flush()
    os._exit(0)  # SDK threads may linger; the result is out


if __name__ == "__main__":
    main()
