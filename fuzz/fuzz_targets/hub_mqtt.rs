//! The hub's MQTT endpoint: any bytes a client sends after TLS, from the first byte or after a
//! valid CONNECT (the first input byte picks which), never panic or hang a hub task; the
//! connection ends when the client's side does.
#![no_main]

use iothub::local_hub::fuzzing::{MqttPrelude, mqtt_connection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let prelude = match selector % 2 {
        0 => MqttPrelude::None,
        _ => MqttPrelude::Connected,
    };
    let _answer = mqtt_connection(prelude, input);
});
