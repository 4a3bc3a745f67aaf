//! Device and service connection strings.
//!
//! A connection string is `Key=value` pairs joined by `;`. We parse as the Python SDKs do
//! (py-device `azure/iot/device/common/auth/connection_string.py`, `_parse_connection_string`;
//! py-hub `src/azure/iot/hub/connection_string.py`): split on `;`, then each pair at its first `=` so that base64 padding stays in the
//! value; keys are case-sensitive; an unknown or repeated key is an error that names the key.
//! One trailing `;` is tolerated. Error texts never contain a key or a signature, and `Debug`
//! redacts them; `Display` writes the connection string back.

use std::fmt;
use std::str::FromStr;

use crate::auth::sas::{SasKey, SasToken};
use crate::error::{Error, ErrorKind, Result};

const HOST_NAME: &str = "HostName";
const DEVICE_ID: &str = "DeviceId";
const MODULE_ID: &str = "ModuleId";
const SHARED_ACCESS_KEY: &str = "SharedAccessKey";
const SHARED_ACCESS_KEY_NAME: &str = "SharedAccessKeyName";
const SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const GATEWAY_HOST_NAME: &str = "GatewayHostName";
const X509: &str = "x509";

/// Keys of a device or module connection string (py-device `connection_string.py`
/// `_valid_keys`; c-sdk `iothub_client_core_ll.c` token names).
const DEVICE_KEYS: &[&str] = &[
    HOST_NAME,
    DEVICE_ID,
    MODULE_ID,
    SHARED_ACCESS_KEY,
    SHARED_ACCESS_KEY_NAME,
    SHARED_ACCESS_SIGNATURE,
    GATEWAY_HOST_NAME,
    X509,
];

/// Keys of a service connection string (py-hub `connection_string.py`).
const SERVICE_KEYS: &[&str] = &[
    HOST_NAME,
    SHARED_ACCESS_KEY_NAME,
    SHARED_ACCESS_KEY,
    SHARED_ACCESS_SIGNATURE,
];

fn invalid(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidConnectionString, detail)
}

/// A key name from the input, quoted and shortened for an error message.
fn quoted_key(key: &str) -> String {
    let short: String = key.chars().take(40).collect();
    let ellipsis = if short.len() < key.len() { "…" } else { "" };
    format!("'{}{ellipsis}'", short.escape_debug())
}

/// The pairs of a connection string, each key at most once and from `allowed`.
struct Pairs<'a> {
    pairs: Vec<(&'static str, &'a str)>,
}

impl<'a> Pairs<'a> {
    fn parse(text: &'a str, allowed: &[&'static str], what: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(invalid(format!("the {what} connection string is empty")));
        }
        let body = text.strip_suffix(';').unwrap_or(text);
        let mut pairs: Vec<(&'static str, &'a str)> = Vec::with_capacity(6);
        for segment in body.split(';') {
            if segment.is_empty() {
                return Err(invalid("empty segment between ';' separators"));
            }
            let (key, value) = segment
                .split_once('=')
                .ok_or_else(|| invalid("a segment is not of the form Key=value"))?;
            let Some(&known) = allowed.iter().find(|k| **k == key) else {
                let hint = if what == "service" && DEVICE_KEYS.contains(&key) {
                    " (is this a device connection string?)"
                } else {
                    ""
                };
                return Err(invalid(format!(
                    "unknown key {} in a {what} connection string{hint}",
                    quoted_key(key)
                )));
            };
            if pairs.iter().any(|(k, _)| *k == known) {
                return Err(invalid(format!("duplicate key {}", quoted_key(key))));
            }
            if value.is_empty() {
                return Err(invalid(format!(
                    "key {} has an empty value",
                    quoted_key(key)
                )));
            }
            pairs.push((known, value));
        }
        Ok(Pairs { pairs })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn require(&self, key: &str, what: &str) -> Result<&'a str> {
        self.get(key).ok_or_else(|| {
            invalid(format!(
                "the {what} connection string is missing {}",
                quoted_key(key)
            ))
        })
    }
}

fn parse_key(text: &str) -> Result<SasKey> {
    SasKey::from_base64(text).map_err(|e| {
        invalid("SharedAccessKey is not valid base64").with_source(Error::new(e.kind(), e.detail()))
    })
}

