#!/usr/bin/env node
// Bench peer: the official Node service SDK (azure-iothub 1.16.6) sending C2D messages with
// `Client.send`, for benches/service.rs: --in-flight 1 awaits each send before the next;
// --in-flight K keeps K promises outstanding (K workers, each awaiting its own sends).
//
// Port and CA as in node_service.js: `HostName=localhost:PORT` (azure-iothub's
// common-amqp/amqp.ts `Amqp.connect` takes the port from the `amqps://` URL) and
// NODE_EXTRA_CA_CERTS set by the caller; NODE_PATH points at setup-node.sh's node_modules.
//
// One warm-up send to --warmup-device (open, CBS, link attach) is not timed. Then --count
// messages go round-robin to the ids of --device-ids (a JSON list), each with a small JSON body
// and a message id (`bench-N`; azure-iothub sets none by itself), and the time is taken around
// them.
//
// Output on stdout, one line: {"count": N, "inFlight": K, "elapsed_s": seconds}
// Exit codes: 0 on success; 1 on an error; 2 on timeout; 64 on bad arguments. Errors go to stderr.
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node node_service_bench.js \
//     --connection-string "HostName=localhost:15671;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
//     --device-ids '["d0","d1"]' --warmup-device w --count 100 --in-flight 100
'use strict';

function usage(text) {
  process.stderr.write('node_service_bench: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const names = ['connection-string', 'device-ids', 'warmup-device', 'count', 'in-flight', 'timeout'];
  const args = { 'in-flight': '1', timeout: '300' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
    args[name] = argv[i + 1];
  }
  for (const name of ['connection-string', 'device-ids', 'warmup-device', 'count']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
  try {
    args['device-ids'] = JSON.parse(args['device-ids']);
  } catch (e) {
    usage('--device-ids is not JSON: ' + e);
  }
  if (!Array.isArray(args['device-ids']) || args['device-ids'].length === 0) {
    usage('--device-ids must be a non-empty JSON list');
  }
  for (const name of ['count', 'in-flight']) {
    args[name] = Number(args[name]);
    if (!(Number.isInteger(args[name]) && args[name] > 0)) usage('--' + name + ' must be an integer > 0');
  }
  args.timeout = Number(args.timeout);
  if (!(args.timeout > 0)) usage('--timeout must be > 0');
  return args;
}

const args = parseArgs(process.argv.slice(2));
let stage = 'starting';

function fail(code, text) {
  process.stderr.write('node_service_bench: ' + text + '\n', () => process.exit(code));
}

setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's while ' + stage), args.timeout * 1000).unref();

const { Client } = require('azure-iothub');
const { Message } = require('azure-iot-common');

function message(n) {
  const msg = new Message('{"bench":true,"n":0}');
  msg.messageId = 'bench-' + n;
  return msg;
}

(async () => {
  const ids = args['device-ids'];
  const client = Client.fromConnectionString(args['connection-string']);
  stage = 'opening the client';
  await client.open();
  stage = 'the warm-up send';
  await client.send(args['warmup-device'], message('warmup'));

  stage = 'the timed sends';
  let next = 0;
  async function worker() {
    while (next < args.count) {
      const n = next++;
      await client.send(ids[n % ids.length], message(n));
    }
  }
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(args['in-flight'], args.count) }, worker));
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  process.stdout.write(JSON.stringify({ count: args.count, inFlight: args['in-flight'], elapsed_s: elapsed }) + '\n');

  stage = 'closing';
  await client.close();
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
