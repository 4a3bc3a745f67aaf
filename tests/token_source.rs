//! Token sources sign for the right resource, with `skn` only for policy keys.

use std::time::{Duration, UNIX_EPOCH};

use iothub::auth::{DeviceConnectionString, ServiceConnectionString, TokenSource};

const KEY: &str = "cGFzc3dvcmQ=";

#[test]
fn device_module_policy_and_service_tokens() {
    let now = UNIX_EPOCH + Duration::from_secs(1_578_938_092);
    let cases = [
        (
            format!("HostName=myiothub.azure-devices.net;DeviceId=my_device;SharedAccessKey={KEY}"),
            // vectors.json sas_derived "device / uppercase-encoded"
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=DTUpME%2Fc%2BX9Cvy%2B3r0ZNtHukhBGykBpAx8L30%2BISNuY%3D&se=1578941692",
        ),
        (
            format!(
                "HostName=myiothub.azure-devices.net;DeviceId=my_device;ModuleId=my_module;SharedAccessKey={KEY}"
            ),
            // vectors.json sas_derived "module / uppercase-encoded"
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module&sig=80jomKn6vs0OeeeoN3zrbYSbhs7igjsPbH0iL2PYQgk%3D&se=1578941692",
        ),
    ];
    for (cs, expected) in cases {
        let cs: DeviceConnectionString = cs.parse().unwrap();
        let issued = TokenSource::for_device(&cs).unwrap().token_at(now).unwrap();
        assert_eq!(issued.token.as_str(), expected);
        assert_eq!(issued.renew_at, Some(now + Duration::from_secs(2880)));
    }

    // A policy key on a device's behalf: same resource, plus skn.
    let cs: DeviceConnectionString = format!(
        "HostName=myiothub.azure-devices.net;DeviceId=my_device;SharedAccessKeyName=device;SharedAccessKey={KEY}"
    )
    .parse()
    .unwrap();
    let issued = TokenSource::for_device(&cs).unwrap().token_at(now).unwrap();
    assert!(issued.token.as_str().ends_with("&se=1578941692&skn=device"));
    assert_eq!(
        issued.token.resource().unwrap(),
        "myiothub.azure-devices.net/devices/my_device"
    );

    // vectors.json sas_derived "service policy iothubowner"
    let cs: ServiceConnectionString = format!(
        "HostName=myiothub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
    )
    .parse()
    .unwrap();
    let source = TokenSource::for_service(&cs);
    assert!(source.is_renewable());
    assert_eq!(
        source.token_at(now).unwrap().token.as_str(),
        "SharedAccessSignature sr=myiothub.azure-devices.net&sig=ONjwaby5jdgc6E14k3x4LHT8DV%2FKa7T6W98sE6trB7w%3D&se=1578941692&skn=iothubowner"
    );
}

#[test]
fn ttl_sets_expiry_and_renewal_and_fractions_round_up() {
    let cs: DeviceConnectionString = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}")
        .parse()
        .unwrap();
    let source = TokenSource::for_device(&cs)
        .unwrap()
        .with_ttl(Duration::from_secs(100));
    let now = UNIX_EPOCH + Duration::new(1_000, 1);
    let issued = source.token_at(now).unwrap();
    assert_eq!(issued.token.expiry_secs(), 1_101);
    assert_eq!(issued.renew_at, Some(now + Duration::from_secs(80)));
}

#[test]
fn a_fixed_signature_is_handed_out_as_is() {
    let token = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc%3D&se=2000000000";
    let cs: DeviceConnectionString = format!("HostName=h;DeviceId=d;SharedAccessSignature={token}")
        .parse()
        .unwrap();
    let source = TokenSource::for_device(&cs).unwrap();
    assert!(!source.is_renewable());
    let issued = source
        .token_at(UNIX_EPOCH + Duration::from_secs(1_999_999_999))
        .unwrap();
    assert_eq!(issued.token.as_str(), token);
    assert_eq!(issued.renew_at, None);
}
