//! Connection bounds and deadlines of the hub's listeners.
//!
//! Every accepted TCP connection takes a slot of its listener and one of its source address
//! before the TLS handshake; past either bound the connection is closed at once, and the ones
//! already open are not touched. A connection that has not proved who it is gets the shortest
//! deadlines: TLS and the protocol header (and on AMQP the SASL exchange and OPEN) within
//! [`ConnectionLimits::handshake_timeout`], a valid CBS token within
//! [`ConnectionLimits::amqp_auth_timeout`]. This holds for the MQTT, HTTPS and both AMQP
//! listeners (the service endpoint and the Event Hubs-compatible one, TLS and plain TCP).
//!
//! Each AMQP connection also has an [`AmqpBudget`]: sessions, links, and links the client
//! sends on, each with a max-message-size, so that the bytes it can make the hub hold are
//! bounded.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

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
    /// Open connections per listener (MQTT, AMQP, HTTPS, and each Event Hubs-compatible
    /// listener); default 10,000. Past it, new connections are closed right after `accept`.
    pub max_connections: usize,
    /// Open connections per listener from one source IP address; default 1,000.
    pub max_connections_per_address: usize,
    /// Time a new MQTT, AMQP (both endpoints) or HTTPS connection has for TLS, and on AMQP the
    /// protocol header, SASL and OPEN; default 10 s.
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

    /// The AMQP idle timeout in milliseconds, as OPEN carries it.
    pub(crate) fn amqp_idle_millis(&self) -> u32 {
        u32::try_from(self.amqp_idle_timeout.as_millis()).unwrap_or(u32::MAX)
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

impl ConnectionGate {
    /// The next connection on `listener` within the bounds; connections past them are closed
    /// at once, and failed accepts are retried after a pause.
    pub(crate) async fn accept(
        &self,
        listener: &TcpListener,
        protocol: &'static str,
    ) -> (TcpStream, SocketAddr, Admission) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(protocol, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(admission) = self.admit(peer.ip()) else {
                tracing::debug!(protocol, %peer, "connection bound reached: closing");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            return (tcp, peer, admission);
        }
    }
}

/// Accepts plain TCP connections on `listener` within `gate`'s bounds (the TLS form is
/// `tls::accept_loop_bounded`) and runs `serve(stream, peer)` in a task of its own; an admitted
/// connection keeps its place until `serve` returns.
pub(crate) async fn accept_loop_plain_bounded<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    gate: ConnectionGate,
    serve: F,
) where
    F: Fn(TcpStream, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer, admission) = gate.accept(&listener, protocol).await;
        let served = serve(tcp, peer.to_string());
        tokio::spawn(async move {
            let _admission = admission;
            served.await;
        });
    }
}

/// Resolves when `deadline` passes before a connection was ever authorized (`auth` holds the
/// time its authorization lasts until, `None` before any valid token); never once it was.
pub(crate) async fn unauthorized_after(
    auth: &watch::Sender<Option<SystemTime>>,
    deadline: Duration,
) {
    let mut rx = auth.subscribe();
    let authorized = tokio::time::timeout(deadline, async {
        rx.wait_for(Option::is_some).await.is_ok()
    })
    .await;
    if authorized == Ok(true) {
        std::future::pending::<()>().await;
    }
}

/// The bounds of one AMQP connection on the hub: sessions, links, and links on which the
/// client sends (each of which may hold one partly received delivery of up to its link's
/// max-message-size, so these bound the bytes buffered for the connection). fe2o3-amqp 0.18
/// advertises `channel-max` and `handle-max` but does not refuse a BEGIN or ATTACH past them,
/// so the hub counts. Past a bound the connection is closed with
/// `amqp:resource-limit-exceeded`; other connections are not touched.
///
/// What needs no count: fe2o3-amqp does not enforce the session's incoming-window or a link's
/// credit on incoming transfers, but it hands frames to each link through bounded channels
/// that the hub's link tasks drain one delivery at a time, so a peer that ignores them meets
/// TCP back-pressure rather than a growing buffer; and the hub settles every delivery it
/// receives as it handles it (receiver settle mode first), so none stays unsettled.
#[derive(Debug)]
pub(crate) struct AmqpBudget {
    sessions: Arc<Semaphore>,
    links: Arc<Semaphore>,
    inbound_links: Arc<Semaphore>,
    exceeded: Notify,
    reason: Mutex<Option<&'static str>>,
}

/// The numbers of an [`AmqpBudget`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct AmqpBounds {
    /// Sessions open at once.
    pub sessions: usize,
    /// Links attached at once (including links being refused).
    pub links: usize,
    /// Links attached at once on which the client sends.
    pub inbound_links: usize,
}

impl AmqpBudget {
    /// A budget of `bounds`.
    pub(crate) fn new(bounds: AmqpBounds) -> Self {
        AmqpBudget {
            sessions: Arc::new(Semaphore::new(bounds.sessions)),
            links: Arc::new(Semaphore::new(bounds.links)),
            inbound_links: Arc::new(Semaphore::new(bounds.inbound_links)),
            exceeded: Notify::new(),
            reason: Mutex::new(None),
        }
    }

    /// A place for one more session, or `None` (and the connection is to close) past the bound.
    pub(crate) fn session(&self) -> Option<OwnedSemaphorePermit> {
        self.take(&self.sessions, "too many sessions on this connection")
    }

    /// A place for one more link (`inbound`: one on which the client sends), or `None` (and the
    /// connection is to close) past a bound.
    pub(crate) fn link(&self, inbound: bool) -> Option<LinkPlace> {
        let link = self.take(&self.links, "too many links on this connection")?;
        let inbound = match inbound {
            true => Some(self.take(
                &self.inbound_links,
                "too many links sending to the hub on this connection",
            )?),
            false => None,
        };
        Some(LinkPlace {
            _link: link,
            _inbound: inbound,
        })
    }

    fn take(&self, slots: &Arc<Semaphore>, reason: &'static str) -> Option<OwnedSemaphorePermit> {
        let permit = slots.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.exceed(reason);
        }
        permit
    }

    /// Records that the client went past a bound: the connection is to close.
    pub(crate) fn exceed(&self, reason: &'static str) {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.exceeded.notify_one();
    }

    /// Resolves with the reason once the client went past a bound.
    pub(crate) async fn exceeded(&self) -> &'static str {
        self.exceeded.notified().await;
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or("a per-connection bound was exceeded")
    }
}

/// A link's place in its connection's [`AmqpBudget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct LinkPlace {
    _link: OwnedSemaphorePermit,
    _inbound: Option<OwnedSemaphorePermit>,
}

impl LinkPlace {
    /// Runs a link's task, which keeps this place until it ends.
    pub(crate) fn spawn(self, link: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(async move {
            let _place = self;
            link.await;
        });
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

    #[tokio::test]
    async fn an_amqp_budget_names_the_first_bound_exceeded_and_gives_places_back() {
        let budget = AmqpBudget::new(AmqpBounds {
            sessions: 1,
            links: 3,
            inbound_links: 1,
        });
        let session = budget.session().unwrap();
        let inbound = budget.link(true).unwrap();
        let _outbound = budget.link(false).unwrap();
        assert!(budget.link(true).is_none(), "second inbound link");
        assert!(budget.session().is_none(), "second session");
        assert_eq!(
            budget.exceeded().await,
            "too many links sending to the hub on this connection"
        );
        drop(inbound);
        drop(session);
        assert!(budget.link(true).is_some());
        assert!(budget.session().is_some());
    }
}
