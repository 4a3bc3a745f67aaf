//! What a token grants: shared access policies, their permissions, and the checks a hub makes
//! before it lets a device or a back end in. Only the local hub uses these, so they are
//! crate-private and exist only with the `local-hub` feature.
//!
//! The rules are IoT Hub's (Microsoft Learn, "Control access to IoT Hub with shared access
//! signatures", sections "Security tokens" and "Use a shared access policy to access on behalf
//! of a device"; azure-iot-sdk-csharp `SharedAccessSignatureParser` and the Node SDK's
//! `azure-iot-common` `SharedAccessSignature.create`): the HMAC is computed over `sr` exactly as written; `sr` is then percent-decoded
//! (either hex case) and must be a prefix **by segment** of the resource asked for, compared
//! case-insensitively, with any `:port` after the host ignored; `se` must not be in the past.

use std::fmt;
use std::time::SystemTime;

use crate::auth::sas::{SasKey, SasToken};

/// A permission a shared access policy can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Permission {
    /// Read the identity registry.
    RegistryRead,
    /// Write the identity registry.
    RegistryWrite,
    /// Send cloud-to-device messages and receive feedback.
    ServiceConnect,
    /// Connect on behalf of devices.
    DeviceConnect,
}

impl Permission {
    fn bit(self) -> u8 {
        match self {
            Permission::RegistryRead => 1,
            Permission::RegistryWrite => 2,
            Permission::ServiceConnect => 4,
            Permission::DeviceConnect => 8,
        }
    }
}

/// A set of [`Permission`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Permissions(u8);

impl Permissions {
    /// No permission.
    pub(crate) const NONE: Permissions = Permissions(0);
    /// Every permission, as `iothubowner` has.
    pub(crate) const ALL: Permissions = Permissions(15);

    /// This set plus `permission`.
    pub(crate) const fn with(self, permission: Permission) -> Self {
        Permissions(
            self.0
                | match permission {
                    Permission::RegistryRead => 1,
                    Permission::RegistryWrite => 2,
                    Permission::ServiceConnect => 4,
                    Permission::DeviceConnect => 8,
                },
        )
    }

    /// Whether the set holds `permission`.
    pub(crate) fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = [
            Permission::RegistryRead,
            Permission::RegistryWrite,
            Permission::ServiceConnect,
            Permission::DeviceConnect,
        ];
        f.debug_set()
            .entries(all.into_iter().filter(|p| self.contains(*p)))
            .finish()
    }
}

/// A shared access policy: a name, its keys and what it may do.
#[derive(Clone, Debug)]
pub(crate) struct AccessPolicy {
    /// The policy name, e.g. `iothubowner`; the `skn` of its tokens.
    pub(crate) name: String,
    /// The primary key.
    pub(crate) primary_key: SasKey,
    /// The secondary key.
    pub(crate) secondary_key: SasKey,
    /// What tokens signed with this policy may do.
    pub(crate) permissions: Permissions,
}

impl AccessPolicy {
    /// IoT Hub's default policies and their permissions (Microsoft Learn,
    /// "Control access to IoT Hub by using shared access signatures", "IoT Hub permissions"): `iothubowner` (all), `service` (ServiceConnect),
    /// `device` (DeviceConnect), `registryRead` (RegistryRead), `registryReadWrite`
    /// (RegistryRead and RegistryWrite).
    pub(crate) fn default_permissions(name: &str) -> Option<Permissions> {
        use Permission::*;
        Some(match name {
            "iothubowner" => Permissions::ALL,
            "service" => Permissions::NONE.with(ServiceConnect),
            "device" => Permissions::NONE.with(DeviceConnect),
            "registryRead" => Permissions::NONE.with(RegistryRead),
            "registryReadWrite" => Permissions::NONE.with(RegistryRead).with(RegistryWrite),
            _ => return None,
        })
    }

    fn signed(&self, token: &SasToken) -> bool {
        token.verify(&self.primary_key) || token.verify(&self.secondary_key)
    }
}

/// Why a token was refused. The text never includes the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccessDenied {
    /// `se` is in the past.
    Expired,
    /// `sr` does not cover the resource asked for.
    WrongScope,
    /// No key known for this token's `skn` (or device) produced its signature.
    BadSignature,
    /// `skn` names no policy.
    UnknownPolicy,
    /// The policy lacks the permission.
    MissingPermission(Permission),
    /// The device does not exist or is disabled.
    UnknownDevice,
}

