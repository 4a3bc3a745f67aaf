#!/usr/bin/env node
// Bench peer: device-to-cloud telemetry from many devices with the official Node device SDK
// (azure-iot-device 1.18.4 + azure-iot-device-mqtt 1.16.4, MQTT/TLS), for benches/telemetry.rs.
//
// Opens one Client per line of --connection-strings (the hub's device connection strings: the
// port comes from GatewayHostName, as in node_device.js; the CA from `setOptions({ca})`), then
// runs --rounds rounds, each started by a line "go" on stdin: every device sends --count
// messages one after the other (`sendEvent` resolves on the PUBACK), all devices at once. Each
// message has a small JSON body and the properties flow=--flow, round=N and sent-us (the wall
// clock just before the send, in microseconds since the Unix epoch), from which the bench's
// reader computes the latency. The SDK is used unmodified.
//
// Output on stdout, one line each: "ready" once every device is open; per round one JSON object
// {"round": N, "start_us": T0, "acked_us": T1}. Exit codes: 0 after the last round and close();
// 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.
//
//   NODE_PATH=DIR/node_modules node node_telemetry_bench.js --connection-strings FILE \
//     --ca-file ca.pem --count 10 --rounds 6 --flow node
'use strict';

const fs = require('fs');
const readline = require('readline');

function usage(text) {
  process.stderr.write('node_telemetry_bench: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const names = ['connection-strings', 'ca-file', 'count', 'rounds', 'flow', 'timeout'];
  const args = { count: '10', rounds: '6', flow: 'node', timeout: '600' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
    args[name] = argv[i + 1];
  }
  for (const name of ['connection-strings', 'ca-file']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
  for (const name of ['count', 'rounds', 'timeout']) {
    args[name] = Number(args[name]);
    if (!(args[name] > 0)) usage('--' + name + ' must be > 0');
  }
  return args;
}

const nowUs = () => Number(process.hrtime.bigint() / 1000n - hrtimeOffsetUs);
// Wall clock in microseconds from a monotonic source: Date.now() has millisecond resolution.
const hrtimeOffsetUs = process.hrtime.bigint() / 1000n - BigInt(Date.now()) * 1000n;

const args = parseArgs(process.argv.slice(2));
let stage = 'starting';

function fail(code, text) {
  process.stderr.write('node_telemetry_bench: ' + text + '\n', () => process.exit(code));
}

setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's while ' + stage), args.timeout * 1000).unref();

const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

(async () => {
  const ca = fs.readFileSync(args['ca-file'], 'utf8');
  const connectionStrings = fs
    .readFileSync(args['connection-strings'], 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  stage = 'opening ' + connectionStrings.length + ' clients';
  const clients = await Promise.all(
    connectionStrings.map(async (cs) => {
      const client = Client.fromConnectionString(cs, Mqtt);
      client.on('error', (e) => fail(1, 'client error while ' + stage + ': ' + ((e && e.stack) || e)));
      await client.setOptions({ ca });
      await client.open();
      return client;
    })
  );
  process.stdout.write('ready\n');

  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  for (let round = 0; round < args.rounds; round++) {
    stage = 'waiting for go ' + round;
    const line = await lines.next();
    if (line.done || line.value.trim() !== 'go') fail(1, "expected 'go' on stdin, got " + JSON.stringify(line.value));
    stage = 'round ' + round;
    const startUs = nowUs();
    await Promise.all(
      clients.map(async (client, device) => {
        for (let k = 0; k < args.count; k++) {
          const message = new Message(JSON.stringify({ device, seq: k }));
          message.properties.add('flow', args.flow);
          message.properties.add('round', String(round));
          message.properties.add('sent-us', String(nowUs()));
          await client.sendEvent(message);
        }
      })
    );
    process.stdout.write(JSON.stringify({ round, start_us: startUs, acked_us: nowUs() }) + '\n');
  }
  stage = 'closing';
  await Promise.all(clients.map((client) => client.close()));
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
