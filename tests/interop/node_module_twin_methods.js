#!/usr/bin/env node
// Interop peer: the official Node service SDK (azure-iothub 1.16.6) on a module's twin and
// methods, as the Node e2e `module_twin.js` and `module_methods.js` do (azure-iot-sdk-node
// `e2etests/test/`): `Registry.getModuleTwin`, `Twin.update` of desired properties (with the
// twin's etag), then `Client.invokeDeviceMethod(deviceId, moduleId, params)` over HTTPS.
//
// Unmodified SDK except for the HTTPS port patch of node_service_twin_methods.js (`https.request`
// gets --https-port for port-free `localhost` requests); the CA comes from NODE_EXTRA_CA_CERTS.
//
// Output on stdout, one JSON object per line:
//   {"step":"get_module_twin","deviceId":...,"moduleId":...,"reported":{...},"desired_version":N}
//   {"step":"update","desired_version":N}
//   {"step":"invoke","status":S,"payload":P}
// Exit codes: 0 when every step ran; 1 on an error; 2 on timeout; 64 on bad arguments.
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node node_module_twin_methods.js \
//     --connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
//     --https-port 18443 --device-id dev1 --module-id m1 --desired '{"fake_key":"v"}' \
//     --method my_method --payload '{"n":1}'
'use strict';

function usage(text) {
  process.stderr.write('node_module_twin_methods: ' + text + '\n');
  process.exit(64);
}

const required = ['connection-string', 'https-port', 'device-id', 'module-id', 'desired', 'method', 'payload'];
const args = { timeout: '60' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  if (!required.concat(['timeout']).includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
  args[name] = argv[i + 1];
}
for (const name of required) {
  if (args[name] === undefined) usage('--' + name + ' is required');
}
try {
  args.desired = JSON.parse(args.desired);
  args.payload = JSON.parse(args.payload);
} catch (e) {
  usage('not JSON: ' + e);
}
args.timeout = Number(args.timeout);
if (!(args.timeout > 0)) usage('--timeout must be > 0');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
setTimeout(() => {
  process.stderr.write('node_module_twin_methods: timeout after ' + args.timeout + 's\n');
  process.exit(2);
}, args.timeout * 1000).unref();

const https = require('https');
const originalRequest = https.request;
https.request = function (options, ...rest) {
  if (options && typeof options === 'object' && !(options instanceof URL) &&
      options.host === 'localhost' && !options.port) {
    options = Object.assign({}, options, { port: Number(args['https-port']) });
  }
  return originalRequest.call(this, options, ...rest);
};

const { Registry, Client } = require('azure-iothub');

(async () => {
  let step = 'get_module_twin';
  try {
    const registry = Registry.fromConnectionString(args['connection-string']);
    const twin = (await registry.getModuleTwin(args['device-id'], args['module-id'])).responseBody;
    const reported = {};
    for (const key of Object.keys(twin.properties.reported)) {
      if (!key.startsWith('$')) reported[key] = twin.properties.reported[key];
    }
    emit({
      step,
      deviceId: twin.deviceId,
      moduleId: twin.moduleId,
      reported,
      desired_version: twin.properties.desired.$version,
    });
    step = 'update';
    await twin.update({ properties: { desired: args.desired } });
    emit({ step, desired_version: twin.properties.desired.$version });
    step = 'invoke';
    const client = Client.fromConnectionString(args['connection-string']);
    const result = (await client.invokeDeviceMethod(args['device-id'], args['module-id'], {
      methodName: args.method,
      payload: args.payload,
      connectTimeoutInSeconds: 30,
      responseTimeoutInSeconds: 45,
    })).result;
    emit({ step, status: result.status, payload: result.payload });
  } catch (e) {
    process.stderr.write('node_module_twin_methods: ' + step + ' failed: ' + ((e && e.stack) || e) + '\n');
    process.exit(1);
  }
  process.exit(0);
})();
