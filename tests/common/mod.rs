//! A raw MQTT client for testing the local hub byte for byte: rumqttc's packet codec over
//! tokio-rustls, with every wait bounded by a timeout.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use iothub::auth::{DeviceConnectionString, TokenSource};
use iothub::local_hub::LocalHub;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet};
use rumqttc::mqttbytes::{self};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub async fn tls_stream(hub: &LocalHub, port: u16) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls_config(hub.ca_pem()));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// The user name the official SDKs send (Microsoft Learn, "Communicate with an IoT hub using
/// the MQTT protocol": `{iotHub-hostname}/{device-id}/?api-version=2021-04-12`), with our client
/// type.
pub fn username(cs: &DeviceConnectionString) -> String {
    let identity = match cs.module_id() {
        Some(m) => format!("{}/{m}", cs.device_id()),
        None => cs.device_id().to_owned(),
    };
    format!(
        "{}/{identity}/?api-version=2021-04-12&DeviceClientType=iothub-tests%2F0.1",
        cs.host_name()
    )
}

pub fn password(cs: &DeviceConnectionString) -> String {
    TokenSource::for_device(cs)
        .unwrap()
        .token()
        .unwrap()
        .token
        .to_string()
}

pub fn connect_packet(client_id: &str, username: &str, password: &str, keep_alive: u16) -> Packet {
    let mut connect = Connect::new(client_id);
    connect.keep_alive = keep_alive;
    connect.clean_session = false;
    connect.login = Some(Login::new(username, password));
    Packet::Connect(connect)
}

pub struct RawClient<S> {
    stream: S,
    read: BytesMut,
}

impl RawClient<tokio_rustls::client::TlsStream<TcpStream>> {
    /// A TLS connection to the hub's MQTT port, nothing sent yet.
    pub async fn open(hub: &LocalHub) -> Self {
        RawClient::over(tls_stream(hub, hub.mqtt_addr().port()).await)
    }

    /// Connects as the device of `cs` with a valid token; returns the client and the CONNACK.
    pub async fn connect(hub: &LocalHub, cs: &DeviceConnectionString) -> (Self, Packet) {
        let mut client = Self::open(hub).await;
        client
            .send(connect_packet(
                cs.device_id(),
                &username(cs),
                &password(cs),
                60,
            ))
            .await;
        let connack = client.recv().await;
        (client, connack)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    pub fn over(stream: S) -> Self {
        RawClient {
            stream,
            read: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.write(&mut buf, usize::MAX).unwrap();
        self.stream.write_all(&buf).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next packet, or `None` when the hub closed the connection; panics after `WAIT`.
    pub async fn try_recv(&mut self) -> Option<Packet> {
        timeout(WAIT, async {
            loop {
                match Packet::read(&mut self.read, 1 << 20) {
                    Ok(packet) => return Some(packet),
                    Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("malformed packet from the hub: {e}"),
                }
                match self.stream.read_buf(&mut self.read).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the hub answered in time")
    }

    pub async fn recv(&mut self) -> Packet {
        self.try_recv()
            .await
            .expect("the hub closed the connection")
    }

    /// Waits until the hub closes the connection, ignoring packets; panics after `WAIT`.
    pub async fn expect_closed(&mut self) {
        while self.try_recv().await.is_some() {}
    }
}

/// A TLS connection to `port` from the source address `from`, or `None` when the hub closed
/// it before the handshake finished.
pub async fn tls_from(
    hub: &LocalHub,
    from: std::net::Ipv4Addr,
    port: u16,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let tcp = socket.connect(([127, 0, 0, 1], port).into()).await.ok()?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(hub.ca_pem()));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    timeout(WAIT, connector.connect(name, tcp)).await.ok()?.ok()
}

/// Waits until the hub closes `stream` (end of stream or an error), reading whatever it sends.
pub async fn closed_by_hub<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 512];
    timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// An AMQP connection (no SASL, no token yet) over TLS to the hub's IoT Hub AMQP port, as a
/// back end opens it before its CBS put-token.
pub async fn amqp_connection(
    hub: &LocalHub,
    container_id: &str,
) -> fe2o3_amqp::connection::ConnectionHandle<()> {
    let tls = tls_stream(hub, hub.amqp_addr().port()).await;
    timeout(
        WAIT,
        fe2o3_amqp::Connection::builder()
            .container_id(container_id)
            .hostname("localhost")
            .scheme("amqp")
            .open_with_stream(tls),
    )
    .await
    .unwrap()
    .unwrap()
}
