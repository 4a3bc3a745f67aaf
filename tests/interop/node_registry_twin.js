#!/usr/bin/env node
// Interop peer: the official Node service SDK (azure-iothub 1.16.6) with twins and direct
// methods over HTTPS. The SDK is used unmodified except for one patch: it dials port 443
// (`https.request({ host })` in azure-iothub `common-http/http.ts`, where a `HostName` with a
// port would be looked up as a host name), so `https.request` is wrapped to add --https-port
// for `localhost`. The CA is trusted through NODE_EXTRA_CA_CERTS, which the caller sets.
//
// Steps, one JSON line each on stdout:
//   {"step":"get","reported":…,"desiredVersion":N,"etag":…}     Registry.getTwin(ID)
//   {"step":"update","desiredVersion":N}                        twin.update({properties:{desired}})
//                                                               (If-Match: the twin's etag)
//   {"step":"stale_etag","name":…}                              the same patch with the old etag
//                                                               through Registry.updateTwin
//   {"step":"invoke","status":S,"payload":…}                    Client.invokeDeviceMethod(ID,
//                                                               {methodName:"echo", payload,
//                                                               responseTimeoutInSeconds: 30,
//                                                               connectTimeoutInSeconds: 30})
//   {"step":"offline","statusCode":404}                         the same on --offline-device-id
// Exit codes: 0 after every step; 1 on an error; 2 on timeout; 64 on bad arguments.
'use strict';

function usage(text) {
  process.stderr.write('node_registry_twin: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const names = ['connection-string', 'https-port', 'device-id', 'offline-device-id', 'desired', 'payload', 'timeout'];
  const args = { desired: '{"rate":7}', payload: '{"n":1}', timeout: '60' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
    args[name] = argv[i + 1];
  }
  for (const name of ['connection-string', 'https-port', 'device-id', 'offline-device-id']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
  try {
    args.desired = JSON.parse(args.desired);
    args.payload = JSON.parse(args.payload);
  } catch (e) {
    usage('--desired and --payload must be JSON');
  }
  args.timeout = Number(args.timeout);
  if (!(args.timeout > 0)) usage('--timeout must be > 0');
  return args;
}

const args = parseArgs(process.argv.slice(2));
let stage = 'starting';
const out = (value) => process.stdout.write(JSON.stringify(value) + '\n');
function fail(code, text) {
  process.stderr.write('node_registry_twin: ' + text + '\n', () => process.exit(code));
}
setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's while ' + stage), args.timeout * 1000).unref();

const https = require('https');
const originalRequest = https.request;
https.request = (options, ...rest) => {
  if (options && options.host === 'localhost' && !options.port) {
    options = Object.assign({}, options, { port: Number(args['https-port']) });
  }
  return originalRequest(options, ...rest);
};

const { Registry, Client } = require('azure-iothub');

(async () => {
  const registry = Registry.fromConnectionString(args['connection-string']);
  stage = 'getTwin';
  const twin = (await registry.getTwin(args['device-id'])).responseBody;
  const reported = {};
  for (const [k, v] of Object.entries(twin.properties.reported)) {
    if (!k.startsWith('$')) reported[k] = v;
  }
  const etag = twin.etag;
  out({ step: 'get', reported, desiredVersion: twin.properties.desired.$version, etag });
  stage = 'twin.update';
  const patch = { properties: { desired: args.desired } };
  // update() copies the answer's properties, tags and etag into the twin.
  await twin.update(patch);
  out({ step: 'update', desiredVersion: twin.properties.desired.$version });
  stage = 'updateTwin with a stale etag';
  try {
    await registry.updateTwin(args['device-id'], patch, etag);
    fail(1, 'an update with a stale etag succeeded');
    return;
  } catch (e) {
    out({ step: 'stale_etag', name: e.name });
  }
  stage = 'invokeDeviceMethod';
  const client = Client.fromConnectionString(args['connection-string']);
  const method = { methodName: 'echo', payload: args.payload, responseTimeoutInSeconds: 30, connectTimeoutInSeconds: 30 };
  const result = (await client.invokeDeviceMethod(args['device-id'], method)).result;
  out({ step: 'invoke', status: result.status, payload: result.payload });
  stage = 'invokeDeviceMethod on an offline device';
  try {
    await client.invokeDeviceMethod(args['offline-device-id'], { methodName: 'echo', payload: null, responseTimeoutInSeconds: 5 });
    fail(1, 'a method call on an offline device succeeded');
    return;
  } catch (e) {
    out({ step: 'offline', statusCode: e.response && e.response.statusCode });
  }
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
