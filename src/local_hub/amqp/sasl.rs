//! The SASL layer of the AMQP endpoint: `MSSBCBS`, `PLAIN` and `ANONYMOUS`.
//!
//! - `MSSBCBS` is what uamqp (azure-iot-hub for Python) picks, with an empty initial response
//!   (`azure-uamqp-c`, `src/sasl_mssbcbs.c`, `saslmssbcbs_get_init_bytes`); azure-iot-hub
//!   fails at once when the server does not offer it (`src/saslclientio.c` looks for its name in
//!   the server's list). It means "authenticated later through CBS", so it is treated like
//!   `ANONYMOUS`.
//! - `PLAIN` carries `{policy}@sas.root.{hub}` and a SAS token as the password
//!   (`azure-iot-sdk-c`, `iothub_service_client/src/iothub_messaging_ll.c`,
//!   `AMQP_SEND_AUTHCID_FMT`; Microsoft Learn, "Communicate with IoT Hub by using the AMQP
//!   protocol"). A token valid for a policy with ServiceConnect authorizes the connection until
//!   it expires.
//! - `ANONYMOUS`, for clients that want SASL but authenticate through CBS.
//!
//! fe2o3-amqp clones the acceptor into each connection, so the outcome is handed back through a
//! slot shared with the connection task.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp_types::primitives::{Array, Symbol};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};

use crate::auth::{Permission, SasToken};
use crate::local_hub::state::HubState;

/// What the SASL exchange established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SaslGrant {
    /// `MSSBCBS` or `ANONYMOUS`: the client must put a token on `$cbs` before using links.
    NeedsCbs {
        /// The mechanism the client chose.
        mechanism: &'static str,
    },
    /// `PLAIN` with a valid policy token: authorized until the token expires.
    Plain {
        /// The policy named in the user name and the token.
        policy: String,
        /// The token's expiry.
        until: SystemTime,
    },
}

/// The hub's SASL acceptor; one per connection.
#[derive(Clone)]
pub(crate) struct HubSasl {
    state: Arc<HubState>,
    grant: Arc<Mutex<Option<SaslGrant>>>,
}

impl HubSasl {
    /// An acceptor checking PLAIN credentials against `state`; the outcome lands in the
    /// returned slot.
    pub fn new(state: Arc<HubState>) -> (Self, Arc<Mutex<Option<SaslGrant>>>) {
        let grant = Arc::new(Mutex::new(None));
        (
            HubSasl {
                state,
                grant: grant.clone(),
            },
            grant,
        )
    }

    fn grant(&self, grant: SaslGrant) -> SaslServerFrame {
        *self.grant.lock().unwrap_or_else(|e| e.into_inner()) = Some(grant);
        outcome(SaslCode::Ok)
    }

    /// Checks PLAIN's `authzid NUL authcid NUL passwd` (RFC 4616).
    fn plain(&self, response: &[u8]) -> Option<SaslGrant> {
        let mut parts = response.split(|b| *b == 0);
        let (_authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
        let authcid = std::str::from_utf8(authcid).ok()?;
        let (policy, hub) = authcid.split_once("@sas.root.")?;
        let token: SasToken = std::str::from_utf8(password).ok()?.parse().ok()?;
        let host = &self.state.settings.host_name;
        let hub_matches = host
            .split('.')
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case(hub))
            || host.eq_ignore_ascii_case(hub);
        if !hub_matches || token.key_name().as_deref() != Some(policy) {
            return None;
        }
        match self
            .state
            .authorize_service(&token, Permission::ServiceConnect)
        {
            Ok(()) => Some(SaslGrant::Plain {
                policy: policy.to_owned(),
                until: token.expiry(),
            }),
            Err(denied) => {
                tracing::info!(policy, reason = %denied, "AMQP SASL PLAIN refused");
                None
            }
        }
    }
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

impl SaslAcceptor for HubSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        // uamqp-c compares each offered name with "MSSBCBS" (`src/saslclientio.c`).
        Array::from(vec![
            Symbol::from("MSSBCBS"),
            Symbol::from("PLAIN"),
            Symbol::from("ANONYMOUS"),
        ])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        match init.mechanism.as_str() {
            "MSSBCBS" => self.grant(SaslGrant::NeedsCbs {
                mechanism: "MSSBCBS",
            }),
            "ANONYMOUS" => self.grant(SaslGrant::NeedsCbs {
                mechanism: "ANONYMOUS",
            }),
            "PLAIN" => {
                let response = init
                    .initial_response
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                match self.plain(&response) {
                    Some(grant) => self.grant(grant),
                    None => outcome(SaslCode::Auth),
                }
            }
            _ => outcome(SaslCode::Auth),
        }
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // No mechanism here sends a challenge, so a response is a protocol error.
        outcome(SaslCode::Sys)
    }
}
