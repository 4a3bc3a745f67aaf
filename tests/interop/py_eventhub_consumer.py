"""Reads device telemetry from the local hub's built-in Event Hubs endpoint with the official
azure-eventhub consumer (5.15.1).

    VENV/bin/python tests/interop/py_eventhub_consumer.py \
        --connection-string "Endpoint=sb://localhost:PORT/;...;EntityPath=...;UseDevelopmentEmulator=true" \
        --consumer-group '$Default' --partition 2 --start earliest --count 3 --timeout 60

--start: earliest | latest | offset:N | offset:N:inclusive | seq:N | seq:N:inclusive | time:MS
(milliseconds since the epoch; exclusive).

Prints first one JSON line with the Event Hub's and the partition's properties (from the
$management node), then one JSON line per event (sorted keys), and exits 0 after --count
events. Exit 1 on an error (text on stderr), 2 on timeout, 64 on bad arguments.
"""

import argparse
import asyncio
import datetime
import json
import logging
import os
import sys

from azure.eventhub.aio import EventHubConsumerClient


def text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    return value


def decoded(mapping):
    return {text(k): text(v) for k, v in (mapping or {}).items()}


def start_position(spec):
    kind, _, rest = spec.partition(":")
    value, _, flag = rest.partition(":")
    inclusive = flag == "inclusive"
    if kind == "earliest":
        return "-1", False
    if kind == "latest":
        return "@latest", False
    if kind == "offset":
        return value, inclusive  # a str is an offset
    if kind == "seq":
        return int(value), inclusive  # an int is a sequence number
    if kind == "time":
        at = datetime.datetime.fromtimestamp(int(value) / 1000, tz=datetime.timezone.utc)
        return at, inclusive
    raise ValueError("bad --start " + spec)


async def run(args):
    client = EventHubConsumerClient.from_connection_string(
        args.connection_string,
        consumer_group=args.consumer_group,
        logging_enable=bool(os.environ.get("PEER_DEBUG")),
    )
    async with client:
        hub = await client.get_eventhub_properties()
        part = await client.get_partition_properties(args.partition)
        print(
            json.dumps(
                {
                    "eventhub": {
                        "name": hub["eventhub_name"],
                        "partition_ids": hub["partition_ids"],
                        "created_at": text(hub["created_at"]),
                    },
                    "partition": {k: text(v) for k, v in part.items()},
                },
                sort_keys=True,
            ),
            flush=True,
        )
        received = asyncio.get_running_loop().create_future()
        seen = []

        async def on_event(context, event):
            if event is None or received.done():
                return
            seen.append(
                {
                    "partition": context.partition_id,
                    "body": event.body_as_str(),
                    "sequence_number": event.sequence_number,
                    "offset": event.offset,
                    "enqueued_ms": int(event.enqueued_time.timestamp() * 1000),
                    "properties": decoded(event.properties),
                    "system_properties": decoded(event.system_properties),
                    "content_type": event.content_type,
                    "message_id": text(event.message_id),
                    "correlation_id": text(event.correlation_id),
                }
            )
            print(json.dumps(seen[-1], sort_keys=True), flush=True)
            if len(seen) >= args.count:
                received.set_result(None)

        async def on_error(context, error):
            if not received.done():
                received.set_exception(error)

        position, inclusive = start_position(args.start)
        task = asyncio.ensure_future(
            client.receive(
                on_event,
                on_error=on_error,
                partition_id=args.partition,
                starting_position=position,
                starting_position_inclusive=inclusive,
                owner_level=args.owner_level,
            )
        )
        try:
            if args.count == 0:
                await asyncio.sleep(args.linger)
            else:
                await received
        finally:
            await client.close()
            task.cancel()


def main():
    if os.environ.get("PEER_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--consumer-group", default="$Default")
    parser.add_argument("--partition", required=True)
    parser.add_argument("--start", default="earliest")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--owner-level", type=int, default=None)
    parser.add_argument("--linger", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=60)
    try:
        args = parser.parse_args()
    except SystemExit:
        sys.exit(64)
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        print("timeout", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - reported to the test
        import traceback

        traceback.print_exc()
        print("error: %r" % (e,), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
