#!/usr/bin/env node
// Interop peer: the official Node device SDK (azure-iot-device 1.18.4 + azure-iot-device-mqtt
// 1.16.4) receiving C2D messages over MQTT/TLS.
//
// The SDK is used unmodified. The port goes in the connection string: the local hub's device
// connection strings carry `GatewayHostName=localhost:PORT`, which azure-iot-device-mqtt dials
// (`'mqtts://' + (gatewayHostName || host)`, azure-iot-device-mqtt `mqtt.ts`) while the user name
// and SAS `sr` keep `HostName`. The CA is given with `setOptions({ ca })` (PEM text), so an
// inherited NODE_EXTRA_CA_CERTS does not matter. Run with NODE_PATH pointing at the
// node_modules made by setup-node.sh.
//
// Output on stdout, one line each, flushed:
//   connected                 once open and the C2D subscription (SUBACK) is in place
//   sent                      after the optional --send-telemetry message was acknowledged: its
//                             body is TEXT, messageId d2c-1, correlationId corr-1,
//                             application/json, utf-8 and the custom property k = "v v"
//   {"data": ..., ...}        one JSON object per C2D message (sorted keys): data (UTF-8 text),
//                             messageId, correlationId, userId, to, contentType, contentEncoding,
//                             expiryTimeUtc (as the SDK holds them; absent ones are null) and
//                             properties (an object of every custom property, iothub-ack included)
// Exit codes: 0 after --count messages and close(); 1 on an error (connect/TLS/auth failure, a
// property name received twice); 2 on timeout (the --timeout deadline covers the whole run); 64 on
// bad arguments. Errors go to stderr.
//
//   NODE_PATH=DIR/node_modules node node_device.js \
//     --connection-string "HostName=localhost;DeviceId=dev1;SharedAccessKey=...;GatewayHostName=localhost:18883" \
//     --ca-file ca.pem --count 1 --timeout 60
'use strict';

const fs = require('fs');

function usage(text) {
  process.stderr.write('node_device: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const names = ['connection-string', 'ca-file', 'count', 'timeout', 'send-telemetry'];
  const args = { count: '1', timeout: '60' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
    args[name] = argv[i + 1];
  }
  for (const name of ['connection-string', 'ca-file']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
  args.count = Number(args.count);
  if (!(Number.isInteger(args.count) && args.count >= 0)) usage('--count must be an integer >= 0');
  args.timeout = Number(args.timeout);
  if (!(args.timeout > 0)) usage('--timeout must be > 0');
  return args;
}

const args = parseArgs(process.argv.slice(2));
let stage = 'starting';

function out(line) {
  process.stdout.write(line + '\n');
}

function fail(code, text) {
  process.stderr.write('node_device: ' + text + '\n', () => process.exit(code));
}

setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's while ' + stage), args.timeout * 1000).unref();

const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function sortedObject(entries) {
  const obj = {};
  for (const [k, v] of entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) obj[k] = v;
  return obj;
}

function messageToJson(msg) {
  const properties = [];
  const seen = new Set();
  for (let i = 0; i < msg.properties.count(); i++) {
    const item = msg.properties.getItem(i);
    if (seen.has(item.key)) fail(1, 'property ' + JSON.stringify(item.key) + ' received twice');
    seen.add(item.key);
    properties.push([item.key, item.value]);
  }
  const field = (v) => (v === undefined ? null : v);
  return JSON.stringify(
    sortedObject([
      ['data', msg.getBytes().toString('utf8')],
      ['messageId', field(msg.messageId)],
      ['correlationId', field(msg.correlationId)],
      ['userId', field(msg.userId)],
      ['to', field(msg.to)],
      ['contentType', field(msg.contentType)],
      ['contentEncoding', field(msg.contentEncoding)],
      ['expiryTimeUtc', field(msg.expiryTimeUtc)],
      ['properties', sortedObject(properties)],
    ])
  );
}

(async () => {
  stage = 'reading --ca-file';
  const ca = fs.readFileSync(args['ca-file'], 'utf8');
  const client = Client.fromConnectionString(args['connection-string'], Mqtt);
  client.on('error', (e) => fail(1, 'client error while ' + stage + ': ' + ((e && e.stack) || e)));
  stage = 'setting options';
  await client.setOptions({ ca });
  stage = 'opening the client';
  await client.open();

  // Adding the 'message' listener makes the client subscribe (transport.enableC2D) in the
  // background; wrap that call to learn when the SUBACK arrived.
  const transport = client._transport;
  const enableC2D = transport.enableC2D.bind(transport);
  const subscribed = new Promise((resolve, reject) => {
    transport.enableC2D = (callback) =>
      enableC2D((err, result) => {
        if (err) reject(err);
        else resolve();
        callback(err, result);
      });
  });
  let received = 0;
  let done;
  const allReceived = new Promise((resolve) => {
    done = resolve;
  });
  if (args.count === 0) done();
  client.on('message', (msg) => {
    out(messageToJson(msg));
    // MQTT.js already PUBACKed (completed) it; complete() is a no-op on MQTT.
    client.complete(msg, () => {});
    received += 1;
    if (received === args.count) done();
  });
  stage = 'subscribing to C2D';
  await subscribed;
  out('connected');

  if (args['send-telemetry'] !== undefined) {
    stage = 'sending telemetry';
    const { Message } = require('azure-iot-device');
    const message = new Message(args['send-telemetry']);
    message.messageId = 'd2c-1';
    message.correlationId = 'corr-1';
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    message.properties.add('k', 'v v');
    await client.sendEvent(message);
    out('sent');
  }

  stage = 'waiting for ' + args.count + ' C2D message(s)';
  await allReceived;
  stage = 'closing';
  await client.close();
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
