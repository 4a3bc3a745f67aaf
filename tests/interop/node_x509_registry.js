#!/usr/bin/env node
// Interop peer: the official Node service SDK (azure-iothub 1.16.6) registering X.509 devices
// over HTTPS, as the official e2e tests do: `Registry.create` with
// `authentication: { x509Thumbprint: { primaryThumbprint } }` and no type (azure-iot-sdk-node
// `e2etests/test/authentication.js`; the SDK's `_normalizeAuthentication` sends `selfSigned`),
// with `type: 'selfSigned'`, and with `type: 'certificateAuthority'`
// (`e2etests/test/device_identity_helper.js`), then `Registry.get` of each.
//
// One port patch: azure-iot-http-base dials `HostName` on 443 (`https.request` with `host` and
// no port), so `https.request` is wrapped to send `localhost` requests to --https-port.
//
// Output on stdout: one JSON line per device, {"deviceId", "type", "primaryThumbprint",
// "secondaryThumbprint"} as `Registry.get` returned them. Exit codes: 0; 1 on an error; 2 on
// timeout; 64 on bad arguments. The CA comes from NODE_EXTRA_CA_CERTS (see peer.rs).
//
//   NODE_PATH=DIR/node_modules node node_x509_registry.js --connection-string "HostName=…" \
//     --https-port 18443 --self-signed ID=THUMBPRINT --typed ID=THUMBPRINT --ca-signed ID --timeout 60
'use strict';

function usage(text) {
  process.stderr.write('node_x509_registry: ' + text + '\n');
  process.exit(64);
}

const argv = process.argv.slice(2);
const args = { timeout: '60', creates: [] };
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  const value = argv[i + 1];
  if (value === undefined) usage('bad argument ' + argv[i]);
  if (name === 'connection-string' || name === 'timeout' || name === 'https-port') args[name] = value;
  else if (name === 'self-signed' || name === 'typed') {
    const [deviceId, thumbprint] = value.split('=');
    const authentication = { x509Thumbprint: { primaryThumbprint: thumbprint } };
    if (name === 'typed') authentication.type = 'selfSigned';
    args.creates.push({ deviceId, status: 'enabled', authentication });
  } else if (name === 'ca-signed') {
    args.creates.push({ deviceId: value, status: 'enabled', authentication: { type: 'certificateAuthority' } });
  } else usage('bad argument ' + argv[i]);
}
if (!args['connection-string']) usage('--connection-string is required');

let stage = 'starting';
function fail(code, text) {
  process.stderr.write('node_x509_registry: ' + text + '\n', () => process.exit(code));
}
setTimeout(() => fail(2, 'timeout while ' + stage), Number(args.timeout) * 1000).unref();

if (args['https-port']) {
  const https = require('https');
  const request = https.request;
  https.request = (options, ...rest) => {
    if (options && typeof options === 'object' && options.host === 'localhost' && !options.port) {
      options = Object.assign({}, options, { port: Number(args['https-port']) });
    }
    return request.call(https, options, ...rest);
  };
}

const { Registry } = require('azure-iothub');

(async () => {
  const registry = Registry.fromConnectionString(args['connection-string']);
  for (const device of args.creates) {
    stage = 'creating ' + device.deviceId;
    await registry.create(device);
    stage = 'reading ' + device.deviceId;
    const got = (await registry.get(device.deviceId)).responseBody;
    const auth = got.authentication || {};
    const prints = auth.x509Thumbprint || {};
    process.stdout.write(
      JSON.stringify({
        deviceId: got.deviceId,
        type: auth.type,
        primaryThumbprint: prints.primaryThumbprint === undefined ? null : prints.primaryThumbprint,
        secondaryThumbprint: prints.secondaryThumbprint === undefined ? null : prints.secondaryThumbprint,
      }) + '\n'
    );
  }
  process.exit(0);
})().catch((e) => fail(1, stage + ' failed: ' + ((e && e.stack) || e)));
