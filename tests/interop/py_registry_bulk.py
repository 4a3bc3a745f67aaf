#!/usr/bin/env python3
"""Interop peer: the official Python service SDK (azure-iot-hub 2.7.0) listing devices with a
limit and managing them in bulk.

Uses IoTHubRegistryManager unmodified, with py_registry.py's HTTPS port patch and CA set-up:
get_devices(max_number_of_devices) (`GET /devices?top=N`) and bulk_create_or_update_devices
(`POST /devices` with ExportImportDevice objects, azure-iot-hub-python
`protocol/models/export_import_device_py3.py`; the answer is a BulkRegistryOperationResult for
HTTP 200 and 400 alike, `protocol/operations/bulk_registry_operations.py`).

Steps, one JSON line each on stdout (sorted keys, flushed), each with "step":
  bulk_create   three devices created (importMode create): is_successful, errors
  list          get_devices(): sorted ids
  list_top      get_devices(max_number_of_devices=2): count
  bulk_mixed    create py-bulk-1 again (fails), update py-bulk-2 disabled with its eTag
                (updateIfMatchETag), delete py-bulk-3 (delete): is_successful, errors
  get           get_device("py-bulk-2").status
  list_after    get_devices(): sorted ids
A result is {"is_successful": bool, "errors": [[device_id, error_code], ...]}.
Exit codes: 0 if every step ran; 1 on an unexpected error; 2 on timeout; 64 on bad arguments.

  VENV/bin/python py_registry_bulk.py --connection-string "HostName=localhost;..." \\
      --ca-file ca.pem --https-port 18443
"""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_registry import _Parser, patch_requests_port  # noqa: E402


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def summary(result):
    return {
        "is_successful": result.is_successful,
        "errors": [[e.device_id, e.error_code] for e in (result.errors or [])],
    }


def main(argv=None):
    p = _Parser(description="azure-iot-hub bulk registry peer for the local hub")
    p.add_argument("--connection-string", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)

    ca = os.path.abspath(args.ca_file)
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    os.environ["CURL_CA_BUNDLE"] = ca
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "localhost,127.0.0.1,::1"

    def on_timeout():
        sys.stderr.write("py_registry_bulk: timeout after %gs\n" % args.timeout)
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(args.timeout, on_timeout)
    watchdog.daemon = True
    watchdog.start()

    patch_requests_port(args.https_port)
    from azure.iot.hub import IoTHubRegistryManager
    from azure.iot.hub.protocol.models import ExportImportDevice

    try:
        rm = IoTHubRegistryManager.from_connection_string(args.connection_string)
        ids = ["py-bulk-1", "py-bulk-2", "py-bulk-3"]
        created = rm.bulk_create_or_update_devices(
            [ExportImportDevice(id=i, import_mode="create") for i in ids]
        )
        emit(dict(step="bulk_create", **summary(created)))
        emit({"step": "list", "ids": sorted(d.device_id for d in rm.get_devices())})
        emit({"step": "list_top", "count": len(rm.get_devices(max_number_of_devices=2))})

        etag = rm.get_device("py-bulk-2").etag
        mixed = rm.bulk_create_or_update_devices(
            [
                ExportImportDevice(id="py-bulk-1", import_mode="create"),
                ExportImportDevice(
                    id="py-bulk-2", import_mode="updateIfMatchETag", e_tag=etag, status="disabled"
                ),
                ExportImportDevice(id="py-bulk-3", import_mode="delete"),
            ]
        )
        emit(dict(step="bulk_mixed", **summary(mixed)))
        emit({"step": "get", "status": rm.get_device("py-bulk-2").status})
        emit({"step": "list_after", "ids": sorted(d.device_id for d in rm.get_devices())})
    except Exception as e:  # any failure is a test failure
        sys.stderr.write("py_registry_bulk: %s: %s\n" % (type(e).__name__, e))
        sys.stderr.flush()
        os._exit(1)

    watchdog.cancel()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