fn parse_signature(text: &str) -> Result<SasToken> {
    text.parse::<SasToken>().map_err(|e| {
        invalid(format!(
            "SharedAccessSignature is malformed: {}",
            e.detail()
        ))
        .with_source(e)
    })
}

/// A host name with an optional `:port`, as `GatewayHostName` may carry
/// (`GatewayHostName=localhost:8883`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct HostAndPort {
    host: String,
    port: Option<u16>,
}

impl HostAndPort {
    /// Splits `host[:port]`; an IPv6 literal must be bracketed to carry a port (`[::1]:8883`).
    pub fn parse(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(invalid("empty host name"));
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        invalid("the port after the host name is not a number from 1 to 65535")
                    })?;
                (host, Some(port))
            }
            _ => (text, None),
        };
        if host.is_empty() {
            return Err(invalid("empty host name before ':port'"));
        }
        Ok(HostAndPort {
            host: host.to_owned(),
            port,
        })
    }

    /// The host, without the port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, when one was given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for HostAndPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// How a device or module authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum DeviceCredential {
    /// A symmetric key: the device's or module's own key, or (with `key_name`) a shared
    /// access policy key used on the device's behalf.
    SharedAccessKey {
        /// The key.
        key: SasKey,
        /// The policy name (`SharedAccessKeyName`), absent for the device's own key.
        key_name: Option<String>,
    },
    /// A ready-made token (`SharedAccessSignature=SharedAccessSignature sr=…`), which cannot
    /// be renewed.
    SharedAccessSignature(SasToken),
    /// An X.509 client certificate (`x509=true`), supplied to the client separately.
    X509,
}

impl fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceCredential::SharedAccessKey { key_name, .. } => f
                .debug_struct("SharedAccessKey")
                .field("key", &"<redacted>")
                .field("key_name", key_name)
                .finish(),
            DeviceCredential::SharedAccessSignature(token) => {
                f.debug_tuple("SharedAccessSignature").field(token).finish()
            }
            DeviceCredential::X509 => f.write_str("X509"),
        }
    }
}

/// A device or module connection string, as shown in the Azure portal or returned by
/// `iothub-local`.
///
/// Accepted forms (py-device `test_connection_string.py`, node-device
/// `_connection_string_test.js`): `HostName` and `DeviceId`, an optional `ModuleId` and
/// `GatewayHostName` (which may carry `:port`), and exactly one credential:
/// `SharedAccessKey` (optionally with `SharedAccessKeyName`), `SharedAccessSignature`, or
/// `x509=true` (`True` too, as Python writes it).
///
/// ```
/// use iothub::auth::{DeviceConnectionString, DeviceCredential};
///
/// let cs: DeviceConnectionString =
///     "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=Zm9vYmFy;GatewayHostName=localhost:8883"
///         .parse()?;
/// assert_eq!(cs.host_name(), "myhub.azure-devices.net");
/// assert_eq!(cs.device_id(), "dev1");
/// assert_eq!(cs.connect_host(), ("localhost", Some(8883)));
/// assert!(matches!(cs.credential(), DeviceCredential::SharedAccessKey { key_name: None, .. }));
/// assert!(!format!("{cs:?}").contains("Zm9vYmFy"));
/// # Ok::<(), iothub::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceConnectionString {
    host_name: String,
    device_id: String,
    module_id: Option<String>,
    gateway: Option<HostAndPort>,
    credential: DeviceCredential,
    /// `x509=True` as Python writes it, kept so that `Display` gives the input back.
    x509_capitalised: bool,
}

impl DeviceConnectionString {
    /// A device connection string with the device's own key.
    pub fn with_key(host_name: &str, device_id: &str, key: SasKey) -> Self {
        DeviceConnectionString {
            host_name: host_name.to_owned(),
            device_id: device_id.to_owned(),
            module_id: None,
            gateway: None,
            credential: DeviceCredential::SharedAccessKey {
                key,
                key_name: None,
            },
            x509_capitalised: false,
        }
    }

    /// Sets `ModuleId`.
    pub fn with_module_id(mut self, module_id: impl Into<String>) -> Self {
        self.module_id = Some(module_id.into());
        self
    }

    /// Sets `GatewayHostName`: where to connect, when that is not `HostName`.
    pub fn with_gateway(mut self, gateway: HostAndPort) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// `HostName`: the hub's name, used in the MQTT user name and the SAS resource.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// `DeviceId`.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// `ModuleId`, for a module identity.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// `GatewayHostName`, with its port when one was given.
    pub fn gateway_host_name(&self) -> Option<&HostAndPort> {
        self.gateway.as_ref()
    }

