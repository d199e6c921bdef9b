# syntax=docker/dockerfile:1
#
# virus-scanner, in one of three flavors:
#   docker build --build-arg FLAVOR=producer .   ICAP, ICAPS and ext_proc frontends; queues to Redis
#   docker build --build-arg FLAVOR=consumer .   the handler: scans what is queued, with clamd
#   docker build --build-arg FLAVOR=all .        frontends and scanning in one process (no Redis)
# For amd64 and arm64 at once:
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg FLAVOR=producer .
# Each platform builds natively (under emulation for the other), so no cross
# toolchain is needed. clamd runs in its own container (CLAMD_URL).

ARG FLAVOR=all

FROM rust:1-bookworm AS build
WORKDIR /src
# The manifests first, so that dependencies are cached apart from the code.
COPY Cargo.toml Cargo.lock ./
COPY icap/Cargo.toml icap/Cargo.toml
COPY grpc/Cargo.toml grpc/Cargo.toml
COPY content/Cargo.toml content/Cargo.toml
COPY icap icap
COPY grpc grpc
COPY content content
COPY src src
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      --bin virus-scanner --bin virus-scanner-producer --bin virus-scanner-handler \
 && mkdir -p /out \
 && cp target/release/virus-scanner target/release/virus-scanner-producer \
       target/release/virus-scanner-handler /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin scanner \
 && mkdir -p /scan && chown scanner /scan
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
ENV LISTEN_ADDR=0.0.0.0 \
    LOG_FORMAT=json
# Metrics, /healthz and /readyz in every flavor.
EXPOSE 8080

FROM runtime AS producer
# ICAP, ICAPS, Envoy ext_proc.
EXPOSE 1344 11344 50051
ENTRYPOINT ["/usr/local/bin/virus-scanner-producer"]

FROM runtime AS consumer
ENTRYPOINT ["/usr/local/bin/virus-scanner-handler"]

FROM runtime AS all
EXPOSE 1344 11344 50051
ENTRYPOINT ["/usr/local/bin/virus-scanner", "all"]

FROM ${FLAVOR}
