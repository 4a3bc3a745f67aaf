#!/usr/bin/env python3
"""Interop peer: the official Python device SDK's module client (azure-iot-device 2.14.0,
IoTHubModuleClient) connecting with a module connection string and sending telemetry.

The SDK is used unmodified except for py_device.py's port patch (8883 -> --mqtt-port). The
connection string must have no GatewayHostName (see tests/interop/peer.rs,
python_device_connection_string).

Output on stdout, one line each, flushed:
  connected     once connected
  sent          after each telemetry message was acknowledged (PUBACK); message ids
                "py-module-1", "py-module-2", ...
Exit codes: 0 after --count messages and shutdown; 1 on an error; 2 on timeout; 64 on bad arguments.

  VENV/bin/python py_module_client.py --connection-string "HostName=localhost;DeviceId=dev1;ModuleId=m1;SharedAccessKey=..." \
      --ca-file ca.pem --mqtt-port 18883 --text hello --count 1
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_device import _Parser, emit, fail, patch_paho_ports  # noqa: E402


def main(argv=None):
    p = _Parser(description="azure-iot-device IoTHubModuleClient telemetry peer for the local hub")
    p.add_argument("--connection-string", required=True, help="module connection string")
    p.add_argument("--ca-file", required=True)
    p.add_argument("--mqtt-port", type=int, default=8883)
    p.add_argument("--text", default="hello from a Python module")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)

    stage = ["starting"]
    watchdog = threading.Timer(args.timeout, lambda: fail(2, "timeout while %s" % stage[0]))
    watchdog.daemon = True
    watchdog.start()

    with open(args.ca_file, "r", encoding="utf-8") as f:
        ca_pem = f.read()
    patch_paho_ports(args.mqtt_port, 443)
    from azure.iot.device import IoTHubModuleClient, Message

    try:
        stage[0] = "creating the client"
        client = IoTHubModuleClient.create_from_connection_string(
            args.connection_string, server_verification_cert=ca_pem
        )
        stage[0] = "connecting"
        client.connect()
        emit("connected")
        for i in range(1, args.count + 1):
            stage[0] = "sending message %d" % i
            client.send_message(Message(args.text, message_id="py-module-%d" % i))
            emit("sent")
        stage[0] = "shutting down"
        client.shutdown()
    except Exception as e:
        fail(1, "%s failed: %r" % (stage[0], e))
    watchdog.cancel()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
