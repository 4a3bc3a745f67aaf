// Reads device telemetry from the local hub's built-in Event Hubs endpoint with the official
// @azure/event-hubs consumer (6.0.4).
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node tests/interop/node_eventhub_consumer.js \
//     --connection-string 'Endpoint=sb://localhost:PORT/;...;EntityPath=...' \
//     --consumer-group '$Default' --partition 2 --start earliest --count 3 --timeout 60
//
// --start: earliest | latest | offset:N | offset:N:inclusive | seq:N | seq:N:inclusive | time:MS
// --owner-level N: an epoch receiver; prints {"error": name, "code": code} and exits 3 when
// the hub takes the partition away or refuses it.
//
// Prints one JSON line with the Event Hub's and the partition's properties, then one JSON line
// per event, and exits 0 after --count events (--count 0: waits --linger seconds). Exit 1 on an
// error (stderr), 2 on timeout, 64 on bad arguments.
"use strict";

const { EventHubConsumerClient } = require("@azure/event-hubs");

function parseArgs(argv) {
  const args = { consumerGroup: "$Default", start: "earliest", count: 1, timeout: 60, linger: 1 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) process.exit(64);
    switch (key) {
      case "--connection-string": args.connectionString = value; break;
      case "--consumer-group": args.consumerGroup = value; break;
      case "--partition": args.partition = value; break;
      case "--start": args.start = value; break;
      case "--count": args.count = Number(value); break;
      case "--owner-level": args.ownerLevel = Number(value); break;
      case "--linger": args.linger = Number(value); break;
      case "--timeout": args.timeout = Number(value); break;
      default: process.exit(64);
    }
  }
  if (!args.connectionString || args.partition === undefined) process.exit(64);
  return args;
}

function startPosition(spec) {
  const [kind, value, flag] = spec.split(":");
  const isInclusive = flag === "inclusive";
  switch (kind) {
    case "earliest": return { offset: "-1" };
    case "latest": return { offset: "@latest" };
    case "offset": return { offset: value, isInclusive };
    case "seq": return { sequenceNumber: Number(value), isInclusive };
    case "time": return { enqueuedOn: new Date(Number(value)) };
    default: process.exit(64);
  }
}

function plain(value) {
  if (Buffer.isBuffer(value)) return value.toString("utf8");
  if (value instanceof Date) return value.getTime();
  return value;
}

function normalized(map) {
  const out = {};
  for (const [k, v] of Object.entries(map || {})) out[k] = plain(v);
  return out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const timer = setTimeout(() => {
    console.error("timeout");
    process.exit(2);
  }, args.timeout * 1000);
  const client = new EventHubConsumerClient(args.consumerGroup, args.connectionString);
  const hub = await client.getEventHubProperties();
  const part = await client.getPartitionProperties(args.partition);
  console.log(JSON.stringify({
    eventhub: { name: hub.name, partitionIds: hub.partitionIds, createdOn: hub.createdOn.getTime() },
    partition: normalized(part),
  }));
  let seen = 0;
  let done;
  const finished = new Promise((resolve, reject) => { done = { resolve, reject }; });
  const options = { startPosition: startPosition(args.start), maxBatchSize: 1, maxWaitTimeInSeconds: 1 };
  if (args.ownerLevel !== undefined) options.ownerLevel = args.ownerLevel;
  const subscription = client.subscribe(args.partition, {
    processEvents: async (events, context) => {
      for (const event of events) {
        seen += 1;
        console.log(JSON.stringify({
          partition: context.partitionId,
          body: typeof event.body === "string" || Buffer.isBuffer(event.body)
            ? plain(event.body) : JSON.stringify(event.body),
          sequence_number: event.sequenceNumber,
          offset: event.offset,
          enqueued_ms: event.enqueuedTimeUtc.getTime(),
          properties: normalized(event.properties),
          system_properties: normalized(event.systemProperties),
          content_type: event.contentType,
          message_id: plain(event.messageId),
          correlation_id: plain(event.correlationId),
        }));
        if (args.count > 0 && seen >= args.count) done.resolve();
      }
    },
    processError: async (error) => {
      if (args.ownerLevel !== undefined) {
        console.log(JSON.stringify({ error: error.name, code: error.code }));
        await client.close();
        process.exit(3);
      }
      done.reject(error);
    },
  }, options);
  if (args.count === 0) {
    console.log("subscribed");
    await new Promise((resolve) => setTimeout(resolve, args.linger * 1000));
  } else {
    await finished;
  }
  await subscription.close();
  await client.close();
  clearTimeout(timer);
}

main().catch((error) => {
  console.error("error:", error && error.stack ? error.stack : error);
  process.exit(1);
});
