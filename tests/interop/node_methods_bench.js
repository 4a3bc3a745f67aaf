#!/usr/bin/env node
// Bench peer: direct-method round trips between the official Node SDKs, through the local hub.
//
// azure-iot-device 1.18.4 + azure-iot-device-mqtt 1.16.4 (MQTT/TLS, the port from
// GatewayHostName) answers method "echo" with 200 and the request's payload
// (`onDeviceMethod`, `response.send`); azure-iothub 1.16.6 `Client.invokeDeviceMethod` (HTTPS)
// calls it --count times, one call at a time. One untimed warm-up call first. The SDKs are used
// unmodified except for the HTTPS port patch of node_service_twin_methods.js; the CA comes from
// NODE_EXTRA_CA_CERTS (set by the caller) and `setOptions({ca})` for the device.
//
// Output: one JSON line {"count": N, "elapsed_s": S, "latencies_ms": [...]} (the timed loop
// only). Exit codes: 0 on success; 1 on an error; 2 on timeout; 64 on bad arguments.
//
//   NODE_PATH=DIR/node_modules NODE_EXTRA_CA_CERTS=ca.pem node node_methods_bench.js \
//     --device-connection-string "HostName=localhost;DeviceId=...;GatewayHostName=localhost:18883" \
//     --service-connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;..." \
//     --ca-file ca.pem --https-port 18443 --count 500
'use strict';

const fs = require('fs');

function usage(text) {
  process.stderr.write('node_methods_bench: ' + text + '\n');
  process.exit(64);
}

function parseArgs(argv) {
  const names = ['device-connection-string', 'service-connection-string', 'ca-file', 'https-port', 'count', 'timeout'];
  const args = { count: '500', timeout: '120' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!names.includes(name) || i + 1 >= argv.length) usage('bad argument ' + argv[i]);
    args[name] = argv[i + 1];
  }
  for (const name of ['device-connection-string', 'service-connection-string', 'ca-file', 'https-port']) {
    if (args[name] === undefined) usage('--' + name + ' is required');
  }
  args.count = Number(args.count);
  args.timeout = Number(args.timeout);
  args['https-port'] = Number(args['https-port']);
  return args;
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
  let stage = 'starting';
  const timer = setTimeout(() => {
    process.stderr.write('node_methods_bench: timeout while ' + stage + '\n');
    process.exit(2);
  }, args.timeout * 1000);
  patchHttpsPort(args['https-port']);
  const { Client: DeviceClient } = require('azure-iot-device');
  const { Mqtt } = require('azure-iot-device-mqtt');
  const { Client: ServiceClient } = require('azure-iothub');
  try {
    stage = 'connecting the device';
    const device = DeviceClient.fromConnectionString(args['device-connection-string'], Mqtt);
    device.setOptions({ ca: fs.readFileSync(args['ca-file'], 'utf8') });
    await device.open();
    stage = 'subscribing to methods';
    device.onDeviceMethod('echo', (request, response) => {
      response.send(200, request.payload, (err) => {
        if (err) process.stderr.write('node_methods_bench: response failed: ' + err + '\n');
      });
    });
    const deviceId = /DeviceId=([^;]+)/.exec(args['device-connection-string'])[1];
    const service = ServiceClient.fromConnectionString(args['service-connection-string']);
    const call = async (n) => {
      const { result } = await service.invokeDeviceMethod(deviceId, {
        methodName: 'echo',
        payload: { n: n },
        responseTimeoutInSeconds: 30,
        connectTimeoutInSeconds: 10,
      });
      if (result.status !== 200 || !result.payload || result.payload.n !== n) {
        throw new Error('unexpected answer ' + JSON.stringify(result));
      }
    };
    stage = 'warming up';
    await call(-1);
    stage = 'timing';
    const latencies = [];
    const start = process.hrtime.bigint();
    for (let n = 0; n < args.count; n++) {
      const t0 = process.hrtime.bigint();
      await call(n);
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    process.stdout.write(JSON.stringify({ count: args.count, elapsed_s: elapsed, latencies_ms: latencies }) + '\n');
    clearTimeout(timer);
    await device.close();
  } catch (e) {
    process.stderr.write('node_methods_bench: ' + stage + ' failed: ' + (e && e.stack || e) + '\n');
    process.exit(1);
  }
  process.exit(0);
}

main();
