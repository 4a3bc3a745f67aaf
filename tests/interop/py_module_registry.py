#!/usr/bin/env python3
"""Interop peer: the official Python service SDK (azure-iot-hub 2.7.0) managing module identities.

Uses IoTHubRegistryManager's module calls unmodified, with py_registry.py's HTTPS port patch and
CA set-up (requests is pointed at --https-port and --ca-file). The device must exist.

Steps, one JSON line each on stdout (sorted keys, flushed), each with "step" and "ok":
  create        create_module_with_sas(DEV, MOD, "py-manager", key1, key2)
  create_generated  create_module_with_sas(DEV, MOD + "-gen", None, None, None): keys from the hub
  get           get_module(DEV, MOD)
  list          get_modules(DEV)
  update        update_module_with_sas(DEV, MOD, "py-manager-2", key2, key1, etag)
  update_stale  the same with the create's etag: HttpOperationError 412
  delete        delete_module(DEV, MOD)                       (If-Match: "*")
  get_deleted   get_module(DEV, MOD): HttpOperationError 404
  unknown_device  get_modules("no-such-device"): HttpOperationError 404
Exit codes: 0 if every step ran; 1 on an unexpected error; 2 on timeout; 64 on bad arguments.

  VENV/bin/python py_module_registry.py --connection-string "HostName=localhost;..." \
      --ca-file ca.pem --https-port 18443 --device-id dev1 --module-id m1
"""

import argparse
import base64
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_registry import _Parser, describe_error, patch_requests_port  # noqa: E402


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def describe_module(m):
    sk = m.authentication.symmetric_key if m.authentication is not None else None
    return {
        "device_id": m.device_id,
        "module_id": m.module_id,
        "managed_by": m.managed_by,
        "etag": m.etag,
        "generation_id": m.generation_id,
        "connection_state": m.connection_state,
        "auth_type": m.authentication.type if m.authentication is not None else None,
        "primary_key": sk.primary_key if sk is not None else None,
        "secondary_key": sk.secondary_key if sk is not None else None,
    }


def main(argv=None):
    p = _Parser(description="azure-iot-hub module registry peer for the local hub")
    p.add_argument("--connection-string", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--device-id", required=True)
    p.add_argument("--module-id", required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)

    ca = os.path.abspath(args.ca_file)
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    os.environ["CURL_CA_BUNDLE"] = ca
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "localhost,127.0.0.1,::1"

    def on_timeout():
        sys.stderr.write("py_module_registry: timeout after %gs\n" % args.timeout)
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(args.timeout, on_timeout)
    watchdog.daemon = True
    watchdog.start()

    patch_requests_port(args.https_port)
    from azure.iot.hub import IoTHubRegistryManager
    from msrest.exceptions import HttpOperationError

    rm = IoTHubRegistryManager.from_connection_string(args.connection_string)
    did, mid = args.device_id, args.module_id
    new_key = lambda: base64.b64encode(os.urandom(32)).decode("ascii")  # noqa: E731
    key1, key2 = new_key(), new_key()

    def step(name, call, describe):
        try:
            emit(dict(step=name, ok=True, **describe(call())))
        except HttpOperationError as e:
            emit(dict(step=name, ok=False, **describe_error(e)))
        except Exception as e:  # an SDK-side failure is a test failure
            emit(dict(step=name, ok=False, unexpected=True, **describe_error(e)))
            os._exit(1)

    created = {}

    def create():
        m = rm.create_module_with_sas(did, mid, "py-manager", key1, key2)
        created["etag"] = m.etag
        return m

    step("create", create, lambda m: dict(describe_module(m), key1=key1, key2=key2))
    step("create_generated", lambda: rm.create_module_with_sas(did, mid + "-gen", None, None, None), describe_module)
    step("get", lambda: rm.get_module(did, mid), describe_module)
    step("list", lambda: rm.get_modules(did), lambda ms: {"module_ids": sorted(m.module_id for m in ms)})
    current = rm.get_module(did, mid).etag
    step("update", lambda: rm.update_module_with_sas(did, mid, "py-manager-2", current, key2, key1), describe_module)
    step(
        "update_stale",
        lambda: rm.update_module_with_sas(did, mid, "py-manager-3", created["etag"], key1, key2),
        describe_module,
    )
    step("delete", lambda: rm.delete_module(did, mid), lambda r: {"result": repr(r)})
    step("get_deleted", lambda: rm.get_module(did, mid), describe_module)
    step("unknown_device", lambda: rm.get_modules("no-such-device"), lambda ms: {"count": len(ms)})

    watchdog.cancel()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
