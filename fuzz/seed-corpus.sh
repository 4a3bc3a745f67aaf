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
