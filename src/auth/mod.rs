//! Authentication: connection strings, shared access keys, SAS tokens and X.509 certificates.
//!
//! Everything here is pure (no I/O) and shared by the device client, the service client and
//! the local hub, so that both ends of a connection agree on every byte.

mod connection_string;
mod sas;
#[cfg(feature = "local-hub")]
mod scope;
mod token_source;
pub mod x509;

pub use connection_string::{
    DeviceConnectionString, DeviceCredential, HostAndPort, ServiceConnectionString,
    ServiceCredential,
};
pub use sas::{ResourceUri, SasKey, SasToken, string_to_sign};
// The hub's checks of the tokens it is given; crate-private (nothing outside `local_hub`
// needs them).
#[cfg(feature = "local-hub")]
pub(crate) use scope::{
    AccessDenied, AccessPolicy, Permission, authorize_device, authorize_service,
};
pub use token_source::{DEFAULT_TOKEN_TTL, IssuedToken, MAX_TOKEN_TTL, TokenSource};
