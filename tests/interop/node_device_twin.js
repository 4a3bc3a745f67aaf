#!/usr/bin/env node
// Interop peer: the official Node device SDK (azure-iot-device 1.18.4 + azure-iot-device-mqtt
// 1.16.4) with twins and direct methods over MQTT/TLS. Connection string and CA as in
// node_device.js (the port rides in GatewayHostName; the CA goes to setOptions({ ca })).
//
// After opening it:
//   1. registers onDeviceMethod for every name in --method-names (each subscribes to
//      $iothub/methods/POST/#), answering with status 200 and {"echo": <payload>, "by": "node"};
//   2. reads its twin (getTwin) and prints {"twin": {"desired": …, "reported": …}};
//   3. updates reported properties with --reported (twin.properties.reported.update) and prints
//      "reported";
//   4. listens to twin 'properties.desired' and prints {"desired": <properties>} for each event
//      (the SDK fires once with the whole desired document, then once per patch), then prints
//      "ready" once both subscriptions have their SUBACK (learnt by wrapping the transport's
//      enableMethods and enableTwinDesiredPropertiesUpdates, as node_device.js does for C2D);
//   5. prints {"method": <name>, "payload": <payload>} for each method request;
//   6. exits 0 after --patches desired events past the first and --methods method requests.
// Exit codes: 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.
//
//   NODE_PATH=DIR/node_modules node node_device_twin.js --connection-string "…" --ca-file ca.pem \
//     --reported '{"a":1}' --method-names echo --patches 1 --methods 1 --timeout 60
'use strict';

const fs = require('fs');

function usage(text) {
  process.stderr.write('node_device_twin: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const names = ['connection-string', 'ca-file', 'reported', 'method-names', 'patches', 'methods', 'timeout'];
  const args = { reported: '{"node":true}', 'method-names': 'echo', patches: '1', methods: '1', timeout: '60' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
    args[name] = argv[i + 1];
  }
  for (const name of ['connection-string', 'ca-file']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
  try {
    args.reported = JSON.parse(args.reported);
  } catch (e) {
    usage('--reported is not JSON');
  }
  for (const name of ['patches', 'methods', 'timeout']) {
    args[name] = Number(args[name]);
    if (!(args[name] >= 0)) usage('--' + name + ' must be a number >= 0');
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
let stage = 'starting';

function out(value) {
  process.stdout.write((typeof value === 'string' ? value : JSON.stringify(value)) + '\n');
}

function fail(code, text) {
  process.stderr.write('node_device_twin: ' + text + '\n', () => process.exit(code));
}

setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's while ' + stage), args.timeout * 1000).unref();

const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

(async () => {
  const ca = fs.readFileSync(args['ca-file'], 'utf8');
  const client = Client.fromConnectionString(args['connection-string'], Mqtt);
  client.on('error', (e) => fail(1, 'client error while ' + stage + ': ' + ((e && e.stack) || e)));
  await client.setOptions({ ca });
  stage = 'opening the client';
  await client.open();

  let patches = -1; // the first 'properties.desired' event is the whole document
  let methods = 0;
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  const check = () => {
    if (patches >= args.patches && methods >= args.methods) done();
  };

  // Learn when the subscriptions the SDK makes in the background are in place.
  const transport = client._transport;
  const whenEnabled = (name) =>
    new Promise((resolve, reject) => {
      const original = transport[name].bind(transport);
      transport[name] = (callback) =>
        original((err, result) => {
          if (err) reject(err);
          else resolve();
          callback(err, result);
        });
    });
  const methodsEnabled = whenEnabled('enableMethods');
  const desiredEnabled = whenEnabled('enableTwinDesiredPropertiesUpdates');

  stage = 'registering method handlers';
  for (const name of args['method-names'].split(',')) {
    client.onDeviceMethod(name, (request, response) => {
      out({ method: request.methodName, payload: request.payload === undefined ? null : request.payload });
      response.send(200, { echo: request.payload, by: 'node' }, (err) => {
        if (err) fail(1, 'method response failed: ' + err);
        methods += 1;
        check();
      });
    });
  }

  stage = 'getting the twin';
  const twin = await client.getTwin();
  out({ twin: { desired: twin.properties.desired, reported: twin.properties.reported } });
  stage = 'updating reported properties';
  await new Promise((resolve, reject) =>
    twin.properties.reported.update(args.reported, (err) => (err ? reject(err) : resolve()))
  );
  out('reported');

  stage = 'subscribing to desired properties';
  const firstDesired = new Promise((resolve) => {
    twin.on('properties.desired', (delta) => {
      if (patches >= 0) out({ desired: delta });
      patches += 1;
      resolve();
      check();
    });
  });
  await firstDesired;
  stage = 'waiting for the SUBACKs of the method and desired subscriptions';
  await methodsEnabled;
  await desiredEnabled;
  out('ready');
  stage = 'waiting for desired patches and method requests';
  check();
  await finished;
  stage = 'closing';
  await client.close();
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
