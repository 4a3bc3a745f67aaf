#!/usr/bin/env python3
"""Interop peer: the official Python service SDK (azure-iot-hub 2.7.0) sending one C2D message over AMQP.

The SDK is used unmodified except for the port: uamqp connects to
uamqp.constants.DEFAULT_AMQPS_PORT (5671, read when the connection is set up, uamqp
authentication/common.py), so it is set to --amqp-port before the client is made. The CA is
trusted through SSL_CERT_FILE, which the caller sets to --ca-file (uamqp's bundled OpenSSL loads
the default verify paths, and azure-iot-hub's IoTHubAmqpClientSharedAccessKeyAuth offers no CA
option); this script also sets it in its own environment before importing uamqp.

Output on stdout, one line, flushed:
  sent                      after send_c2d_message returned (the hub answered accepted)
Exit codes: 0 on success; 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.

Run with the venv made by setup-python.sh, e.g.
  VENV/bin/python py_service.py --connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
      --ca-file ca.pem --amqp-port 15671 --device-id dev1 --data '{"hello":1}' \
      --properties '{"messageId":"svc-m1","iothub-ack":"full"}'
"""

import argparse
import json
import os
import sys
import threading


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on usage errors; 2 is reserved for "timeout" here.
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def parse_args(argv=None):
    p = _Parser(description="azure-iot-hub 2.7.0 C2D sender (AMQP) for the local hub")
    p.add_argument("--connection-string", required=True, help="service connection string (port-free HostName)")
    p.add_argument("--ca-file", required=True, help="PEM file of the CA that signed the hub's certificate")
    p.add_argument("--amqp-port", type=int, default=5671, help="port used instead of 5671")
    p.add_argument("--device-id", required=True)
    p.add_argument("--data", required=True, help="message body (text)")
    p.add_argument("--properties", default="{}", help="JSON object passed as send_c2d_message(properties=...)")
    p.add_argument("--timeout", type=float, default=60.0, help="overall deadline in seconds")
    args = p.parse_args(argv)
    if not 0 < args.amqp_port < 65536:
        p.error("--amqp-port out of range")
    if args.timeout <= 0:
        p.error("--timeout must be > 0")
    try:
        args.properties = json.loads(args.properties)
    except ValueError as e:
        p.error("--properties is not JSON: %s" % e)
    return args


def fail(code, text):
    sys.stdout.flush()
    sys.stderr.write("py_service: %s\n" % text)
    sys.stderr.flush()
    os._exit(code)  # uamqp threads may be blocked; do not wait for them


def main(argv=None):
    args = parse_args(argv)
    stage = ["starting"]
    watchdog = threading.Timer(
        args.timeout, lambda: fail(2, "timeout after %gs while %s" % (args.timeout, stage[0]))
    )
    watchdog.daemon = True
    watchdog.start()

    os.environ["SSL_CERT_FILE"] = args.ca_file
    import uamqp.constants

    uamqp.constants.DEFAULT_AMQPS_PORT = args.amqp_port
    from azure.iot.hub import IoTHubRegistryManager

    try:
        stage[0] = "creating the registry manager"
        rm = IoTHubRegistryManager.from_connection_string(args.connection_string)
        stage[0] = "sending the C2D message"
        rm.send_c2d_message(args.device_id, args.data, properties=args.properties)
    except Exception as e:
        fail(1, "%s failed: %r" % (stage[0], e))
    sys.stdout.write("sent\n")
    sys.stdout.flush()
    watchdog.cancel()
    os._exit(0)


if __name__ == "__main__":
    main()
