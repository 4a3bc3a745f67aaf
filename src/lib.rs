#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "service", feature = "local-hub"))]
mod amqp_batched_writes;
pub mod auth;
#[cfg(any(feature = "device", feature = "service"))]
mod client_tls;
#[cfg(any(feature = "device", feature = "service"))]
mod retry;
#[cfg(any(feature = "device", feature = "service"))]
pub use retry::RetryPolicy;
#[cfg(feature = "device")]
#[cfg_attr(docsrs, doc(cfg(feature = "device")))]
pub mod device;
pub mod error;
#[cfg(feature = "local-hub")]
#[cfg_attr(docsrs, doc(cfg(feature = "local-hub")))]
pub mod local_hub;
pub mod log_targets;
pub mod message;
pub mod protocol;
#[cfg(feature = "service")]
#[cfg_attr(docsrs, doc(cfg(feature = "service")))]
pub mod service;

pub use auth::{DeviceConnectionString, SasKey, SasToken, ServiceConnectionString};
pub use error::{Error, ErrorKind, Result};
pub use message::{Ack, Message};
