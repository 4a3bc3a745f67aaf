#!/usr/bin/env python3
"""Interop peer: the official Python service SDK (azure-iot-hub 2.7.0) reading and writing a
device's twin and invoking a direct method on it, over HTTPS.

The SDK is used unmodified except for the port patch of py_registry.py: requests.Session.request
is wrapped to send https URLs without an explicit port to --https-port (the SDK builds
"https://" + HostName). The CA is trusted through REQUESTS_CA_BUNDLE, set to --ca-file here
before requests is imported.

Steps, one JSON line each on stdout (sorted keys, flushed):
  get_twin     IoTHubRegistryManager.get_twin(ID): {"reported": {...}, "desired_version": N,
               "reported_version": M, "etag": "..."}
  update_twin  IoTHubRegistryManager.update_twin(ID, Twin(properties=TwinProperties(desired=
               --desired JSON)), etag from get_twin): {"desired_version": N}
  invoke       IoTHubRegistryManager.invoke_device_method(ID, CloudToDeviceMethod(method_name=
               --method, payload=--payload JSON, response_timeout_in_seconds=30,
               connect_timeout_in_seconds=10)): {"status": S, "payload": P}
Exit codes: 0 when every step ran; 1 on an error (details on stderr and in an "error" member);
2 on timeout; 64 on bad arguments.

  VENV/bin/python py_service_twin_methods.py --connection-string \
      "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
      --ca-file ca.pem --https-port 18443 --device-id dev1 \
      --desired '{"interval": 7}' --method echo --payload '{"n": 1}'
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
    p = _Parser(description="azure-iot-hub 2.7.0 twin and method peer for the local hub")
    p.add_argument("--connection-string", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--device-id", required=True)
    p.add_argument("--module-id", default=None)
    p.add_argument("--desired", required=True, help="JSON object merged into the desired properties")
    p.add_argument("--method", required=True)
    p.add_argument("--payload", required=True, help="JSON payload of the method call")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    try:
        args.desired = json.loads(args.desired)
        args.payload = json.loads(args.payload)
    except ValueError as e:
        p.error("not JSON: %s" % e)
    if not os.path.isfile(args.ca_file):
        p.error("--ca-file %s is not a file" % args.ca_file)
    return args


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def patch_requests_port(https_port):
    import requests

    orig_request = requests.Session.request

    def _request_local(self, method, url, *a, **kw):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https" and parts.port is None and parts.hostname:
            url = urllib.parse.urlunsplit(parts._replace(netloc="%s:%d" % (parts.netloc, https_port)))
        return orig_request(self, method, url, *a, **kw)

    requests.Session.request = _request_local


def main(argv=None):
    args = parse_args(argv)
    ca = os.path.abspath(args.ca_file)
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    os.environ["CURL_CA_BUNDLE"] = ca

    def on_timeout():
        sys.stdout.flush()
        sys.stderr.write("py_service_twin_methods: timeout after %gs\n" % args.timeout)
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(args.timeout, on_timeout)
    watchdog.daemon = True
    watchdog.start()

    patch_requests_port(args.https_port)
    from azure.iot.hub import IoTHubRegistryManager
    from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

    step = "init"
    try:
        rm = IoTHubRegistryManager.from_connection_string(args.connection_string)
        step = "get_twin"
        if args.module_id:
            twin = rm.get_module_twin(args.device_id, args.module_id)
        else:
            twin = rm.get_twin(args.device_id)
        reported = dict(twin.properties.reported)
        desired = dict(twin.properties.desired)
        emit({
            "step": "get_twin",
            "reported": {k: v for k, v in reported.items() if not k.startswith("$")},
            "reported_version": reported.get("$version"),
            "desired_version": desired.get("$version"),
            "etag": twin.etag,
        })
        step = "update_twin"
        patch = Twin(properties=TwinProperties(desired=args.desired))
        if args.module_id:
            updated = rm.update_module_twin(args.device_id, args.module_id, patch, twin.etag)
        else:
            updated = rm.update_twin(args.device_id, patch, twin.etag)
        emit({"step": "update_twin", "desired_version": updated.properties.desired.get("$version")})
        step = "invoke"
        call = CloudToDeviceMethod(
            method_name=args.method,
            payload=args.payload,
            response_timeout_in_seconds=30,
            connect_timeout_in_seconds=10,
        )
        if args.module_id:
            result = rm.invoke_device_module_method(args.device_id, args.module_id, call)
        else:
            result = rm.invoke_device_method(args.device_id, call)
        emit({"step": "invoke", "status": result.status, "payload": result.payload})
    except Exception as e:  # report the failing step, then exit 1
        emit({"step": step, "error": "%s: %s" % (type(e).__name__, e)})
        sys.stderr.write("py_service_twin_methods: %s failed: %r\n" % (step, e))
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
