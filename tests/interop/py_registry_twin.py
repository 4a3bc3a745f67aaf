#!/usr/bin/env python3
"""Interop peer: the official Python service SDK (azure-iot-hub 2.7.0) with twins and direct methods.

Same port patch and CA handling as py_registry.py (requests.Session.request maps https URLs without
a port to --https-port; REQUESTS_CA_BUNDLE is --ca-file).

Steps, one JSON line each on stdout (sorted keys, flushed):
  {"step": "get", "reported": …, "desired_version": N, "etag": …}        get_twin(ID)
  {"step": "update", "desired_version": N}        update_twin(ID, Twin(properties=TwinProperties(
                                                  desired=--desired)), etag) with the etag just read
  {"step": "stale_etag", "status": 412}           the same update again with the old etag
  {"step": "invoke", "status": S, "payload": …}   invoke_device_method(ID, CloudToDeviceMethod(
                                                  method_name="echo", payload=--payload,
                                                  response_timeout_in_seconds=30,
                                                  connect_timeout_in_seconds=30))
  {"step": "offline", "status": 404, "error_code": "404103"}   invoke on --offline-device-id
Exit codes: 0 after every step; 1 on an unexpected error; 2 on timeout; 64 on bad arguments.
"""

import argparse
import json
import os
import sys
import threading
import urllib.parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def parse_args(argv=None):
    p = _Parser(description="azure-iot-hub 2.7.0 twin/method peer for the local hub")
    p.add_argument("--connection-string", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--device-id", required=True)
    p.add_argument("--offline-device-id", required=True)
    p.add_argument("--desired", default='{"rate": 7}')
    p.add_argument("--payload", default='{"n": 1}')
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    try:
        args.desired = json.loads(args.desired)
        args.payload = json.loads(args.payload)
    except ValueError as e:
        p.error("--desired or --payload is not JSON: %s" % e)
    return args


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def fail(code, text):
    sys.stderr.write("py_registry_twin: %s\n" % text)
    sys.stderr.flush()
    os._exit(code)


def main(argv=None):
    args = parse_args(argv)
    ca = os.path.abspath(args.ca_file)
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    os.environ["CURL_CA_BUNDLE"] = ca
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "localhost,127.0.0.1,::1"
    stage = ["starting"]
    watchdog = threading.Timer(args.timeout, lambda: fail(2, "timeout while %s" % stage[0]))
    watchdog.daemon = True
    watchdog.start()

    import requests

    orig_request = requests.Session.request

    def _request_local(self, method, url, *a, **kw):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https" and parts.port is None and parts.hostname:
            url = urllib.parse.urlunsplit(parts._replace(netloc="%s:%d" % (parts.netloc, args.https_port)))
        return orig_request(self, method, url, *a, **kw)

    requests.Session.request = _request_local

    from azure.iot.hub import IoTHubRegistryManager
    from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
    from msrest.exceptions import HttpOperationError

    registry = IoTHubRegistryManager.from_connection_string(args.connection_string)
    try:
        stage[0] = "get_twin"
        twin = registry.get_twin(args.device_id)
        reported = {k: v for k, v in twin.properties.reported.items() if not k.startswith("$")}
        emit({"step": "get", "reported": reported,
              "desired_version": twin.properties.desired.get("$version"), "etag": twin.etag})
        stage[0] = "update_twin"
        patch = Twin(properties=TwinProperties(desired=args.desired))
        updated = registry.update_twin(args.device_id, patch, twin.etag)
        emit({"step": "update", "desired_version": updated.properties.desired.get("$version")})
        stage[0] = "update_twin with a stale etag"
        try:
            registry.update_twin(args.device_id, patch, twin.etag)
            fail(1, "an update with a stale etag succeeded")
        except HttpOperationError as e:
            emit({"step": "stale_etag", "status": e.response.status_code})
        stage[0] = "invoke_device_method"
        method = CloudToDeviceMethod(method_name="echo", payload=args.payload,
                                     response_timeout_in_seconds=30, connect_timeout_in_seconds=30)
        result = registry.invoke_device_method(args.device_id, method)
        emit({"step": "invoke", "status": result.status, "payload": result.payload})
        stage[0] = "invoke_device_method on an offline device"
        try:
            registry.invoke_device_method(
                args.offline_device_id,
                CloudToDeviceMethod(method_name="echo", payload=None, response_timeout_in_seconds=5),
            )
            fail(1, "a method call on an offline device succeeded")
        except HttpOperationError as e:
            inner = json.loads(e.response.json()["Message"])
            emit({"step": "offline", "status": e.response.status_code,
                  "error_code": str(inner["errorCode"])})
    except Exception as e:
        fail(1, "%s failed: %r" % (stage[0], e))
    watchdog.cancel()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
