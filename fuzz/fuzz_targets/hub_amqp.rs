//! The hub's AMQP endpoints: any bytes a client sends (protocol header, SASL, frames, CBS
//! put-tokens, C2D messages, link traffic) on the service endpoint or the Event Hubs-compatible
//! endpoint, from the first byte or after an authorized prelude (the first input byte picks
//! which), never panic or hang a hub task.
#![no_main]

use iothub::local_hub::fuzzing::{AmqpPrelude, amqp_connection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let prelude = match selector % 4 {
        0 => AmqpPrelude::Service,
        1 => AmqpPrelude::ServiceAuthorized,
        2 => AmqpPrelude::EventHubs,
        _ => AmqpPrelude::EventHubsOpened,
    };
    let _answer = amqp_connection(prelude, input);
});
