#!/usr/bin/env node
// Interop peer: the official Node service SDK (azure-iothub 1.16.6) listing devices and
// managing them in bulk (azure-iot-sdk-node `service/src/registry.ts`: `list` asks
// `GET /devices/?api-version=...` with a trailing slash; `addDevices`, `updateDevices` and
// `removeDevices` POST /devices with `importMode` create, Update / UpdateIfMatchETag and
// Delete / DeleteIfMatchETag, `_processBulkDevices`), and an edge device with a leaf device
// under it (`deviceScope` / `parentScopes`).
//
// Unmodified SDK except for the HTTPS port patch of node_module_registry.js. The CA comes from
// NODE_EXTRA_CA_CERTS, set by the caller.
//
// Output on stdout, one JSON object per line, each with "step":
//   add (bulk result), add_again (bulk result with errors: already exists), list (ids),
//   update_etag (bulk result), update_stale (bulk result with errors), update_force, get
//   (status after the updates), edge (the edge and leaf devices' scopes), remove_stale,
//   remove (bulk results), list_after (ids).
// A bulk result is {"isSuccessful", "errors": [[deviceId, errorCode]...]}; a bulk call that
// the SDK reports as an error (HTTP 400 with a result body) is read from the error's
// responseBody. Exit codes: 0 when every step ran; 1 on an unexpected error; 2 on timeout; 64
// on bad arguments.
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node node_registry_bulk.js \
//     --connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
//     --https-port 18443
'use strict';

function usage(text) {
  process.stderr.write('node_registry_bulk: ' + text + '\n');
  process.exit(64);
}

const names = ['connection-string', 'https-port', 'timeout'];
const args = { timeout: '60' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
  args[name] = argv[i + 1];
}
for (const name of ['connection-string', 'https-port']) {
  if (args[name] === undefined) usage('--' + name + ' is required');
}
args.timeout = Number(args.timeout);
if (!(args.timeout > 0)) usage('--timeout must be > 0');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
function fail(code, text) {
  process.stderr.write('node_registry_bulk: ' + text + '\n', () => process.exit(code));
}
setTimeout(() => fail(2, 'timeout after ' + args.timeout + 's'), args.timeout * 1000).unref();

const https = require('https');
const originalRequest = https.request;
https.request = function (options, ...rest) {
  if (options && typeof options === 'object' && !(options instanceof URL) &&
      options.host === 'localhost' && !options.port) {
    options = Object.assign({}, options, { port: Number(args['https-port']) });
  }
  return originalRequest.call(this, options, ...rest);
};

const { Registry } = require('azure-iothub');

function summary(result) {
  return {
    isSuccessful: result.isSuccessful,
    errors: (result.errors || []).map((e) => [e.deviceId, e.errorCode]),
  };
}

// A bulk call: its result, whether the SDK resolved (HTTP 200) or rejected (HTTP 400 with the
// result in the body).
async function bulk(call) {
  try {
    return summary((await call()).responseBody);
  } catch (e) {
    const body = e.responseBody || (e.response && e.response.body);
    if (!body) throw e;
    const parsed = typeof body === 'string' ? JSON.parse(body) : body;
    return Object.assign({ rejected: true, status: e.response && e.response.statusCode },
      summary(parsed));
  }
}

async function ids(registry) {
  const devices = (await registry.list()).responseBody;
  return devices.map((d) => d.deviceId).sort();
}

(async () => {
  const registry = Registry.fromConnectionString(args['connection-string']);
  const devices = ['bulk-1', 'bulk-2', 'bulk-3'].map((deviceId) => ({ deviceId }));

  emit(Object.assign({ step: 'add' }, await bulk(() => registry.addDevices(devices))));
  emit(Object.assign({ step: 'add_again' },
    await bulk(() => registry.addDevices([{ deviceId: 'bulk-1' }, { deviceId: 'bulk-4' }]))));
  emit({ step: 'list', ids: await ids(registry) });

  // Disable bulk-1 and bulk-2 with their etags, then again with the now stale etags.
  const read = [];
  for (const id of ['bulk-1', 'bulk-2']) read.push((await registry.get(id)).responseBody);
  const disabled = read.map((d) => Object.assign(JSON.parse(JSON.stringify(d)),
    { status: 'disabled' }));
  emit(Object.assign({ step: 'update_etag' },
    await bulk(() => registry.updateDevices(disabled, false))));
  emit(Object.assign({ step: 'update_stale' },
    await bulk(() => registry.updateDevices(disabled, false))));
  const enabled = [{ deviceId: 'bulk-2', status: 'enabled' }];
  emit(Object.assign({ step: 'update_force' },
    await bulk(() => registry.updateDevices(enabled, true))));
  const statuses = {};
  for (const id of ['bulk-1', 'bulk-2']) statuses[id] = (await registry.get(id)).responseBody.status;
  emit({ step: 'get', statuses });

  // An edge device and a leaf device placed under it by deviceScope.
  const edge = (await registry.create({ deviceId: 'bulk-edge', capabilities: { iotEdge: true } }))
    .responseBody;
  const leaf = (await registry.create({ deviceId: 'bulk-leaf', deviceScope: edge.deviceScope }))
    .responseBody;
  const leafRead = (await registry.get('bulk-leaf')).responseBody;
  emit({
    step: 'edge',
    edgeScope: edge.deviceScope,
    edgeParents: edge.parentScopes,
    leafScope: leaf.deviceScope,
    leafParents: leafRead.parentScopes,
  });

  const stale = read.map((d) => ({ deviceId: d.deviceId, etag: d.etag }));
  emit(Object.assign({ step: 'remove_stale' },
    await bulk(() => registry.removeDevices(stale, false))));
  const all = ['bulk-1', 'bulk-2', 'bulk-3', 'bulk-4', 'bulk-leaf'].map((deviceId) => ({ deviceId }));
  emit(Object.assign({ step: 'remove' }, await bulk(() => registry.removeDevices(all, true))));
  emit({ step: 'list_after', ids: await ids(registry) });
  process.exit(0);
})().catch((e) => fail(1, 'failed: ' + ((e && e.stack) || e)));
