#!/usr/bin/env python3
"""Interop peer: the official Python device SDK (azure-iot-device 2.14.0) as an X.509 device.

Authenticates with `azure.iot.device.X509(cert_file, key_file)` and
`IoTHubDeviceClient.create_from_x509_certificate(x509, hostname, device_id, ...)`: TLS with the
client certificate, MQTT CONNECT without a password. The SDK is used unmodified except for the
port patch of py_device.py (paho.mqtt.client.Client.connect maps 8883 -> --mqtt-port and
443 -> --wss-port).

Output on stdout, one line each, flushed:
  connected      once connected
  sent           after the --send-telemetry message was acknowledged (PUBACK)
  refused        (with --expect-refused) when connecting failed with UnauthorizedError
Exit codes: 0 on success; 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.

  VENV/bin/python py_x509_device.py --hostname localhost --device-id dev1 \
      --cert-file dev1.pem --key-file dev1.key --ca-file ca.pem \
      --mqtt-port 18883 --wss-port 18443 [--websockets] --send-telemetry 'hello' --timeout 30
"""

import argparse
import logging
import os
import sys
import threading


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def parse_args(argv=None):
    p = _Parser(description="azure-iot-device 2.14.0 X.509 device peer for the local hub")
    p.add_argument("--hostname", required=True)
    p.add_argument("--device-id", required=True)
    p.add_argument("--cert-file", required=True, help="device certificate, PEM")
    p.add_argument("--key-file", required=True, help="device private key, PEM")
    p.add_argument("--ca-file", required=True, help="PEM of the CA that signed the hub's certificate")
    p.add_argument("--mqtt-port", type=int, default=8883)
    p.add_argument("--wss-port", type=int, default=443)
    p.add_argument("--websockets", action="store_true")
    p.add_argument("--send-telemetry", metavar="TEXT")
    p.add_argument("--expect-refused", action="store_true", help="succeed when the hub refuses the certificate")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(code, text):
    sys.stdout.flush()
    sys.stderr.write("py_x509_device: %s\n" % text)
    sys.stderr.flush()
    os._exit(code)


def patch_paho_ports(mqtt_port, wss_port):
    import paho.mqtt.client as paho

    local_ports = {8883: mqtt_port, 443: wss_port}
    orig_connect = paho.Client.connect

    def _connect_local(self, host, port=1883, *a, **kw):
        return orig_connect(self, host, local_ports.get(port, port), *a, **kw)

    paho.Client.connect = _connect_local


def main(argv=None):
    args = parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    stage = ["starting"]
    watchdog = threading.Timer(args.timeout, lambda: fail(2, "timeout while %s" % stage[0]))
    watchdog.daemon = True
    watchdog.start()

    with open(args.ca_file, "r", encoding="utf-8") as f:
        ca_pem = f.read()
    patch_paho_ports(args.mqtt_port, args.wss_port)
    from azure.iot.device import IoTHubDeviceClient, Message, X509
    from azure.iot.device.exceptions import ClientError, CredentialError

    x509 = X509(cert_file=args.cert_file, key_file=args.key_file)
    client = IoTHubDeviceClient.create_from_x509_certificate(
        x509,
        hostname=args.hostname,
        device_id=args.device_id,
        server_verification_cert=ca_pem,
        websockets=args.websockets,
        connection_retry=False,
    )
    try:
        stage[0] = "connecting"
        client.connect()
    except (CredentialError, ClientError) as e:
        # CONNACK 5 surfaces as CredentialError (wrapping UnauthorizedError) in 2.14.0.
        if args.expect_refused and "Unauthorized" in repr(e) + repr(getattr(e, "__cause__", None)):
            out("refused")
            client.shutdown()
            os._exit(0)
        fail(1, "connect failed: %r (cause %r)" % (e, getattr(e, "__cause__", None)))
    except Exception as e:
        fail(1, "connect failed: %r" % (e,))
    if args.expect_refused:
        fail(1, "the hub accepted a certificate it should refuse")
    out("connected")
    if args.send_telemetry is not None:
        stage[0] = "sending telemetry"
        try:
            client.send_message(Message(args.send_telemetry, message_id="x509-1"))
        except Exception as e:
            fail(1, "send_message failed: %r" % (e,))
        out("sent")
    stage[0] = "shutting down"
    client.shutdown()
    watchdog.cancel()
    os._exit(0)


if __name__ == "__main__":
    main()
