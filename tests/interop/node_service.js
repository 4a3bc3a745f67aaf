#!/usr/bin/env node
// Interop peer: the official Node service SDK (azure-iothub 1.16.6) sending one C2D message over
// AMQP and waiting for its feedback on getFeedbackReceiver().
//
// The SDK is used unmodified. The port goes in the connection string, `HostName=localhost:PORT`,
// which azure-iothub takes from its `'amqps://' + host` URL (common-amqp/amqp.ts `Amqp.connect`);
// the CA is trusted only through NODE_EXTRA_CA_CERTS, which the caller sets (its AMQP transport
// sets no `ca` option). Run with
// NODE_PATH pointing at the node_modules made by setup-node.sh.
//
// Output on stdout, one JSON object per line, flushed:
//   {"step":"sent"}                                    after client.send resolved (accepted)
//   {"step":"feedback","contentType":...,"records":[...]}   per feedback message received
// Exit codes: 0 once a feedback record for --message-id arrived and the client closed; 1 on an
// error; 2 on timeout; 64 on bad arguments. Errors go to stderr.
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node node_service.js \
//     --connection-string "HostName=localhost:15671;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
//     --device-id dev1 --data '{"hello":1}' --message-id node-m1 --correlation-id node-c1 \
//     --expiry-ms 1795364141302 --timeout 60
'use strict';

function usage(text) {
  process.stderr.write('node_service: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const names = ['connection-string', 'device-id', 'data', 'message-id', 'correlation-id', 'expiry-ms', 'timeout'];
  const args = { timeout: '60' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
    args[name] = argv[i + 1];
  }
  for (const name of ['connection-string', 'device-id', 'data', 'message-id']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
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
  process.stderr.write('node_service: ' + text + '\n', () => process.exit(code));
}

setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's while ' + stage), args.timeout * 1000).unref();

const { Client } = require('azure-iothub');
const { Message } = require('azure-iot-common');

(async () => {
  const client = Client.fromConnectionString(args['connection-string']);
  stage = 'opening the client';
  await client.open();
  stage = 'attaching the feedback receiver';
  const { result: receiver } = await client.getFeedbackReceiver();
  const gotFeedback = new Promise((resolve) => {
    receiver.on('message', (m) => {
      const records = JSON.parse(m.getData().toString('utf8'));
      out({ step: 'feedback', contentType: m.contentType, records });
      if (records.some((r) => r.originalMessageId === args['message-id'])) resolve();
    });
  });
  receiver.on('error', (e) => fail(1, 'feedback receiver error: ' + e));

  const msg = new Message(args.data);
  msg.messageId = args['message-id'];
  if (args['correlation-id'] !== undefined) msg.correlationId = args['correlation-id'];
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  // A number of milliseconds: rhea 1.0.24 cannot encode a Date here ("value.copy is not a
  // function" in types.js write_long), so the SDK's own Date form fails before sending.
  if (args['expiry-ms'] !== undefined) msg.expiryTimeUtc = Number(args['expiry-ms']);
  msg.ack = 'full';
  msg.properties.add('prop1', 'v1');
  msg.properties.add('prop 2', 'a/b=c&d');
  stage = 'sending';
  await client.send(args['device-id'], msg);
  out({ step: 'sent' });

  stage = 'waiting for feedback';
  await gotFeedback;
  stage = 'closing';
  await client.close();
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
