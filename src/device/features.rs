//! What a client keeps for the features the application turns on after connecting: the twin
//! request timeout, and the streams of desired-property updates and method requests (made on
//! first use, then shared by every handle).

use std::time::Duration;

use tokio::sync::OnceCell;

use crate::device::desired::DesiredReceiver;
use crate::device::methods::MethodReceiver;

/// The per-client state of the twin and methods APIs.
pub(crate) struct Features {
    /// How long a twin request waits for its response.
    pub twin_timeout: Duration,
    /// The capacity of each feature's buffer.
    pub buffer: usize,
    pub desired: OnceCell<DesiredReceiver>,
    pub methods: OnceCell<MethodReceiver>,
}

impl Features {
    pub fn new(twin_timeout: Duration, buffer: usize) -> Features {
        Features {
            twin_timeout,
            buffer,
            desired: OnceCell::new(),
            methods: OnceCell::new(),
        }
    }
}
