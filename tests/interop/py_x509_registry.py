#!/usr/bin/env python3
"""Interop peer: the official Python service SDK (azure-iot-hub 2.7.0) registering X.509 devices.

Calls `IoTHubRegistryManager.create_device_with_x509(id, primary, secondary, "enabled")` (type
`selfSigned`) and `create_device_with_certificate_authority(id, "enabled")` (type
`certificateAuthority`), then `get_device` of each. Same port patch and CA handling as
py_registry.py (requests.Session.request rewrites port-less https URLs to --https-port;
REQUESTS_CA_BUNDLE is --ca-file).

Output: one JSON line per device (sorted keys): device_id, auth_type, primary_thumbprint,
secondary_thumbprint as get_device returned them. Exit codes: 0; 1 on an error; 2 on timeout;
64 on bad arguments.

  VENV/bin/python py_x509_registry.py --connection-string "HostName=localhost;..." \
      --ca-file ca.pem --https-port 18443 --self-signed ID PRIMARY SECONDARY --ca-signed ID2
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


def main(argv=None):
    p = _Parser(description="azure-iot-hub 2.7.0 X.509 registry peer for the local hub")
    p.add_argument("--connection-string", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--self-signed", nargs=3, metavar=("ID", "PRIMARY", "SECONDARY"))
    p.add_argument("--ca-signed", metavar="ID")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)

    ca = os.path.abspath(args.ca_file)
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    os.environ["CURL_CA_BUNDLE"] = ca
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "localhost,127.0.0.1,::1"

    def on_timeout():
        sys.stderr.write("py_x509_registry: timeout after %gs\n" % args.timeout)
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(args.timeout, on_timeout)
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

    def describe(dev):
        auth = dev.authentication
        prints = auth.x509_thumbprint if auth is not None else None
        return {
            "device_id": dev.device_id,
            "auth_type": auth.type if auth is not None else None,
            "primary_thumbprint": getattr(prints, "primary_thumbprint", None),
            "secondary_thumbprint": getattr(prints, "secondary_thumbprint", None),
        }

    try:
        rm = IoTHubRegistryManager.from_connection_string(args.connection_string)
        if args.self_signed:
            did, primary, secondary = args.self_signed
            rm.create_device_with_x509(did, primary, secondary, "enabled")
            sys.stdout.write(json.dumps(describe(rm.get_device(did)), sort_keys=True) + "\n")
        if args.ca_signed:
            rm.create_device_with_certificate_authority(args.ca_signed, "enabled")
            sys.stdout.write(json.dumps(describe(rm.get_device(args.ca_signed)), sort_keys=True) + "\n")
    except Exception as e:
        sys.stdout.flush()
        sys.stderr.write("py_x509_registry: %r\n" % (e,))
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    watchdog.cancel()
    os._exit(0)


if __name__ == "__main__":
    main()
