//! Where a client's SAS tokens come from: a key that signs fresh ones, or one fixed token.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::connection_string::{
    DeviceConnectionString, DeviceCredential, ServiceConnectionString, ServiceCredential,
};
use crate::auth::sas::{ResourceUri, SasKey, SasToken};
use crate::error::{Error, ErrorKind, Result};

/// The lifetime of a signed token unless configured otherwise: one hour, as every official
/// SDK uses (py-device `abstract_clients.py` `sastoken_ttl` 3600, node-device
/// `sak_authentication_provider.ts`, c-sdk `DEFAULT_SAS_TOKEN_EXPIRY_TIME_SECS`).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The longest token lifetime a [`TokenSource`] signs for: 365 days, what the C SDK's service
/// client uses (c-sdk `iothub_messaging_ll.c`).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The share of a token's lifetime after which it is renewed: 80 %, as the C SDK's
/// `SAS_REFRESH_MULTIPLIER` (c-sdk `iothubtransport_mqtt_common.c`).
const RENEW_AT_PERCENT: u32 = 80;

/// A token handed out by a [`TokenSource`], with the time to get the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token.
    pub token: SasToken,
    /// When to ask the source for a new token: before expiry for a signing source, `None` for
    /// a fixed token, which cannot be renewed and simply expires at [`SasToken::expiry`].
    pub renew_at: Option<SystemTime>,
}

#[derive(Clone)]
enum Source {
    Signing {
        key: SasKey,
        resource: ResourceUri,
        key_name: Option<String>,
        ttl: Duration,
    },
    Fixed(SasToken),
}

/// Gives a client the token to present, and says when to renew it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use iothub::auth::{DeviceConnectionString, TokenSource};
///
/// let cs: DeviceConnectionString =
///     "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=cGFzc3dvcmQ=".parse()?;
/// let source = TokenSource::for_device(&cs)?;
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let issued = source.token_at(now)?;
/// assert_eq!(issued.token.expiry_secs(), 1_700_003_600);
/// assert_eq!(issued.renew_at, Some(now + Duration::from_secs(2880)));
/// # Ok::<(), iothub::Error>(())
/// ```
#[derive(Clone)]
pub struct TokenSource {
    source: Source,
}

impl TokenSource {
    /// Signs tokens for `resource` with `key`, valid for [`DEFAULT_TOKEN_TTL`]. Give
    /// `key_name` for a policy key.
    pub fn signing(key: SasKey, resource: ResourceUri, key_name: Option<String>) -> Self {
        TokenSource {
            source: Source::Signing {
                key,
                resource,
                key_name,
                ttl: DEFAULT_TOKEN_TTL,
            },
        }
    }

    /// Always hands out `token`.
    pub fn fixed(token: SasToken) -> Self {
        TokenSource {
            source: Source::Fixed(token),
        }
    }

    /// The tokens of a device or module connection string: signed with its key for
    /// `{host}/devices/{id}[/modules/{module}]`, or its fixed `SharedAccessSignature`. An
    /// `x509=true` string has no tokens.
    pub fn for_device(cs: &DeviceConnectionString) -> Result<Self> {
        match cs.credential() {
            DeviceCredential::SharedAccessKey { key, key_name } => {
                let resource = match cs.module_id() {
                    Some(module) => ResourceUri::module(cs.host_name(), cs.device_id(), module),
                    None => ResourceUri::device(cs.host_name(), cs.device_id()),
                };
                Ok(Self::signing(key.clone(), resource, key_name.clone()))
            }
            DeviceCredential::SharedAccessSignature(token) => Ok(Self::fixed(token.clone())),
            DeviceCredential::X509 => Err(Error::new(
                ErrorKind::InvalidConnectionString,
                "an x509 connection string authenticates with a certificate, not a SAS token",
            )),
        }
    }

    /// The tokens of a service connection string: signed with its policy key for `{host}`,
    /// or its fixed `SharedAccessSignature`.
    pub fn for_service(cs: &ServiceConnectionString) -> Self {
        match cs.credential() {
            ServiceCredential::SharedAccessKey { key_name, key } => Self::signing(
                key.clone(),
                ResourceUri::service(cs.host_name()),
                Some(key_name.clone()),
            ),
            ServiceCredential::SharedAccessSignature { token, .. } => Self::fixed(token.clone()),
        }
    }

    /// Sets how long signed tokens live, kept between one second and [`MAX_TOKEN_TTL`]. No
    /// effect on a fixed token.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        if let Source::Signing { ttl: current, .. } = &mut self.source {
            *current = ttl.clamp(Duration::from_secs(1), MAX_TOKEN_TTL);
        }
        self
    }

    /// Whether this source can produce a new token when the current one ages.
    pub fn is_renewable(&self) -> bool {
        matches!(self.source, Source::Signing { .. })
    }

    /// The token to use now.
    pub fn token(&self) -> Result<IssuedToken> {
        self.token_at(SystemTime::now())
    }

    /// The token to use at `now`: freshly signed, expiring `ttl` after `now` (rounded up to
    /// a whole second) and to be renewed after 80 % of `ttl`; or the fixed token, which is an
    /// [`ErrorKind::Unauthorized`] error once it has expired.
    pub fn token_at(&self, now: SystemTime) -> Result<IssuedToken> {
        match &self.source {
            Source::Signing {
                key,
                resource,
                key_name,
                ttl,
            } => {
                let since_epoch = now
                    .duration_since(UNIX_EPOCH)
                    .map_err(|_| Error::new(ErrorKind::InvalidToken, "the clock is before 1970"))?;
                let expiry = (since_epoch + *ttl).as_secs_f64().ceil() as u64;
                Ok(IssuedToken {
                    token: key.token(resource, key_name.as_deref(), expiry),
                    renew_at: Some(now + *ttl * RENEW_AT_PERCENT / 100),
                })
            }
            Source::Fixed(token) if token.is_expired_at(now) => Err(Error::new(
                ErrorKind::Unauthorized,
                "the SharedAccessSignature from the connection string has expired",
            )),
            Source::Fixed(token) => Ok(IssuedToken {
                token: token.clone(),
                renew_at: None,
            }),
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Signing {
                resource,
                key_name,
                ttl,
                ..
            } => f
                .debug_struct("TokenSource::Signing")
                .field("resource", resource)
                .field("key_name", key_name)
                .field("ttl", ttl)
                .finish_non_exhaustive(),
            Source::Fixed(token) => f.debug_tuple("TokenSource::Fixed").field(token).finish(),
        }
    }
}
