# syntax=docker/dockerfile:1
#
# One Dockerfile for the three hookfleet services. The builder stage compiles
# all three binaries once; each service has its own small final stage:
#
#   docker build --target producer -t hookfleet/producer:dev .
#   docker build --target worker   -t hookfleet/worker:dev   .
#   docker build --target ledger   -t hookfleet/ledger:dev   .
#
# The database migrations are embedded in the binaries: run them with
# `hookfleet-producer migrate` (the producer image's command `migrate`).
# See infra/k8s/README.md.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
# Build: the whole workspace is copied (every member must be present for Cargo
# to load it), then the three service binaries are built from Cargo.lock.
# The cache mounts keep the registry and target/ between builds (BuildKit).
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=hookfleet-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=hookfleet-target,target=/src/target \
    cargo build --release --locked \
        -p hookfleet-producer -p hookfleet-worker -p hookfleet-ledger \
    && mkdir -p /out \
    && cp target/release/hookfleet-producer \
          target/release/hookfleet-worker \
          target/release/hookfleet-ledger /out/

# ---------------------------------------------------------------------------
# Runtime base: Debian slim with CA certificates (TLS is rustls, so no OpenSSL)
# and an unprivileged user. bash stays in the image: the compose healthchecks
# use its /dev/tcp to call /readyz without installing curl.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hookfleet \
    && useradd --system --uid 10001 --gid hookfleet --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin hookfleet
# In a container the services must listen on every interface (the default is
# 127.0.0.1). Everything else comes from HOOKFLEET__SECTION__KEY variables.
ENV HOOKFLEET__LISTEN__HOST=0.0.0.0
USER 10001:10001
WORKDIR /

# ---------------------------------------------------------------------------
FROM runtime AS producer
COPY --from=builder /out/hookfleet-producer /usr/local/bin/hookfleet-producer
ENV HOOKFLEET__LISTEN__PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/hookfleet-producer"]
CMD ["serve"]

FROM runtime AS ledger
COPY --from=builder /out/hookfleet-ledger /usr/local/bin/hookfleet-ledger
ENV HOOKFLEET__LISTEN__PORT=8081
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/hookfleet-ledger"]
CMD ["serve"]

# Last, so that a plain `docker build .` produces the worker image.
FROM runtime AS worker
COPY --from=builder /out/hookfleet-worker /usr/local/bin/hookfleet-worker
ENV HOOKFLEET__LISTEN__PORT=8082
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/hookfleet-worker"]
CMD ["serve"]
