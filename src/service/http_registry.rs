//! The identity registry over HTTPS (reqwest with rustls).
//!
//! Requests carry a policy SAS token in `Authorization`, signed once and reused until 80 % of
//! its lifetime; responses are JSON; failures are read from the `iothub-errorcode` header or
//! either error body form into typed errors (the error forms and codes of
//! azure-iot-sdk-csharp `common/src/service/ExceptionHandlingHelper.cs` and
//! `iothub/service/src/Common/Exceptions/ErrorCode.cs`; read by [`error_code`]).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::{IssuedToken, TokenSource};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{
    BulkDeviceOperation, BulkRegistryOperationResult, Device, MethodInvocation, MethodResult,
    Module, PurgeResult, RegistryStatistics, Twin, error_code, error_message, percent,
};

/// The REST api-version sent by the official service SDKs (azure-iot-hub-node `src/version.ts`,
/// azure-iot-hub-python
/// `iot_hub_gateway_service_ap_is.py`: `2021-04-12`).
const API_VERSION: &str = "2021-04-12";

pub(crate) struct HttpRegistry {
    client: reqwest::Client,
    base: String,
    tokens: TokenSource,
    cached: Mutex<Option<IssuedToken>>,
}

/// Maps a failed response to a typed error; the text never holds the request's token.
fn http_error(status: StatusCode, code: Option<String>, what: &str) -> Error {
    let code_name = code.clone().unwrap_or_default();
    let kind = match (status, code_name.as_str()) {
        // Module codes before the device ones they share 404 and 409 with (azure-iot-sdk-csharp
        // `iothub/service/src/Common/Exceptions/ErrorCode.cs`).
        (_, "ModuleNotFound" | "404010") => ErrorKind::ModuleNotFound,
        (_, "ModuleAlreadyExistsOnDevice" | "409301") => ErrorKind::ModuleAlreadyExists,
        // Method calls (Microsoft Learn, "Troubleshoot Azure IoT Hub error 404103
        // DeviceNotOnline" and "... error 504101 GatewayTimeout").
        (_, "DeviceNotOnline" | "404103") => ErrorKind::DeviceNotOnline,
        (_, "GatewayTimeout" | "504101") | (StatusCode::GATEWAY_TIMEOUT, _) => ErrorKind::Timeout,
        (_, "MessageTooLarge" | "413001") | (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            ErrorKind::MessageTooLarge
        }
        (_, "ArgumentInvalid" | "400004") | (StatusCode::BAD_REQUEST, _) => {
            ErrorKind::InvalidMessage
        }
        (_, "DeviceNotFound" | "404001") | (StatusCode::NOT_FOUND, _) => ErrorKind::DeviceNotFound,
        (_, "DeviceAlreadyExists" | "409001") | (StatusCode::CONFLICT, _) => {
            ErrorKind::DeviceAlreadyExists
        }
        (_, "PreconditionFailed" | "412001") | (StatusCode::PRECONDITION_FAILED, _) => {
            ErrorKind::PreconditionFailed
        }
        (_, "ThrottlingException" | "429001") | (StatusCode::TOO_MANY_REQUESTS, _) => {
            ErrorKind::Throttled
        }
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => ErrorKind::Unauthorized,
        (_, "IotHubUnauthorizedAccess" | "401002") => ErrorKind::Unauthorized,
        _ => ErrorKind::Transport,
    };
    let code = code.map(|c| format!(" ({c})")).unwrap_or_default();
    Error::new(kind, format!("{what}: HTTP {}{code}", status.as_u16()))
}

/// A failed response as a typed error with the hub's own text, which says what was wrong
/// (for a 400, which field and why).
fn failure(status: StatusCode, header: Option<&str>, body: &[u8], what: &str) -> Error {
    let error = http_error(status, error_code(header, body), what);
    match error_message(body) {
        Some(text) => Error::new(error.kind(), format!("{}: {text}", error.detail())),
        None => error,
    }
}

