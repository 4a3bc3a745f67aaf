#!/bin/sh
# Writes a small seed corpus into fuzz/corpus/<target>/ (git-ignored; regenerate at will).
set -eu
cd "$(dirname "$0")"
seed() { # seed TARGET NAME TEXT
    mkdir -p "corpus/$1"
    printf '%s' "$3" > "corpus/$1/seed-$2"
}
seed connection_string dev-key 'HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=cGFzc3dvcmQ='
seed connection_string dev-module-gw 'HostName=my.host.name;DeviceId=my-device;ModuleId=my-module;SharedAccessKey=Zm9vYmFy;GatewayHostName=localhost:8883'
seed connection_string dev-keyname 'HostName=h;DeviceId=d;SharedAccessKeyName=device;SharedAccessKey=Zm9vYmFy;'
seed connection_string dev-x509 'HostName=my.host.name;DeviceId=my-device;x509=True'
seed connection_string dev-sas 'HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=h&sig=abc%3D&se=12345&skn=p'
seed connection_string dev-gw-v6 'HostName=h;DeviceId=d;x509=true;GatewayHostName=[::1]:8883'
seed connection_string svc-key 'HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=Zm9vYmFy'
seed connection_string svc-sas 'HostName=h:8443;SharedAccessSignature=SharedAccessSignature sr=h&sig=x&se=1'
seed connection_string bad-key 'HostName=h;DeviceId=d;SharedAccessKey=not a key!;Colour=blue'
seed sas_token device 'SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=DTUpME%2Fc%2BX9Cvy%2B3r0ZNtHukhBGykBpAx8L30%2BISNuY%3D&se=1578941692'
seed sas_token policy 'SharedAccessSignature sr=host&sig=88JmrIsVYOGmRSjCO1x1LLbv0K001Gikh1rjfJqbQXA%3D&skn=policy&se=12345'
seed sas_token lowercase 'SharedAccessSignature se=1&skn=a%20b&sig=abc%2f%3d&sr=h%2fdevices%2fd'
seed property_bag c2d '%24.mid=69ea4caf&%24.exp=0&%24.to=%2Fdevices%2FdeviceID%2Fmessages%2FdeviceBound&%24.cid=169c&iothub-ack=full&property1=value1'
seed property_bag exp-iso '%24.exp=3237-07-19T23%3A06%3A40.0000000Z&%24.ct=application%2Fjson&%24.ce=utf-8&%24.uid=u&iothub-ack=po%24itive&custom%2A=value%23'
seed property_bag bare 'k1&k2=&=v&&%24.on=out&key%24=value%24/'
seed property_bag exp-plain '%24.exp=2017-01-06T23%3A37%3A00&%24.exp=2017-01-07T00%3A37%3A00%2B01%3A00'

# The hub targets read binary inputs: byte 0 picks the prelude (see each target), the rest
# is what a client sends. Written from hex with python3.
seed_hex() { # seed_hex TARGET NAME HEX
    mkdir -p "corpus/$1"
    python3 -c 'import sys; open(sys.argv[1], "wb").write(bytes.fromhex(sys.argv[2]))' \
        "corpus/$1/seed-$2" "$3"
}
# MQTT (hub_mqtt): 00 = from the first byte, 01 = after a valid CONNECT for dev1.
seed_hex hub_mqtt connect-bad-password "00$(python3 - <<'PY'
def s(b): return len(b).to_bytes(2, "big") + b
body = s(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + s(b"dev1") \
    + s(b"fuzz.azure-devices.net/dev1/?api-version=2021-04-12") + s(b"SharedAccessSignature sr=x&sig=y&se=1")
print((bytes([0x10, len(body)]) + body).hex())
PY
)"
seed_hex hub_mqtt connect-level-5 00101000044d5154540502003c00000464657631
seed_hex hub_mqtt subscribe-c2d-twin-methods "01$(python3 - <<'PY'
def s(b): return len(b).to_bytes(2, "big") + b
topics = [b"devices/dev1/messages/devicebound/#", b"$iothub/twin/res/#", b"$iothub/methods/POST/#"]
body = (1).to_bytes(2, "big") + b"".join(s(t) + bytes([1]) for t in topics)
print((bytes([0x82, len(body)]) + body).hex())
PY
)"
seed_hex hub_mqtt publish-telemetry-twin "01$(python3 - <<'PY'
def s(b): return len(b).to_bytes(2, "big") + b
def publish(topic, payload, pkid=None):
    body = s(topic) + ((pkid).to_bytes(2, "big") if pkid else b"") + payload
    return bytes([0x32 if pkid else 0x30, len(body)]) + body