    /// Where the TCP/TLS connection goes: `GatewayHostName` when set, else `HostName`, with a
    /// port when the string gives one (py-device `common/pipeline/pipeline_stages_mqtt.py`,
    /// where the hostname is the gateway's when set; node-device `device/transport/mqtt/src/mqtt.ts`,
    /// `'mqtts://' + (gatewayHostName || host)`).
    pub fn connect_host(&self) -> (&str, Option<u16>) {
        match &self.gateway {
            Some(gateway) => (gateway.host(), gateway.port()),
            None => (&self.host_name, None),
        }
    }

    /// How the device authenticates.
    pub fn credential(&self) -> &DeviceCredential {
        &self.credential
    }
}

impl FromStr for DeviceConnectionString {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let pairs = Pairs::parse(text, DEVICE_KEYS, "device")?;
        let host_name = pairs.require(HOST_NAME, "device")?;
        let device_id = pairs.require(DEVICE_ID, "device")?;
        let key = pairs.get(SHARED_ACCESS_KEY);
        let key_name = pairs.get(SHARED_ACCESS_KEY_NAME);
        let signature = pairs.get(SHARED_ACCESS_SIGNATURE);
        let x509 = pairs.get(X509);
        let schemes = [key.is_some(), signature.is_some(), x509.is_some()];
        match schemes.iter().filter(|s| **s).count() {
            0 => {
                return Err(invalid(
                    "the device connection string needs one of SharedAccessKey, \
                     SharedAccessSignature or x509=true",
                ));
            }
            1 => {}
            _ => {
                return Err(invalid(
                    "mixed authentication schemes: give only one of SharedAccessKey, \
                     SharedAccessSignature and x509",
                ));
            }
        }
        if key_name.is_some() && key.is_none() {
            return Err(invalid(
                "SharedAccessKeyName is given without SharedAccessKey",
            ));
        }
        let credential = match (key, signature, x509) {
            (Some(key), _, _) => DeviceCredential::SharedAccessKey {
                key: parse_key(key)?,
                key_name: key_name.map(str::to_owned),
            },
            (_, Some(signature), _) => {
                DeviceCredential::SharedAccessSignature(parse_signature(signature)?)
            }
            (_, _, Some("true" | "True")) => DeviceCredential::X509,
            _ => return Err(invalid("x509 must be 'true' when present")),
        };
        Ok(DeviceConnectionString {
            host_name: host_name.to_owned(),
            device_id: device_id.to_owned(),
            module_id: pairs.get(MODULE_ID).map(str::to_owned),
            gateway: pairs
                .get(GATEWAY_HOST_NAME)
                .map(HostAndPort::parse)
                .transpose()?,
            credential,
            x509_capitalised: x509 == Some("True"),
        })
    }
}

impl fmt::Display for DeviceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HOST_NAME}={};{DEVICE_ID}={}",
            self.host_name, self.device_id
        )?;
        if let Some(module_id) = &self.module_id {
            write!(f, ";{MODULE_ID}={module_id}")?;
        }
        match &self.credential {
            DeviceCredential::SharedAccessKey { key, key_name } => {
                if let Some(name) = key_name {
                    write!(f, ";{SHARED_ACCESS_KEY_NAME}={name}")?;
                }
                write!(f, ";{SHARED_ACCESS_KEY}={}", key.to_base64())?;
            }
            DeviceCredential::SharedAccessSignature(token) => {
                write!(f, ";{SHARED_ACCESS_SIGNATURE}={token}")?;
            }
            DeviceCredential::X509 => {
                let value = if self.x509_capitalised {
                    "True"
                } else {
                    "true"
                };
                write!(f, ";{X509}={value}")?;
            }
        }
        if let Some(gateway) = &self.gateway {
            write!(f, ";{GATEWAY_HOST_NAME}={gateway}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConnectionString")
            .field("host_name", &self.host_name)
            .field("device_id", &self.device_id)
            .field("module_id", &self.module_id)
            .field("gateway", &self.gateway)
            .field("credential", &self.credential)
            .finish()
    }
}