/// A request that got no complete answer: [`ErrorKind::Timeout`] when the request timeout ran
/// out, else [`ErrorKind::Transport`].
fn request_failed(error: reqwest::Error, what: &str) -> Error {
    let (kind, detail) = if error.is_timeout() {
        (ErrorKind::Timeout, "no answer within the request timeout")
    } else {
        (ErrorKind::Transport, "the request failed")
    };
    // A refused hub certificate says which CA to trust.
    let hint = crate::client_tls::trust_hint(&error)
        .map(|hint| format!(": {hint}"))
        .unwrap_or_default();
    Error::new(kind, format!("{what}: {detail}{hint}")).with_source(error)
}

impl HttpRegistry {
    pub fn new(client: reqwest::Client, base: String, tokens: TokenSource) -> Self {
        HttpRegistry {
            client,
            base,
            tokens,
            cached: Mutex::new(None),
        }
    }

    /// The `Authorization` value: the cached token until its renewal time, then a new one.
    fn authorization(&self) -> Result<String> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        let fresh = cached
            .as_ref()
            .is_some_and(|t| t.renew_at.is_none_or(|at| now < at) && !t.token.is_expired_at(now));
        if !fresh {
            *cached = Some(self.tokens.token_at(now)?);
        }
        Ok(cached.as_ref().expect("set above").token.to_string())
    }

    /// The URL of `path`, which may carry a query of its own (`/devices?top=5`).
    fn url(&self, path: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{separator}api-version={API_VERSION}", self.base)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<&Device>,
        what: &str,
    ) -> Result<(StatusCode, bytes::Bytes)> {
        self.call_with(method, path, if_match, body, None, what)
            .await
    }

    /// [`Self::call`] with any JSON body, and a request timeout other than the client's.
    async fn call_with<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<&B>,
        timeout: Option<Duration>,
        what: &str,
    ) -> Result<(StatusCode, bytes::Bytes)> {
        let (status, header, body) = self
            .send(method, path, if_match, body, timeout, what)
            .await?;
        if !status.is_success() {
            return Err(failure(status, header.as_deref(), &body, what));
        }
        Ok((status, body))
    }

    /// Sends a request; the answer's status, `iothub-errorcode` header and body, whatever the
    /// status.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<&B>,
        timeout: Option<Duration>,
        what: &str,
    ) -> Result<(StatusCode, Option<String>, bytes::Bytes)> {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("Authorization", self.authorization()?)
            .header("Accept", "application/json");
        if let Some(tag) = if_match {
            request = request.header("If-Match", quoted(tag));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| request_failed(e, what))?;
        let status = response.status();
        let header = response
            .headers()
            .get("iothub-errorcode")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .bytes()
            .await
            .map_err(|e| request_failed(e, what))?;
        Ok((status, header, body))
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<&Device>,
        what: &str,
    ) -> Result<T> {
        let (_, bytes) = self.call(method, path, if_match, body, what).await?;
        decode(&bytes, what)
    }

    pub async fn put_device(&self, device: &Device, if_match: Option<&str>) -> Result<Device> {
        let path = format!("/devices/{}", percent::encode(&device.device_id));
        self.call_json(Method::PUT, &path, if_match, Some(device), "device write")
            .await
    }

    pub async fn get_device(&self, device_id: &str) -> Result<Device> {
        let path = format!("/devices/{}", percent::encode(device_id));
        self.call_json(Method::GET, &path, None, None, "device read")
            .await
    }

    /// `GET /devices[?top=N]`.
    pub async fn list_devices(&self, top: Option<usize>) -> Result<Vec<Device>> {
        let path = match top {
            Some(top) => format!("/devices?top={top}"),
            None => "/devices".to_owned(),
        };
        self.call_json(Method::GET, &path, None, None, "device list")
            .await
    }

    /// `POST /devices`: the bulk operation. IoT Hub answers 400 with the same result body
    /// when an operation failed (see `protocol::BulkRegistryOperationResult`), so both
    /// statuses are read as a result.
    pub async fn bulk(
        &self,
        operations: &[BulkDeviceOperation],
    ) -> Result<BulkRegistryOperationResult> {
        let what = "bulk registry operation";
        let (status, header, body) = self
            .send(Method::POST, "/devices", None, Some(operations), None, what)
            .await?;
        // An error body (`{"Message":…}`) also reads as a result with defaults: only a body
        // with `isSuccessful` is one.
        let result = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .filter(|value| value.get("isSuccessful").is_some())
            .and_then(|value| serde_json::from_value(value).ok());
        if let Some(result) = result {
            if status.is_success() || status == StatusCode::BAD_REQUEST {
                return Ok(result);
            }
        }
        Err(failure(status, header.as_deref(), &body, what))
    }

    pub async fn delete_device(&self, device_id: &str, if_match: &str) -> Result<()> {
        let path = format!("/devices/{}", percent::encode(device_id));
        self.call(Method::DELETE, &path, Some(if_match), None, "device delete")
            .await
            .map(|_| ())
    }

    pub async fn purge(&self, device_id: &str) -> Result<PurgeResult> {
        let path = format!("/devices/{}/commands", percent::encode(device_id));
        self.call_json(Method::DELETE, &path, None, None, "queue purge")
            .await
    }

    pub async fn statistics(&self) -> Result<RegistryStatistics> {
        self.call_json(Method::GET, "/statistics/devices", None, None, "statistics")
            .await
    }

    /// A request with a JSON body and a JSON answer.
    async fn exchange<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<&B>,
        timeout: Option<Duration>,
        what: &str,
    ) -> Result<T> {
        let (_, bytes) = self
            .call_with(method, path, if_match, body, timeout, what)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Transport,
                format!("{what}: unexpected response body"),
            )
            .with_source(e)
        })
    }

    /// `GET /twins/{id}[/modules/{mid}]`.
    pub async fn get_twin(&self, device_id: &str, module_id: Option<&str>) -> Result<Twin> {
        self.exchange::<(), _>(
            Method::GET,
            &twin_path(device_id, module_id),
            None,
            None,
            None,
            "twin read",
        )
        .await
    }

    /// `PATCH` (merge) or `PUT` (replace) `/twins/{id}[/modules/{mid}]` with `If-Match`.
    pub async fn write_twin(
        &self,
        method: Method,
        device_id: &str,
        module_id: Option<&str>,
        body: &serde_json::Value,
        if_match: &str,
    ) -> Result<Twin> {
        self.exchange(
            method,
            &twin_path(device_id, module_id),
            Some(if_match),
            Some(body),
            None,
            "twin write",
        )
        .await
    }

    /// `POST /twins/{id}[/modules/{mid}]/methods`, waiting up to `timeout` for the answer.
    pub async fn invoke_method(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        invocation: &MethodInvocation,
        timeout: Duration,
    ) -> Result<MethodResult> {
        let path = format!("{}/methods", twin_path(device_id, module_id));
        self.exchange(
            Method::POST,
            &path,
            None,
            Some(invocation),
            Some(timeout),
            "method call",
        )
        .await
    }
}

