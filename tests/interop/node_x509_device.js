#!/usr/bin/env node
// Interop peer: the official Node device SDK (azure-iot-device 1.18.4 + azure-iot-device-mqtt
// 1.16.4) as an X.509 device: `HostName=localhost:PORT;DeviceId=…;x509=true` (the SDK keeps
// only HostName and DeviceId of an x509 string, so the port goes in HostName) and
// `client.setOptions({ cert, key, ca })`, as the official e2e tests do
// (azure-iot-sdk-node `e2etests/test/device_identity_helper.js`, `authentication.js`). The SDK
// is used unmodified. Run with NODE_PATH pointing at the node_modules made by setup-node.sh.
//
// Output on stdout, one line each:
//   connected      once open
//   sent           after the --send-telemetry message was acknowledged
//   refused        (with --expect-refused true) when open failed with UnauthorizedError
// Exit codes: 0 on success; 1 on an error; 2 on timeout; 64 on bad arguments.
//
//   NODE_PATH=DIR/node_modules node node_x509_device.js \
//     --connection-string "HostName=localhost:18883;DeviceId=dev1;x509=true" \
//     --cert-file dev1.pem --key-file dev1.key --ca-file ca.pem --send-telemetry hello --timeout 60
'use strict';

const fs = require('fs');

function usage(text) {
  process.stderr.write('node_x509_device: ' + text + '\n');
  process.exit(64);
}

const names = ['connection-string', 'cert-file', 'key-file', 'ca-file', 'send-telemetry', 'expect-refused', 'timeout'];
const args = { timeout: '60', 'expect-refused': 'false' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
  args[name] = argv[i + 1];
}
for (const name of ['connection-string', 'cert-file', 'key-file', 'ca-file']) {
  if (args[name] === undefined) usage('--' + name + ' is required');
}
const expectRefused = args['expect-refused'] === 'true';
let stage = 'starting';

function out(line) {
  process.stdout.write(line + '\n');
}

function fail(code, text) {
  process.stderr.write('node_x509_device: ' + text + '\n', () => process.exit(code));
}

setTimeout(() => fail(2, 'timeout while ' + stage), Number(args.timeout) * 1000).unref();

const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

(async () => {
  const client = Client.fromConnectionString(args['connection-string'], Mqtt);
  client.on('error', (e) => fail(1, 'client error while ' + stage + ': ' + ((e && e.stack) || e)));
  stage = 'setting options';
  await client.setOptions({
    cert: fs.readFileSync(args['cert-file'], 'utf8'),
    key: fs.readFileSync(args['key-file'], 'utf8'),
    ca: fs.readFileSync(args['ca-file'], 'utf8'),
  });
  stage = 'opening the client';
  try {
    await client.open();
  } catch (e) {
    if (expectRefused && e && e.constructor && e.constructor.name === 'UnauthorizedError') {
      out('refused');
      process.exit(0);
    }
    throw e;
  }
  if (expectRefused) fail(1, 'the hub accepted a certificate it should refuse');
  out('connected');
  if (args['send-telemetry'] !== undefined) {
    stage = 'sending telemetry';
    const message = new Message(args['send-telemetry']);
    message.messageId = 'node-x509-1';
    await client.sendEvent(message);
    out('sent');
  }
  stage = 'closing';
  await client.close();
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
