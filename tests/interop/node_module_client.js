#!/usr/bin/env node
// Interop peer: the official Node device SDK's module client (azure-iot-device 1.18.4
// ModuleClient + azure-iot-device-mqtt 1.16.4) connecting with a module connection string and
// sending telemetry, as the Node e2e `module_messaging.js` does.
//
// Unmodified SDK; the port rides in `GatewayHostName=localhost:PORT` of the hub's connection
// string and the CA is given with `setOptions({ ca })` (see node_device.js).
//
// Output on stdout, one line each: `connected` once open, `sent` after each acknowledged
// message (message ids "node-module-1", ...). Exit codes: 0 after --count messages and close();
// 1 on an error; 2 on timeout; 64 on bad arguments.
//
//   NODE_PATH=DIR/node_modules node node_module_client.js \
//     --connection-string "HostName=localhost;DeviceId=dev1;ModuleId=m1;SharedAccessKey=...;GatewayHostName=localhost:18883" \
//     --ca-file ca.pem --text hello --count 1 --timeout 60
'use strict';

const fs = require('fs');

function usage(text) {
  process.stderr.write('node_module_client: ' + text + '\n');
  process.exit(64);
}

const names = ['connection-string', 'ca-file', 'text', 'count', 'timeout'];
const args = { text: 'hello from a Node module', count: '1', timeout: '60' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
  args[name] = argv[i + 1];
}
for (const name of ['connection-string', 'ca-file']) {
  if (args[name] === undefined) usage('--' + name + ' is required');
}
args.count = Number(args.count);
args.timeout = Number(args.timeout);
if (!(Number.isInteger(args.count) && args.count >= 0)) usage('--count must be an integer >= 0');
if (!(args.timeout > 0)) usage('--timeout must be > 0');

let stage = 'starting';
function fail(code, text) {
  process.stderr.write('node_module_client: ' + text + '\n', () => process.exit(code));
}
setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's while ' + stage), args.timeout * 1000).unref();

const { ModuleClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

(async () => {
  const ca = fs.readFileSync(args['ca-file'], 'utf8');
  const client = ModuleClient.fromConnectionString(args['connection-string'], Mqtt);
  client.on('error', (e) => fail(1, 'client error while ' + stage + ': ' + ((e && e.stack) || e)));
  stage = 'setting options';
  await client.setOptions({ ca });
  stage = 'opening the client';
  await client.open();
  process.stdout.write('connected\n');
  for (let i = 1; i <= args.count; i++) {
    stage = 'sending message ' + i;
    const message = new Message(args.text);
    message.messageId = 'node-module-' + i;
    await client.sendEvent(message);
    process.stdout.write('sent\n');
  }
  stage = 'closing';
  await client.close();
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