/// `/twins/{id}` or `/twins/{id}/modules/{mid}`, percent-encoded.
fn twin_path(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        None => format!("/twins/{}", percent::encode(device_id)),
        Some(module) => format!(
            "/twins/{}/modules/{}",
            percent::encode(device_id),
            percent::encode(module)
        ),
    }
}

/// A JSON answer read as `T`.
fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Transport,
            format!("{what}: unexpected response body"),
        )
        .with_source(e)
    })
}

/// Module identities, under `/devices/{id}/modules[/{mid}]` (azure-iot-hub-python
/// `protocol/operations/modules_operations.py`; azure-iot-sdk-node `service/src/registry.ts`).
impl HttpRegistry {
    fn module_path(device_id: &str, module_id: &str) -> String {
        format!(
            "/devices/{}/modules/{}",
            percent::encode(device_id),
            percent::encode(module_id)
        )
    }

    /// `PUT`: a create without `If-Match` (IoT Hub answers 201), an update with it (200).
    pub async fn put_module(&self, module: &Module, if_match: Option<&str>) -> Result<Module> {
        let path = Self::module_path(&module.device_id, &module.module_id);
        let (_, bytes) = self
            .call_with(
                Method::PUT,
                &path,
                if_match,
                Some(module),
                None,
                "module write",
            )
            .await?;
        decode(&bytes, "module write")
    }

