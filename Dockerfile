# syntax=docker/dockerfile:1
#
# mcpgate container image: a release build on Debian, run on distroless/cc
# (glibc and CA certificates, no shell) as an unprivileged user.
#
#   docker build -t mcpgate .
#   docker run -p 8000:8000 -v mcpgate-data:/data \
#     -e MCPGATE_PUBLIC_URL=https://mcp.example.com mcpgate
#
# Guides: docs/deploy/README.md.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Only what the build reads (the manifest names tests/it and the fixture as
# targets, so they must exist even though only the binary is built).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY docs ./docs
COPY benches ./benches
COPY tests/it ./tests/it
COPY tests/fixture_upstream ./tests/fixture_upstream
# Cache mounts keep the registry and incremental artefacts between builds;
# the binary is copied out because the target cache is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mcpgate \
    && install -D -m 0755 target/release/mcpgate /out/mcpgate \
    && install -d -m 0700 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mcpgate /usr/local/bin/mcpgate
# The SQLite database and the generated encryption key live here; with
# PostgreSQL (any deployment of more than one replica) it holds nothing.
COPY --from=build --chown=65532:65532 /out/data /data
# Inside a container mcpgate must listen on every interface. public_url is
# the operator's to set (MCPGATE_PUBLIC_URL): local mode refuses to start
# without an https one (http only on loopback), so a wrong guess never ships.
ENV MCPGATE_LISTEN=0.0.0.0:8000 \
    MCPGATE_DATA_DIR=/data \
    MCPGATE_LOG__FORMAT=json
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
USER 65532:65532
# No curl in the image: the binary probes its own /healthz on MCPGATE_LISTEN.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/mcpgate", "healthcheck", "--timeout-secs", "4"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mcpgate"]
CMD ["serve"]
