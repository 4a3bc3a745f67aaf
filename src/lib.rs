#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod error;
pub mod message;
pub mod protocol;

pub use auth::{DeviceConnectionString, SasKey, SasToken, ServiceConnectionString};
pub use error::{Error, ErrorKind, Result};
pub use message::{Ack, Message};