/// How a back-end application authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum ServiceCredential {
    /// A shared access policy key, such as `iothubowner` or `service`.
    SharedAccessKey {
        /// The policy name (`SharedAccessKeyName`).
        key_name: String,
        /// The policy key.
        key: SasKey,
    },
    /// A ready-made policy token, which cannot be renewed.
    SharedAccessSignature {
        /// `SharedAccessKeyName`, when the string gives it.
        key_name: Option<String>,
        /// The token.
        token: SasToken,
    },
}

impl fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceCredential::SharedAccessKey { key_name, .. } => f
                .debug_struct("SharedAccessKey")
                .field("key_name", key_name)
                .field("key", &"<redacted>")
                .finish(),
            ServiceCredential::SharedAccessSignature { key_name, token } => f
                .debug_struct("SharedAccessSignature")
                .field("key_name", key_name)
                .field("token", token)
                .finish(),
        }
    }
}

/// A service (shared access policy) connection string, for back-end applications.
///
/// `HostName`, and either `SharedAccessKeyName` with `SharedAccessKey`, or a
/// `SharedAccessSignature` (py-hub `connection_string.py`; node-hub `connection_string.ts`).
///
/// ```
/// use iothub::auth::ServiceConnectionString;
///
/// let cs: ServiceConnectionString =
///     "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=Zm9vYmFy"
///         .parse()?;
/// assert_eq!(cs.host_name(), "myhub.azure-devices.net");
/// assert_eq!(cs.key_name(), Some("iothubowner"));
/// assert_eq!(cs.to_string().parse::<ServiceConnectionString>()?, cs);
/// # Ok::<(), iothub::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceConnectionString {
    host_name: String,
    credential: ServiceCredential,
}

impl ServiceConnectionString {
    /// A service connection string for policy `key_name` with `key`.
    pub fn with_key(host_name: &str, key_name: &str, key: SasKey) -> Self {
        ServiceConnectionString {
            host_name: host_name.to_owned(),
            credential: ServiceCredential::SharedAccessKey {
                key_name: key_name.to_owned(),
                key,
            },
        }
    }

    /// `HostName`, which may carry `:port` for a local hub.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// `SharedAccessKeyName`: the policy.
    pub fn key_name(&self) -> Option<&str> {
        match &self.credential {
            ServiceCredential::SharedAccessKey { key_name, .. } => Some(key_name),
            ServiceCredential::SharedAccessSignature { key_name, .. } => key_name.as_deref(),
        }
    }

    /// How the application authenticates.
    pub fn credential(&self) -> &ServiceCredential {
        &self.credential
    }
}

impl FromStr for ServiceConnectionString {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let pairs = Pairs::parse(text, SERVICE_KEYS, "service")?;
        let host_name = pairs.require(HOST_NAME, "service")?;
        let key_name = pairs.get(SHARED_ACCESS_KEY_NAME);
        let credential = match (
            pairs.get(SHARED_ACCESS_KEY),
            pairs.get(SHARED_ACCESS_SIGNATURE),
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "mixed authentication schemes: give SharedAccessKey or SharedAccessSignature, not both",
                ));
            }
            (Some(key), None) => ServiceCredential::SharedAccessKey {
                key_name: key_name
                    .ok_or_else(|| {
                        invalid("SharedAccessKey needs SharedAccessKeyName (the policy name)")
                    })?
                    .to_owned(),
                key: parse_key(key)?,
            },
            (None, Some(signature)) => ServiceCredential::SharedAccessSignature {
                key_name: key_name.map(str::to_owned),
                token: parse_signature(signature)?,
            },
            (None, None) => {
                return Err(invalid(
                    "the service connection string needs SharedAccessKey or SharedAccessSignature",
                ));
            }
        };
        Ok(ServiceConnectionString {
            host_name: host_name.to_owned(),
            credential,
        })
    }
}

impl fmt::Display for ServiceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HOST_NAME}={}", self.host_name)?;
        if let Some(name) = self.key_name() {
            write!(f, ";{SHARED_ACCESS_KEY_NAME}={name}")?;
        }
        match &self.credential {
            ServiceCredential::SharedAccessKey { key, .. } => {
                write!(f, ";{SHARED_ACCESS_KEY}={}", key.to_base64())
            }
            ServiceCredential::SharedAccessSignature { token, .. } => {
                write!(f, ";{SHARED_ACCESS_SIGNATURE}={token}")
            }
        }
    }
}

impl fmt::Debug for ServiceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConnectionString")
            .field("host_name", &self.host_name)
            .field("credential", &self.credential)
            .finish()
    }
}