out = publish(b"devices/dev1/messages/events/%24.ct=application%2Fjson&a=b", b"{}", 7)
out += publish(b"$iothub/twin/GET/?$rid=1", b"")
out += publish(b"$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"x":1}')
out += publish(b"$iothub/methods/res/200/?$rid=1", b"{}")
out += bytes([0xC0, 0x00, 0xE0, 0x00])  # PINGREQ, DISCONNECT
print(out.hex())
PY
)"
# AMQP (hub_amqp): byte 0 mod 4 = service endpoint from the first byte, service endpoint
# after OPEN/BEGIN/put-token/links (C2D sender handle 2, feedback receiver handle 3), Event
# Hubs endpoint from the first byte, Event Hubs endpoint after OPEN/BEGIN.
seed_hex hub_amqp header 00414d515000010000
seed_hex hub_amqp sasl-plain "00$(python3 - <<'PY'
import struct
def frame(body, kind=0, channel=0): return struct.pack(">IBBH", 8 + len(body), 2, kind, channel) + body
def str8(b): return bytes([0xA1, len(b)]) + b
def bin8(b): return bytes([0xA0, len(b)]) + b
def sym8(b): return bytes([0xA3, len(b)]) + b
def described(code, fields):
    items = b"".join(fields)
    return bytes([0x00, 0x53, code, 0xC0, len(items) + 1, len(fields)]) + items
out = b"AMQP\x03\x01\x00\x00"
out += frame(described(0x41, [sym8(b"PLAIN"), bin8(b"\x00iothubowner@sas.root.fuzz\x00SharedAccessSignature sr=fuzz.azure-devices.net&sig=x&se=4102444800&skn=iothubowner")]), kind=1)
out += b"AMQP\x00\x01\x00\x00"
out += frame(described(0x10, [str8(b"c")]))
print(out.hex())
PY
)"
seed_hex hub_amqp c2d-message "01$(python3 - <<'PY'
import struct
def frame(body, channel=0): return struct.pack(">IBBH", 8 + len(body), 2, 0, channel) + body
def str8(b): return bytes([0xA1, len(b)]) + b
def described(code, fields):
    items = b"".join(fields)
    return bytes([0x00, 0x53, code, 0xC0, len(items) + 1, len(fields)]) + items
transfer = described(0x14, [bytes([0x52, 2]), bytes([0x43]), bytes([0xA0, 1, 7]), bytes([0x43]), bytes([0x42])])
properties = described(0x73, [str8(b"m1"), bytes([0x40]), str8(b"/devices/dev1/messages/devicebound")])
pairs = str8(b"iothub-ack") + str8(b"full")
app = bytes([0x00, 0x53, 0x74, 0xC1, len(pairs) + 1, 2]) + pairs
data = bytes([0x00, 0x53, 0x75, 0xA0, 5]) + b"hello"
print(frame(transfer + properties + app + data).hex())
PY
)"
seed_hex hub_amqp event-hubs-header 02414d515000010000
seed_hex hub_amqp event-hubs-attach "03$(python3 - <<'PY'
import struct
def frame(body, channel=0): return struct.pack(">IBBH", 8 + len(body), 2, 0, channel) + body
def str8(b): return bytes([0xA1, len(b)]) + b
def described(code, fields):
    items = b"".join(fields)
    return bytes([0x00, 0x53, code, 0xC0, len(items) + 1, len(fields)]) + items
source = described(0x28, [str8(b"iothub-ehub-fuzz/ConsumerGroups/$Default/Partitions/0")])
target = described(0x29, [str8(b"r")])
attach = described(0x12, [str8(b"receiver"), bytes([0x43]), bytes([0x41]), bytes([0x40]), bytes([0x40]), source, target])
print(frame(attach).hex())
PY
)"
# HTTPS (hub_https): method byte, authorization byte (1 = iothubowner token), then the path
# and query, headers, an empty line, the body.
seed_hex hub_https get-device "$(printf '\000\001/devices/dev1?api-version=2021-04-12\n\n' | od -An -tx1 | tr -d ' \n')"
seed_hex hub_https put-device "$(printf '\001\001/devices/dev2?api-version=2021-04-12\ncontent-type: application/json\n\n{"deviceId":"dev2","authentication":{"type":"sas"}}' | od -An -tx1 | tr -d ' \n')"
seed_hex hub_https patch-twin "$(printf '\003\001/twins/dev1?api-version=2021-04-12\ncontent-type: application/json\nif-match: *\n\n{"properties":{"desired":{"a":1}},"tags":{"t":"x"}}' | od -An -tx1 | tr -d ' \n')"
seed_hex hub_https invoke-method "$(printf '\002\001/twins/dev1/methods?api-version=2021-04-12\ncontent-type: application/json\n\n{"methodName":"reboot","responseTimeoutInSeconds":5,"payload":{}}' | od -An -tx1 | tr -d ' \n')"
seed_hex hub_https websocket "$(printf '\000\000/$iothub/websocket\nconnection: upgrade\nupgrade: websocket\nsec-websocket-version: 13\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\nsec-websocket-protocol: mqtt\n\n' | od -An -tx1 | tr -d ' \n')"
