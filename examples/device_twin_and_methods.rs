//! Device twins and direct methods in one process, on the embedded local hub:
//!
//! ```sh
//! cargo run --features local-hub --example device_twin_and_methods
//! ```
//!
//! A thermostat device ([`DeviceClient`], MQTT) connects, reports its firmware and temperature
//! (reported properties), and listens to desired-property changes and direct methods. The back
//! end ([`RegistryManager`], HTTPS) then sets a new target temperature (desired properties),
//! which the device applies and reports back, calls the device's `reboot` method, which the
//! device answers, and reads the twin. Every step is printed; the program ends in a second or
//! two.

use std::process::ExitCode;
use std::time::Duration;

use iothub::device::{DesiredUpdateKind, DeviceClient};
use iothub::local_hub::LocalHub;
use iothub::protocol::TwinPatch;
use iothub::service::RegistryManager;
use serde_json::json;
use tokio::time::timeout;

const DEVICE_ID: &str = "thermostat-1";
/// How long the example waits for anything before it gives up.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> ExitCode {
    match timeout(WAIT, run()).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("device_twin_and_methods: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("device_twin_and_methods: gave up after {WAIT:?}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> iothub::Result<()> {
    // An IoT Hub on this machine, and a registered device.
    let hub = LocalHub::builder().start().await?;
    let connection_string = hub.create_device(DEVICE_ID)?;
    println!(
        "local hub '{}' running; device '{DEVICE_ID}' registered",
        hub.host_name()
    );

    // The device: connect, report what it is, listen to desired changes and methods.
    let device = DeviceClient::builder(connection_string)
        .trust_ca_pem(hub.ca_pem())
        .connect()
        .await?;
    let version = device
        .update_reported_properties(json!({
            "firmware": "1.4.2",
            "temperature": 20.5,
            "targetTemperature": 20.0,
        }))
        .await?;
    println!("device: reported firmware and temperature (reported $version {version})");
    let mut desired = device.desired_property_updates().await?;
    let mut methods = device.method_requests().await?;
    let first = desired.recv().await?;
    println!(
        "device: desired properties at start: {} ($version {})",
        serde_json::Value::Object(first.properties),
        first.version
    );

    // The device's side, in the background: apply desired changes and report them back;
    // answer `reboot`, refuse anything else.
    let worker = device.clone();
    let (applied_tx, mut applied) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok(update) = desired.recv().await {
            let kind = match update.kind {
                DesiredUpdateKind::Patch => "patch",
                DesiredUpdateKind::FullDocument => "full document",
                _ => "update",
            };
            println!(
                "device: desired {kind} $version {}: {}",
                update.version,
                serde_json::Value::Object(update.properties.clone())
            );
            if let Some(target) = update.properties.get("targetTemperature") {
                let reported = json!({ "targetTemperature": target });
                match worker.update_reported_properties(reported).await {
                    Ok(v) => {
                        println!("device: applied and reported it (reported $version {v})");
                        let _ = applied_tx.send(v).await;
                    }
                    Err(e) => eprintln!("device: cannot report: {e}"),
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Ok(request) = methods.recv().await {
            println!(
                "device: method '{}' called with {}",
                request.name(),
                request.payload()
            );
            let outcome = match request.name() {
                "reboot" => request.respond(200, json!({ "rebooting": true })).await,
                _ => {
                    request
                        .respond(404, json!({ "error": "no such method" }))
                        .await
                }
            };
            if let Err(e) = outcome {
                eprintln!("device: cannot answer: {e}");
            }
        }
    });

    // The back end, with the hub's `iothubowner` connection string (a hub in Azure needs only
    // that; this one has its own CA and ports): a new target temperature, then a method call.
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()?;
    let patch = TwinPatch::new().desired(json!({ "targetTemperature": 22.5 }));
    let twin = registry.update_twin(DEVICE_ID, &patch, None).await?;
    println!(
        "back end: set targetTemperature 22.5 (desired $version {})",
        twin.properties.desired_version().unwrap_or_default()
    );
    let result = registry
        .invoke_device_method(
            DEVICE_ID,
            "reboot",
            json!({ "delaySeconds": 5 }),
            Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .await?;
    println!(
        "back end: 'reboot' answered {} with {}",
        result.status, result.payload
    );

    // Once the device has reported the new target, read the twin as the back end.
    applied.recv().await;
    let mut reported = registry.get_twin(DEVICE_ID).await?.properties.reported;
    reported.remove("$metadata"); // per-property update times; not needed here
    println!(
        "back end: the twin's reported properties now: {}",
        serde_json::Value::Object(reported)
    );
    device.close().await?;
    hub.shutdown().await;
    Ok(())
}