impl fmt::Display for AccessDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessDenied::Expired => f.write_str("the token has expired"),
            AccessDenied::WrongScope => {
                f.write_str("the token's resource does not cover this request")
            }
            AccessDenied::BadSignature => {
                f.write_str("the token's signature does not match any key")
            }
            AccessDenied::UnknownPolicy => f.write_str("the token names an unknown policy"),
            AccessDenied::MissingPermission(p) => write!(f, "the policy lacks {p:?}"),
            AccessDenied::UnknownDevice => {
                f.write_str("the device is not registered or is disabled")
            }
        }
    }
}

impl std::error::Error for AccessDenied {}

/// The host part of a decoded resource, without a `:port`, and the rest (starting at `/`).
fn split_host(resource: &str) -> (&str, &str) {
    let (host, rest) = match resource.find('/') {
        Some(i) => resource.split_at(i),
        None => (resource, ""),
    };
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    (host, rest)
}

/// Whether the token's (decoded) `sr` is a segment prefix of `host` + `path`, host compared
/// without port and case-insensitively, path case-insensitively.
pub(crate) fn scope_covers(token_resource: &str, host: &str, path: &str) -> bool {
    let (token_host, token_path) = split_host(token_resource);
    let token_path = token_path.trim_end_matches('/');
    if !token_host.eq_ignore_ascii_case(split_host(host).0) || token_path.len() > path.len() {
        return false;
    }
    let (head, tail) = path.split_at(token_path.len());
    head.eq_ignore_ascii_case(token_path) && (tail.is_empty() || tail.starts_with('/'))
}

fn check_live(token: &SasToken, now: SystemTime) -> Result<(), AccessDenied> {
    if token.is_expired_at(now) {
        return Err(AccessDenied::Expired);
    }
    Ok(())
}

/// Checks a back-end token: a policy token for the hub `host` whose policy has `needed`.
pub(crate) fn authorize_service(
    token: &SasToken,
    host: &str,
    policies: &[AccessPolicy],
    needed: Permission,
    now: SystemTime,
) -> Result<(), AccessDenied> {
    check_live(token, now)?;
    let resource = token.resource().map_err(|_| AccessDenied::WrongScope)?;
    if !scope_covers(&resource, host, "") {
        return Err(AccessDenied::WrongScope);
    }
    let name = token.key_name().ok_or(AccessDenied::UnknownPolicy)?;
    let policy = policies
        .iter()
        .find(|p| p.name == name)
        .ok_or(AccessDenied::UnknownPolicy)?;
    if !policy.signed(token) {
        return Err(AccessDenied::BadSignature);
    }
    if !policy.permissions.contains(needed) {
        return Err(AccessDenied::MissingPermission(needed));
    }
    Ok(())
}

