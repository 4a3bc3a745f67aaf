//! Edge scopes in the registry: an edge device's own `deviceScope`, and the checks on the
//! scopes a registry write gives a leaf device (its parent) or an edge device (its parents).

use super::Inner;
use super::identities::{DeviceSpec, RegistryError};

/// Where a device sits under IoT Edge gateways (Microsoft Learn, "Understand the identity
/// registry in your IoT hub", device identity properties `deviceScope` and `parentScopes`;
/// azure-iot-hub-python `protocol/models/device_py3.py`, `device_scope` / `parent_scopes`).
/// A leaf device's `deviceScope` is its parent edge device's scope and its `parentScopes` is
/// that one scope; an edge device's `deviceScope` is its own and its `parentScopes` names at
/// most one parent edge device (nested edge).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceScopes {
    /// A leaf device's parent scope (ignored for an edge device, whose scope is its own).
    pub device_scope: Option<String>,
    /// An edge device's parent scopes (a leaf device's is its `device_scope`).
    pub parent_scopes: Vec<String>,
}

/// An edge device's own scope, `ms-azure-iot-edge://{id}-{generationId}`, the shape IoT Hub
/// gives edge devices (and the one `az iot hub device-identity` shows).
pub(crate) fn edge_scope(device_id: &str, generation_id: &str) -> String {
    format!("ms-azure-iot-edge://{device_id}-{generation_id}")
}

impl Inner {
    /// `scopes` for `spec`, checked against the registry: a leaf device's `deviceScope` and an
    /// edge device's `parentScopes` must each be the scope of another edge device here (IoT
    /// Hub refuses others with 400). An edge device's `deviceScope` is the hub's to set, so
    /// whatever a request carries there (a body copied from a `GET`) is dropped.
    pub(super) fn checked_scopes(
        &self,
        spec: &DeviceSpec,
        mut scopes: DeviceScopes,
    ) -> Result<DeviceScopes, RegistryError> {
        if spec.iot_edge {
            scopes.device_scope = None;
            if scopes.parent_scopes.len() > 1 {
                return Err(RegistryError::InvalidScope(
                    "an edge device has at most one parent: parentScopes holds more than one \
                     scope"
                        .to_owned(),
                ));
            }
        } else {
            // A leaf device's parentScopes is derived from its deviceScope: what a request
            // carries there (a body copied from a `GET`) is dropped.
            scopes.parent_scopes.clear();
        }
        let wanted = scopes
            .device_scope
            .iter()
            .chain(scopes.parent_scopes.iter())
            .filter(|scope| !scope.is_empty());
        for scope in wanted {
            let owner = self.devices.values().find(|d| {
                d.record.iot_edge
                    && edge_scope(&d.record.device_id, &d.record.generation_id) == *scope
            });
            match owner {
                Some(d) if d.record.device_id == spec.device_id => {
                    return Err(RegistryError::InvalidScope(format!(
                        "the scope '{scope}' is the device's own: a device cannot be its own parent"
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(RegistryError::InvalidScope(format!(
                        "the scope '{scope}' is not the deviceScope of an edge device of this \
                         hub: read the parent edge device and copy its deviceScope"
                    )));
                }
            }
        }
        scopes.device_scope = scopes.device_scope.filter(|s| !s.is_empty());
        scopes.parent_scopes.retain(|s| !s.is_empty());
        Ok(scopes)
    }
}
