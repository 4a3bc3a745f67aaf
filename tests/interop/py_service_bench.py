#!/usr/bin/env python3
"""Bench peer: the official Python service SDK (azure-iot-hub 2.7.0) sending C2D messages one
after the other with IoTHubRegistryManager.send_c2d_message (it is synchronous: each call returns
once the hub settled the message), for benches/service.rs.

Port and CA as in py_service.py: uamqp.constants.DEFAULT_AMQPS_PORT is set to --amqp-port before
the client is made, and SSL_CERT_FILE to --ca-file.

One warm-up send to --warmup-device (connection, CBS, link attach) is not timed. Then --count
messages go round-robin to the ids of --device-ids (a JSON list), each with a small JSON body and
the SDK's default properties (a uuid4 message id, no ack), and the time is taken around them.

Output on stdout, one line: {"count": N, "elapsed_s": seconds}
Exit codes: 0 on success; 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.

  VENV/bin/python py_service_bench.py --connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
      --ca-file ca.pem --amqp-port 15671 --device-ids '["d0","d1"]' --warmup-device w --count 100
"""

import argparse
import json
import os
import sys
import threading
import time


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on usage errors; 2 is reserved for "timeout" here.
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, "%s: error: %s\n" % (self.prog, message))


def parse_args(argv=None):
    p = _Parser(description="azure-iot-hub 2.7.0 sequential C2D send benchmark peer")
    p.add_argument("--connection-string", required=True, help="service connection string (port-free HostName)")
    p.add_argument("--ca-file", required=True, help="PEM file of the CA that signed the hub's certificate")
    p.add_argument("--amqp-port", type=int, default=5671, help="port used instead of 5671")
    p.add_argument("--device-ids", required=True, help="JSON list of device ids, used round-robin")
    p.add_argument("--warmup-device", required=True, help="device of the untimed first send")
    p.add_argument("--count", type=int, required=True, help="timed sends")
    p.add_argument("--timeout", type=float, default=300.0, help="overall deadline in seconds")
    args = p.parse_args(argv)
    if not 0 < args.amqp_port < 65536:
        p.error("--amqp-port out of range")
    if args.count <= 0:
        p.error("--count must be > 0")
    if args.timeout <= 0:
        p.error("--timeout must be > 0")
    try:
        args.device_ids = json.loads(args.device_ids)
    except ValueError as e:
        p.error("--device-ids is not JSON: %s" % e)
    if not (isinstance(args.device_ids, list) and args.device_ids):
        p.error("--device-ids must be a non-empty JSON list")
    return args


def fail(code, text):
    sys.stdout.flush()
    sys.stderr.write("py_service_bench: %s\n" % text)
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

    body = '{"bench":true,"n":0}'
    ids = args.device_ids
    try:
        stage[0] = "creating the registry manager"
        rm = IoTHubRegistryManager.from_connection_string(args.connection_string)
        stage[0] = "the warm-up send"
        rm.send_c2d_message(args.warmup_device, body)
        stage[0] = "the timed sends"
        start = time.perf_counter()
        for i in range(args.count):
            rm.send_c2d_message(ids[i % len(ids)], body)
        elapsed = time.perf_counter() - start
    except Exception as e:
        fail(1, "%s failed: %r" % (stage[0], e))
    sys.stdout.write(json.dumps({"count": args.count, "elapsed_s": elapsed}) + "\n")
    sys.stdout.flush()
    watchdog.cancel()
    os._exit(0)


if __name__ == "__main__":
    main()
