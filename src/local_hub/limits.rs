//! Connection bounds and deadlines of the hub's listeners.
//!
//! Every accepted TCP connection takes a slot of its listener and one of its source address
//! before the TLS handshake; past either bound the connection is closed at once, and the ones
//! already open are not touched. A connection that has not proved who it is gets the shortest
//! deadlines: TLS and the protocol header (and on AMQP the SASL exchange and OPEN) within
//! [`ConnectionLimits::handshake_timeout`], a valid CBS token within
//! [`ConnectionLimits::amqp_auth_timeout`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bounds on the connections of each listener, and the deadlines of idle connections.
///
/// ```
/// use std::time::Duration;
/// use iothub::local_hub::ConnectionLimits;
///
/// let limits = ConnectionLimits::new()
///     .with_max_connections(100)
///     .with_amqp_auth_timeout(Duration::from_secs(5));
/// assert_eq!(limits.max_connections, 100);
/// assert_eq!(limits.max_connections_per_address, 1_000);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionLimits {
    /// Open connections per listener (MQTT, AMQP, HTTPS); default 10,000. Past it, new connections
    /// are closed right after `accept`.
    pub max_connections: usize,
    /// Open connections per listener from one source IP address; default 1,000.
    pub max_connections_per_address: usize,
    /// Time a new MQTT, AMQP or HTTPS connection has for TLS, and on AMQP the protocol header, SASL
    /// and OPEN; default 10 s.
    pub handshake_timeout: Duration,
    /// Time an open AMQP connection has to present a valid token (SASL PLAIN or a CBS
    /// put-token) before it is closed with `amqp:unauthorized-access`; default 30 s.
    pub amqp_auth_timeout: Duration,
    /// The AMQP idle timeout the hub advertises in its OPEN and enforces: a connection with no
    /// frame for this long is closed; default 240 s (clients send empty frames at half of it,
    /// OASIS AMQP 1.0 part 2.4.5).
    pub amqp_idle_timeout: Duration,
    /// Time an HTTPS connection may wait for the headers of its next request, before the first
    /// and between keep-alive requests; default 30 s.
    pub https_idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            handshake_timeout: Duration::from_secs(10),
            amqp_auth_timeout: Duration::from_secs(30),
            amqp_idle_timeout: Duration::from_secs(240),
            https_idle_timeout: Duration::from_secs(30),
        }
    }
}

impl ConnectionLimits {
    /// The defaults (the same as [`ConnectionLimits::default`]).
    pub fn new() -> Self {
        ConnectionLimits::default()
    }

    /// Sets the open connections allowed per listener.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets the open connections allowed per listener from one source address.
    pub fn with_max_connections_per_address(mut self, max: usize) -> Self {
        self.max_connections_per_address = max;
        self
    }

    /// Sets the time for TLS and the protocol handshake.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the time an AMQP connection has to present a valid token.
    pub fn with_amqp_auth_timeout(mut self, timeout: Duration) -> Self {
        self.amqp_auth_timeout = timeout;
        self
    }

    /// Sets the AMQP idle timeout advertised and enforced by the hub.
    pub fn with_amqp_idle_timeout(mut self, timeout: Duration) -> Self {
        self.amqp_idle_timeout = timeout;
        self
    }

    /// Sets the time an HTTPS connection may wait for its next request's headers.
    pub fn with_https_idle_timeout(mut self, timeout: Duration) -> Self {
        self.https_idle_timeout = timeout;
        self
    }
}

/// Admits connections to one listener within its bounds.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionGate {
    slots: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_address: usize,
}

/// A connection's place in its listener's bounds, given back when dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    _slot: OwnedSemaphorePermit,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    address: IpAddr,
}

impl ConnectionGate {
    /// A gate for one listener.
    pub(crate) fn new(limits: &ConnectionLimits) -> Self {
        ConnectionGate {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_address: Arc::default(),
            max_per_address: limits.max_connections_per_address,
        }
    }

    /// A gate with no bound.
    pub(crate) fn unbounded() -> Self {
        ConnectionGate::new(
            &ConnectionLimits::new()
                .with_max_connections(Semaphore::MAX_PERMITS)
                .with_max_connections_per_address(usize::MAX),
        )
    }

    /// A place for a connection from `address`, or `None` when a bound is reached.
    pub(crate) fn admit(&self, address: IpAddr) -> Option<Admission> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let mut counts = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            return None;
        }
        *count += 1;
        Some(Admission {
            _slot: slot,
            per_address: self.per_address.clone(),
            address,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_listener_and_address_are_given_back() {
        let gate = ConnectionGate::new(
            &ConnectionLimits::new()
                .with_max_connections(3)
                .with_max_connections_per_address(2),
        );
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "per address");
        let b1 = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "per listener");
        drop(b1);
        drop(a1);
        let _a3 = gate.admit(a).unwrap();
        let _b2 = gate.admit(b).unwrap();
        assert_eq!(gate.per_address.lock().unwrap().len(), 2);
    }
}
