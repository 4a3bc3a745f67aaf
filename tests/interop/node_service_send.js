#!/usr/bin/env node
// Interop peer: the official Node service SDK (azure-iothub 1.16.6) sending one C2D message
// described in full by --message (JSON), then optionally waiting for its feedback.
//
// The SDK is used unmodified; as in node_service.js the port goes in `HostName=localhost:PORT`
// (azure-iothub's common-amqp/amqp.ts `Amqp.connect` takes the port from the `amqps://` URL)
// and the CA only through NODE_EXTRA_CA_CERTS (its AMQP transport sets no `ca` option), both
// set by the caller. Run with NODE_PATH pointing at the node_modules of setup-node.sh.
//
// --message is a JSON object; every key is optional except data:
//   {"data": "text", "messageId": "...", "correlationId": "...", "contentType": "...",
//    "contentEncoding": "...", "expiryMs": 1795364141302, "ack": "full",
//    "properties": [["name", "value"], ...]}
// expiryMs is a number of milliseconds since the epoch: rhea 1.0.24 cannot encode a Date there
// (tests/interop/README.md). properties is a list of pairs, added in order with
// `message.properties.add`.
//
// Output on stdout, one JSON object per line:
//   {"step":"sent"}                                          after client.send resolved
//   {"step":"feedback","contentType":...,"records":[...]}    per feedback message, with --feedback
// Exit codes: 0 once sent (with --feedback: once a record for messageId arrived) and the client
// closed; 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node node_service_send.js \
//     --connection-string "HostName=localhost:15671;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
//     --device-id dev1 --message '{"data":"hi","messageId":"m1","ack":"full"}' --feedback --timeout 60
'use strict';

function usage(text) {
  process.stderr.write('node_service_send: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const args = { timeout: 60, feedback: false };
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, '');
    if (name === 'feedback') {
      args.feedback = true;
      continue;
    }
    if (!['connection-string', 'device-id', 'message', 'timeout'].includes(name) || i + 1 >= argv.length) {
      usage('bad argument ' + argv[i]);
    }
    args[name] = argv[++i];
  }
  for (const name of ['connection-string', 'device-id', 'message']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
  try {
    args.message = JSON.parse(args.message);
  } catch (e) {
    usage('--message is not JSON: ' + e);
  }
  if (typeof args.message.data !== 'string') usage('--message needs a string "data"');
  if (args.feedback && !args.message.messageId) usage('--feedback needs a messageId');
  args.timeout = Number(args.timeout);
  if (!(args.timeout > 0)) usage('--timeout must be > 0');
  return args;
}

const args = parseArgs(process.argv.slice(2));
let stage = 'starting';

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(code, text) {
  process.stderr.write('node_service_send: ' + text + '\n', () => process.exit(code));
}

setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's while ' + stage), args.timeout * 1000).unref();

const { Client } = require('azure-iothub');
const { Message } = require('azure-iot-common');

(async () => {
  const spec = args.message;
  const client = Client.fromConnectionString(args['connection-string']);
  stage = 'opening the client';
  await client.open();

  let gotFeedback = Promise.resolve();
  if (args.feedback) {
    stage = 'attaching the feedback receiver';
    const { result: receiver } = await client.getFeedbackReceiver();
    gotFeedback = new Promise((resolve) => {
      receiver.on('message', (m) => {
        const records = JSON.parse(m.getData().toString('utf8'));
        out({ step: 'feedback', contentType: m.contentType, records });
        receiver.complete(m, () => {});
        if (records.some((r) => r.originalMessageId === spec.messageId)) resolve();
      });
    });
    receiver.on('error', (e) => fail(1, 'feedback receiver error: ' + e));
  }

  const msg = new Message(spec.data);
  if (spec.messageId !== undefined) msg.messageId = spec.messageId;
  if (spec.correlationId !== undefined) msg.correlationId = spec.correlationId;
  if (spec.contentType !== undefined) msg.contentType = spec.contentType;
  if (spec.contentEncoding !== undefined) msg.contentEncoding = spec.contentEncoding;
  if (spec.expiryMs !== undefined) msg.expiryTimeUtc = Number(spec.expiryMs);
  if (spec.ack !== undefined) msg.ack = spec.ack;
  for (const [key, value] of spec.properties || []) msg.properties.add(key, value);
  stage = 'sending';
  await client.send(args['device-id'], msg);
  out({ step: 'sent' });

  stage = 'waiting for feedback';
  await gotFeedback;
  stage = 'closing';
  await client.close();
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
