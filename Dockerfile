# syntax=docker/dockerfile:1
# flujo: one image for every role (receiver, router, consumer, or all of them).
#
#   docker build -t flujo:dev .
#   docker run --rm -p 8080:8080 flujo:dev                  # embedded default, all roles
#   docker run --rm flujo:dev run --role consumer --bus kafka --kafka kafka:9092 ...
#
# Configuration comes from flags or FLUJO__SECTION__KEY variables (`flujo config`
# prints the result); the Kubernetes manifests in manifests/ set the variables.

# --- build ---------------------------------------------------------------------
FROM rust:1-bookworm AS builder
# librdkafka is compiled from source by rdkafka-sys (its configure/make build, or
# cmake with rdkafka's cmake-build feature): a C toolchain and cmake; it links
# Debian's OpenSSL for Kafka TLS and SASL (libssl-dev, found with pkg-config). The
# protobuf files are compiled by protox, in Rust, so no protoc is needed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock. The cache mounts keep
# the registry and the build between builds (BuildKit); the binary is copied out
# of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin flujo \
    && install -D -m 0755 target/release/flujo /out/flujo

# --- run -------------------------------------------------------------------------
# distroless/cc: glibc, libgcc, libssl3 and the CA certificates (all the binary
# links against: librdkafka is linked in statically, OpenSSL dynamically, Debian
# 12's libssl3 in both stages), no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/flujo /usr/local/bin/flujo
# The uid the Kubernetes manifests run as (runAsUser: 10001, runAsNonRoot).
USER 10001:10001
# HTTP (ingest, query API, /metrics, /healthz, /readyz), gRPC, TCP line protocol.
EXPOSE 8080 50051 7070
ENTRYPOINT ["/usr/local/bin/flujo"]
CMD ["run"]