    pub async fn get_module(&self, device_id: &str, module_id: &str) -> Result<Module> {
        let path = Self::module_path(device_id, module_id);
        let (_, bytes) = self
            .call(Method::GET, &path, None, None, "module read")
            .await?;
        decode(&bytes, "module read")
    }

    pub async fn list_modules(&self, device_id: &str) -> Result<Vec<Module>> {
        let path = format!("/devices/{}/modules", percent::encode(device_id));
        let (_, bytes) = self
            .call(Method::GET, &path, None, None, "module list")
            .await?;
        decode(&bytes, "module list")
    }

    pub async fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        if_match: &str,
    ) -> Result<()> {
        let path = Self::module_path(device_id, module_id);
        self.call(Method::DELETE, &path, Some(if_match), None, "module delete")
            .await
            .map(|_| ())
    }
}

/// Etags go quoted, as both SDKs send them (azure-iot-hub-node `src/registry.ts`,
/// `_ensureQuoted`; azure-iot-hub-python `src/azure/iot/hub/iothub_registry_manager.py`,
/// `_ensure_quoted`): `*` → `"*"`, `abc` → `"abc"`, `"abc"` unchanged.
fn quoted(tag: &str) -> String {
    if tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"') {
        tag.to_owned()
    } else {
        format!("\"{tag}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_as_the_sdks_quote_them() {
        // tests/data/vectors.json rest.etag_if_match_quoting.
        assert_eq!(quoted("*"), "\"*\"");
        assert_eq!(quoted("\"abc\""), "\"abc\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("AAAAAAAAAAE="), "\"AAAAAAAAAAE=\"");
    }

    #[test]
    fn failures_map_to_typed_errors() {
        let kind = |status: u16, code: Option<&str>| {
            http_error(
                StatusCode::from_u16(status).unwrap(),
                code.map(str::to_owned),
                "x",
            )
            .kind()
        };
        assert_eq!(kind(404, Some("DeviceNotFound")), ErrorKind::DeviceNotFound);
        assert_eq!(kind(409, None), ErrorKind::DeviceAlreadyExists);
        assert_eq!(
            kind(412, Some("PreconditionFailed")),
            ErrorKind::PreconditionFailed
        );
        assert_eq!(kind(429, None), ErrorKind::Throttled);
        assert_eq!(
            kind(401, Some("IotHubUnauthorizedAccess")),
            ErrorKind::Unauthorized
        );
        assert_eq!(kind(500, None), ErrorKind::Transport);
        assert_eq!(kind(404, Some("404103")), ErrorKind::DeviceNotOnline);
        assert_eq!(
            kind(404, Some("DeviceNotOnline")),
            ErrorKind::DeviceNotOnline
        );
        assert_eq!(kind(504, Some("504101")), ErrorKind::Timeout);
        assert_eq!(kind(404, Some("ModuleNotFound")), ErrorKind::ModuleNotFound);
        assert_eq!(kind(404, Some("404010")), ErrorKind::ModuleNotFound);
        assert_eq!(
            kind(409, Some("ModuleAlreadyExistsOnDevice")),
            ErrorKind::ModuleAlreadyExists
        );
        assert_eq!(kind(400, None), ErrorKind::InvalidMessage);
    }
}
