# iothub-local, the local Azure IoT Hub, as a container (as Azure's Event Hubs and Service Bus
# emulators ship one). Not built or tested in CI: CI tests the binary itself
# (tests/iothub_local_cli.rs, tests/local_hub_restart.rs).
#
#   docker build -t iothub-local .
#   docker run --rm -p 8883:8883 -p 443:443 -p 5671:5671 -p 5672:5672 -p 5673:5673 \
#       -v iothub-data:/data iothub-local --device dev1
#
# The state (CA, keys, devices, queued messages, telemetry) lives in the /data volume, so the
# connection strings and the CA stay valid across container restarts. The printed lines are
# also in /data/iothub-local.env; the CA that clients must trust is /data/ca.pem
# (`docker cp <container>:/data/ca.pem .`). `docker stop` sends SIGTERM, which stops the hub
# cleanly.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock README.md ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --features cli --bin iothub-local

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data iothub \
    && mkdir /data && chown iothub /data
COPY --from=build /src/target/release/iothub-local /usr/local/bin/iothub-local
USER iothub
VOLUME /data
# MQTT over TLS, HTTPS and WebSockets, AMQP over TLS, the Event Hubs-compatible endpoint over
# plain TCP (UseDevelopmentEmulator=true) and over TLS.
EXPOSE 8883 443 5671 5672 5673
ENTRYPOINT ["iothub-local", "--bind", "0.0.0.0", "--state-dir", "/data", \
    "--env-out", "/data/iothub-local.env", \
    "--event-hubs-emulator-port", "5672", "--event-hubs-port", "5673"]