/// Checks a device's token for `/devices/{device_id}[/modules/{module_id}]` on `host`: signed
/// with one of `device_keys` (no `skn`), or with a policy that has DeviceConnect.
pub(crate) fn authorize_device(
    token: &SasToken,
    host: &str,
    device_id: &str,
    module_id: Option<&str>,
    device_keys: &[&SasKey],
    policies: &[AccessPolicy],
    now: SystemTime,
) -> Result<(), AccessDenied> {
    check_live(token, now)?;
    let resource = token.resource().map_err(|_| AccessDenied::WrongScope)?;
    let mut path = format!("/devices/{device_id}");
    if let Some(module_id) = module_id {
        path.push_str("/modules/");
        path.push_str(module_id);
    }
    if !scope_covers(&resource, host, &path) {
        return Err(AccessDenied::WrongScope);
    }
    match token.key_name() {
        None => {
            if device_keys.iter().any(|key| token.verify(key)) {
                Ok(())
            } else {
                Err(AccessDenied::BadSignature)
            }
        }
        Some(name) => {
            let policy = policies
                .iter()
                .find(|p| p.name == name)
                .ok_or(AccessDenied::UnknownPolicy)?;
            if !policy.signed(token) {
                return Err(AccessDenied::BadSignature);
            }
            if !policy.permissions.contains(Permission::DeviceConnect) {
                return Err(AccessDenied::MissingPermission(Permission::DeviceConnect));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ResourceUri;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn scope_is_a_segment_prefix_ignoring_case_and_port() {
        // Microsoft Learn, "Control access to IoT Hub by using shared access signatures": "/a/b" covers "/a/b/c" but not "/a/bc".
        assert!(scope_covers("hub/devices/a", "hub", "/devices/a"));
        assert!(scope_covers("HUB/Devices/A", "hub", "/devices/a"));
        assert!(scope_covers("hub:8883/devices/a", "hub", "/devices/a"));
        assert!(scope_covers("hub/devices", "hub", "/devices/a"));
        assert!(scope_covers("hub", "hub", "/devices/a/modules/m"));
        assert!(scope_covers("hub/devices/a", "hub", "/devices/a/modules/m"));
        assert!(!scope_covers("hub/devices/a", "hub", "/devices/ab"));
        assert!(!scope_covers("hub/devices/ab", "hub", "/devices/a"));
        assert!(!scope_covers("other/devices/a", "hub", "/devices/a"));
        assert!(!scope_covers("hub/devices/a", "hub", ""));
    }

    #[test]
    fn device_tokens_from_every_sdk_style_are_accepted() {
        let key = SasKey::from_base64("cGFzc3dvcmQ=").unwrap();
        // tests/data/vectors.json sas_derived: uppercase, lowercase and unencoded `sr`, all
        // se=1578941692.
        for token in [
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=DTUpME%2Fc%2BX9Cvy%2B3r0ZNtHukhBGykBpAx8L30%2BISNuY%3D&se=1578941692",
            "SharedAccessSignature sr=myiothub.azure-devices.net%2fdevices%2fmy_device&sig=WBqBcDSFpPaqv35zUO32zFgXkCqNQzqqGmUXMDBXQ%2Fs%3D&se=1578941692",
            "SharedAccessSignature sr=myiothub.azure-devices.net/devices/my_device&sig=kjeEWFwdGDWfqZx8cZLf6REAZWGnxou%2BxKci21KbSUY%3D&se=1578941692",
        ] {
            let token: SasToken = token.parse().unwrap();
            let host = "myiothub.azure-devices.net";
            assert_eq!(
                authorize_device(
                    &token,
                    host,
                    "my_device",
                    None,
                    &[&key],
                    &[],
                    at(1578941000)
                ),
                Ok(())
            );
            assert_eq!(
                authorize_device(
                    &token,
                    host,
                    "my_device",
                    None,
                    &[&key],
                    &[],
                    at(1578941693)
                ),
                Err(AccessDenied::Expired)
            );
            assert_eq!(
                authorize_device(&token, host, "other", None, &[&key], &[], at(1578941000)),
                Err(AccessDenied::WrongScope)
            );
            let wrong = SasKey::from_bytes(b"wrong");
            assert_eq!(
                authorize_device(
                    &token,
                    host,
                    "my_device",
                    None,
                    &[&wrong],
                    &[],
                    at(1578941000)
                ),
                Err(AccessDenied::BadSignature)
            );
        }
    }

    #[test]
    fn policies_need_their_permission() {
        let key = SasKey::from_bytes(b"policy key");
        let policy = |name: &str| AccessPolicy {
            name: name.into(),
            primary_key: SasKey::from_bytes(b"unused"),
            secondary_key: key.clone(),
            permissions: AccessPolicy::default_permissions(name).unwrap(),
        };
        let policies = [policy("registryRead"), policy("service"), policy("device")];
        let sign = |name: &str, resource: ResourceUri| key.token(&resource, Some(name), 2000);
        let service = sign("service", ResourceUri::service("hub"));
        assert_eq!(
            authorize_service(
                &service,
                "hub",
                &policies,
                Permission::ServiceConnect,
                at(1)
            ),
            Ok(())
        );
        let read = sign("registryRead", ResourceUri::service("hub"));
        assert_eq!(
            authorize_service(&read, "hub", &policies, Permission::RegistryRead, at(1)),
            Ok(())
        );
        assert_eq!(
            authorize_service(&read, "hub", &policies, Permission::RegistryWrite, at(1)),
            Err(AccessDenied::MissingPermission(Permission::RegistryWrite))
        );
        let unknown = sign("nobody", ResourceUri::service("hub"));
        assert_eq!(
            authorize_service(&unknown, "hub", &policies, Permission::RegistryRead, at(1)),
            Err(AccessDenied::UnknownPolicy)
        );
        let on_behalf = sign("device", ResourceUri::device("hub", "d1"));
        assert_eq!(
            authorize_device(&on_behalf, "hub", "d1", None, &[], &policies, at(1)),
            Ok(())
        );
        let service_as_device = sign("service", ResourceUri::device("hub", "d1"));
        assert_eq!(
            authorize_device(&service_as_device, "hub", "d1", None, &[], &policies, at(1)),
            Err(AccessDenied::MissingPermission(Permission::DeviceConnect))
        );
    }
}
