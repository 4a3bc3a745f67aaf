#!/usr/bin/env node
// Interop peer: the official Node service SDK (azure-iothub 1.16.6) managing module
// identities over HTTPS the way the Node e2e `module_crud.js` does (azure-iot-sdk-node
// `e2etests/test/module_crud.js`): addModule with ids only (the hub generates keys), getModule,
// getModulesOnDevice, updateModule swapping the keys with the etag and with forceUpdate,
// removeModule by object and by ids, then getModule must fail.
//
// Unmodified SDK except for the HTTPS port patch of node_service_twin_methods.js: `https.request`
// gets --https-port for port-free requests to `localhost` (azure-iot-http-base `http.ts`
// `buildRequest` passes no port). The connection string keeps a port-free HostName, which is
// the SAS `sr`. The CA comes from NODE_EXTRA_CA_CERTS, set by the caller.
//
// Output on stdout, one JSON object per line, each with "step":
//   add, get, list, update_etag, update_stale, update_force, remove_object, remove_ids,
//   get_removed, add_unknown_device
// A step that failed as expected carries {"error": <constructor name>, "status": <HTTP status>,
// "code": <iothub-errorcode>}. Exit codes: 0 when every step ran; 1 on an unexpected error; 2 on
// timeout; 64 on bad arguments.
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node node_module_registry.js \
//     --connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
//     --https-port 18443 --device-id dev1 --module-id m1
'use strict';

function usage(text) {
  process.stderr.write('node_module_registry: ' + text + '\n');
  process.exit(64);
}

const names = ['connection-string', 'https-port', 'device-id', 'module-id', 'timeout'];
const args = { timeout: '60' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
  args[name] = argv[i + 1];
}
for (const name of ['connection-string', 'https-port', 'device-id', 'module-id']) {
  if (args[name] === undefined) usage('--' + name + ' is required');
}
args.timeout = Number(args.timeout);
if (!(args.timeout > 0)) usage('--timeout must be > 0');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
function fail(code, text) {
  process.stderr.write('node_module_registry: ' + text + '\n', () => process.exit(code));
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

function describe(module) {
  const keys = (module.authentication && module.authentication.symmetricKey) || {};
  return {
    deviceId: module.deviceId,
    moduleId: module.moduleId,
    etag: module.etag,
    generationId: module.generationId,
    connectionState: module.connectionState,
    primaryKey: keys.primaryKey,
    secondaryKey: keys.secondaryKey,
  };
}

function describeError(e) {
  const response = e.response || {};
  const headers = response.headers || {};
  return {
    error: e.constructor && e.constructor.name,
    status: response.statusCode,
    code: headers['iothub-errorcode'],
  };
}

// Runs a call expected to fail; an unexpected success is a test failure.
async function expectError(step, call) {
  try {
    const result = await call();
    fail(1, step + ' succeeded unexpectedly: ' + JSON.stringify(result && result.responseBody));
    return;
  } catch (e) {
    emit(Object.assign({ step }, describeError(e)));
  }
}

(async () => {
  const registry = Registry.fromConnectionString(args['connection-string']);
  const deviceId = args['device-id'];
  const moduleId = args['module-id'];

  const added = (await registry.addModule({ deviceId, moduleId })).responseBody;
  emit(Object.assign({ step: 'add' }, describe(added)));
  const found = (await registry.getModule(deviceId, moduleId)).responseBody;
  emit(Object.assign({ step: 'get' }, describe(found)));
  const list = (await registry.getModulesOnDevice(deviceId)).responseBody;
  emit({ step: 'list', moduleIds: list.map((m) => m.moduleId).sort() });

  // Swap the keys, sending back the object read, its etag in If-Match.
  const swapped = JSON.parse(JSON.stringify(found));
  const keys = swapped.authentication.symmetricKey;
  [keys.primaryKey, keys.secondaryKey] = [keys.secondaryKey, keys.primaryKey];
  const updated = (await registry.updateModule(swapped)).responseBody;
  emit(Object.assign({ step: 'update_etag' }, describe(updated)));
  await expectError('update_stale', () => registry.updateModule(swapped));
  // forceUpdate: If-Match "*", no etag needed.
  const forced = JSON.parse(JSON.stringify(updated));
  delete forced.etag;
  const forcedResult = (await registry.updateModule(forced, true)).responseBody;
  emit(Object.assign({ step: 'update_force' }, describe(forcedResult)));

  // Remove by object (its etag) then the second module by ids ("*"). By object only the
  // callback form works: the promise form of `removeModule(module)` throws "Argument 'done'
  // cannot be falsy" in azure-iothub 1.16.6 (`_removeModule` takes `done` from the second
  // argument); module_crud.js uses callbacks.
  await new Promise((resolve, reject) =>
    registry.removeModule(forcedResult, (err) => (err ? reject(err) : resolve())));
  emit({ step: 'remove_object' });
  await registry.addModule({ deviceId, moduleId: moduleId + '-2' });
  await registry.removeModule(deviceId, moduleId + '-2');
  emit({ step: 'remove_ids' });
  await expectError('get_removed', () => registry.getModule(deviceId, moduleId));
  await expectError('add_unknown_device', () =>
    registry.addModule({ deviceId: 'no-such-device', moduleId }));
  process.exit(0);
})().catch((e) => fail(1, 'failed: ' + ((e && e.stack) || e)));
