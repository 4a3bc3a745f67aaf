#!/usr/bin/env node
// Interop peer: the official Node service SDK (azure-iothub 1.16.6) reading and writing a
// device's twin (Registry.getTwin, Twin.update) and invoking a direct method on it
// (Client.invokeDeviceMethod), both over HTTPS.
//
// The SDK is used unmodified except for a port patch: azure-iot-http-base `http.ts`
// `buildRequest` calls `https.request({host: HostName, ...})` without a port, so
// `https.request` is wrapped to add --https-port to requests for `localhost` without one (the
// connection string keeps a port-free HostName, which is also the SAS `sr`). The CA is trusted
// through NODE_EXTRA_CA_CERTS, set by the caller. Run with NODE_PATH pointing at the
// node_modules of setup-node.sh.
//
// Output on stdout, one JSON object per line (the same steps as py_service_twin_methods.py):
//   {"step":"get_twin","reported":{...},"reported_version":M,"desired_version":N,"etag":"..."}
//   {"step":"update_twin","desired_version":N}
//   {"step":"invoke","status":S,"payload":P}
// Exit codes: 0 when every step ran; 1 on an error; 2 on timeout; 64 on bad arguments.
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node node_service_twin_methods.js \
//     --connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=..." \
//     --https-port 18443 --device-id dev1 --desired '{"interval":7}' --method echo --payload '{"n":1}'
'use strict';

function usage(text) {
  process.stderr.write('node_service_twin_methods: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const names = ['connection-string', 'https-port', 'device-id', 'desired', 'method', 'payload', 'timeout'];
  const args = { timeout: '60' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
    args[name] = argv[i + 1];
  }
  for (const name of ['connection-string', 'https-port', 'device-id', 'desired', 'method', 'payload']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
  try {
    args.desired = JSON.parse(args.desired);
    args.payload = JSON.parse(args.payload);
  } catch (e) {
    usage('not JSON: ' + e);
  }
  args['https-port'] = Number(args['https-port']);
  args.timeout = Number(args.timeout);
  if (!(args.timeout > 0)) usage('--timeout must be > 0');
  return args;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function patchHttpsPort(port) {
  const https = require('https');
  const original = https.request;
  https.request = function (options, ...rest) {
    if (options && typeof options === 'object' && !(options instanceof URL) &&
        options.host === 'localhost' && !options.port) {
      options = Object.assign({}, options, { port: port });
    }
    return original.call(this, options, ...rest);
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const timer = setTimeout(() => {
    process.stderr.write('node_service_twin_methods: timeout after ' + args.timeout + 's\n');
    process.exit(2);
  }, args.timeout * 1000);
  patchHttpsPort(args['https-port']);
  const { Registry, Client } = require('azure-iothub');
  let step = 'init';
  try {
    const registry = Registry.fromConnectionString(args['connection-string']);
    step = 'get_twin';
    const twin = (await registry.getTwin(args['device-id'])).responseBody;
    const reported = Object.assign({}, twin.properties.reported);
    const desired = twin.properties.desired;
    const plain = {};
    for (const key of Object.keys(reported)) {
      if (!key.startsWith('$')) plain[key] = reported[key];
    }
    emit({
      step: 'get_twin',
      reported: plain,
      reported_version: reported.$version,
      desired_version: desired.$version,
      etag: twin.etag,
    });
    step = 'update_twin';
    // Twin.update sends If-Match with the twin's etag and copies the hub's answer into `twin`.
    await twin.update({ properties: { desired: args.desired } });
    emit({ step: 'update_twin', desired_version: twin.properties.desired.$version });
    step = 'invoke';
    const client = Client.fromConnectionString(args['connection-string']);
    const result = (await client.invokeDeviceMethod(args['device-id'], {
      methodName: args.method,
      payload: args.payload,
      responseTimeoutInSeconds: 30,
      connectTimeoutInSeconds: 10,
    })).result;
    emit({ step: 'invoke', status: result.status, payload: result.payload });
  } catch (e) {
    emit({ step: step, error: String(e && e.message || e) });
    process.stderr.write('node_service_twin_methods: ' + step + ' failed: ' + (e && e.stack || e) + '\n');
    process.exit(1);
  }
  clearTimeout(timer);
  process.exit(0);
}

main();
