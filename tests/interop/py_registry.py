#!/usr/bin/env python3
"""Interop peer: the official Python service SDK (azure-iot-hub 2.7.0) against the registry over HTTPS.

The SDK is used unmodified except for one monkeypatch: it builds URLs as "https://" + HostName (port
443), so requests.Session.request is wrapped to rewrite https URLs without an explicit port to
--https-port. The connection string's HostName stays port-free, so the SAS "sr" is the bare host
name; note that requests then sends "Host: HOST:PORT". The CA is trusted the way requests does it:
REQUESTS_CA_BUNDLE is set to --ca-file inside this process before requests is imported (this
overrides any inherited REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE).

Steps, one JSON line each on stdout (flushed):
  create   create_device_with_sas(ID, key1, key2, "enabled") with fresh random base64 keys
  get      get_device(ID)
  delete   delete_device(ID)                     (If-Match: "*")
  get_deleted  get_device(ID) must raise HttpOperationError with status 404
Exit codes: 0 if every step behaved as expected; 1 otherwise; 2 on timeout; 64 on bad arguments.

Run with the venv made by setup-python.sh, e.g.
  VENV/bin/python py_registry.py --connection-string \
      "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
      --ca-file ca.pem --https-port 18443 --device-id dev2
"""

import argparse
import base64
import json
import os
import sys
import threading
import urllib.parse


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on usage errors; 2 is reserved for "timeout" here.
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def parse_args(argv=None):
    p = _Parser(description="azure-iot-hub 2.7.0 registry (HTTPS) peer for the local hub")
    p.add_argument("--connection-string", required=True, help="service connection string (port-free HostName)")
    p.add_argument("--ca-file", required=True, help="PEM file of the CA that signed the hub's certificate")
    p.add_argument("--https-port", type=int, default=443, help="port used instead of 443 for HTTPS")
    p.add_argument("--device-id", required=True, help="device id to create, read and delete")
    p.add_argument("--timeout", type=float, default=60.0, help="overall deadline in seconds")
    args = p.parse_args(argv)
    if not 0 < args.https_port < 65536:
        p.error("--https-port out of range")
    if args.timeout <= 0:
        p.error("--timeout must be > 0")
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


def describe_device(dev, key1, key2, create_etag=None):
    sk = None
    if dev is not None and dev.authentication is not None:
        sk = dev.authentication.symmetric_key
    out = {
        "device_id": getattr(dev, "device_id", None),
        "etag": getattr(dev, "etag", None),
        "status": getattr(dev, "status", None),
        "auth_type": getattr(getattr(dev, "authentication", None), "type", None),
        "primary_key_matches": sk is not None and sk.primary_key == key1,
        "secondary_key_matches": sk is not None and sk.secondary_key == key2,
    }
    if create_etag is not None:
        out["etag_matches_create"] = out["etag"] == create_etag
    return out


def describe_error(e):
    out = {"error": "%s: %s" % (type(e).__name__, e)}
    resp = getattr(e, "response", None)
    if resp is not None:
        out["error_status_code"] = getattr(resp, "status_code", None)
        headers = getattr(resp, "headers", None) or {}
        out["iothub_errorcode"] = headers.get("iothub-errorcode")
        text = getattr(resp, "text", None)
        if text:
            out["error_body"] = text[:500]
    return out


def main(argv=None):
    args = parse_args(argv)

    # REQUESTS_CA_BUNDLE semantics, set before requests/msrest are imported.
    ca = os.path.abspath(args.ca_file)
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    os.environ["CURL_CA_BUNDLE"] = ca
    # Never send loopback traffic through an inherited proxy.
    no_proxy = [v for v in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if v]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(no_proxy + ["localhost", "127.0.0.1", "::1"])

    def on_timeout():
        sys.stdout.flush()
        sys.stderr.write("py_registry: timeout after %gs\n" % args.timeout)
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(args.timeout, on_timeout)
    watchdog.daemon = True
    watchdog.start()

    patch_requests_port(args.https_port)
    from azure.iot.hub import IoTHubRegistryManager
    from msrest.exceptions import HttpOperationError

    try:
        rm = IoTHubRegistryManager.from_connection_string(args.connection_string)
    except Exception as e:
        emit(dict(step="init", ok=False, **describe_error(e)))
        sys.stdout.flush()
        os._exit(1)

    new_key = lambda: base64.b64encode(os.urandom(32)).decode("ascii")  # noqa: E731
    key1, key2 = new_key(), new_key()
    did = args.device_id
    all_ok = True

    def dev_ok(d):
        return (
            d["device_id"] == did
            and d["status"] == "enabled"
            and bool(d["etag"])
            and d["primary_key_matches"]
            and d["secondary_key_matches"]
        )

    # 1. create
    create_etag = None
    try:
        dev = rm.create_device_with_sas(did, key1, key2, "enabled")
        d = describe_device(dev, key1, key2)
        create_etag = d["etag"]
        ok = dev_ok(d)
        emit(dict(step="create", ok=ok, **d))
    except Exception as e:
        ok = False
        emit(dict(step="create", ok=False, **describe_error(e)))
    all_ok &= ok

    # 2. get
    try:
        dev = rm.get_device(did)
        d = describe_device(dev, key1, key2, create_etag)
        ok = dev_ok(d)
        emit(dict(step="get", ok=ok, **d))
    except Exception as e:
        ok = False
        emit(dict(step="get", ok=False, **describe_error(e)))
    all_ok &= ok

    # 3. delete
    try:
        result = rm.delete_device(did)
        ok = True
        emit(dict(step="delete", ok=True, device_id=did, result=repr(result)))
    except Exception as e:
        ok = False
        emit(dict(step="delete", ok=False, device_id=did, **describe_error(e)))
    all_ok &= ok

    # 4. get after delete: must be a 404 HttpOperationError
    try:
        dev = rm.get_device(did)
        ok = False
        emit(dict(step="get_deleted", ok=False, unexpected="device still exists",
                  **describe_device(dev, key1, key2)))
    except HttpOperationError as e:
        d = describe_error(e)
        ok = d.get("error_status_code") == 404
        emit(dict(step="get_deleted", ok=ok, device_id=did, **d))
    except Exception as e:
        ok = False
        emit(dict(step="get_deleted", ok=False, device_id=did, **describe_error(e)))
    all_ok &= ok

    watchdog.cancel()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit skips uamqp's noisy IoTHubRegistryManager.__del__ at interpreter teardown.
    os._exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
