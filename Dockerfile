# syntax=docker/dockerfile:1
#
# revokd container image: build with the pinned Rust toolchain, ship only the
# binary on distroless (glibc + libgcc, no shell, no package manager).
#
#   docker build -t revokd:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD) .
#
# Needs BuildKit (the default builder since Docker 23; `DOCKER_BUILDKIT=1`
# before that): the build caches crates and target/ in cache mounts. The
# classic builder stops at the first RUN with "the --mount option requires
# BuildKit".
#
# No system protoc is needed: build.rs compiles proto/ with protox.

FROM rust:1.95-bookworm AS build
# The commit, for `revokd --version` and revokd_build_info (the context has no .git).
ARG GIT_SHA=unknown
ENV REVOKD_GIT_SHA=${GIT_SHA}
WORKDIR /src
# Everything the build reads: Cargo.toml, Cargo.lock, build.rs, proto/, src/
# and any bench/example/test targets Cargo.toml declares (.dockerignore keeps
# the rest out of the context).
COPY . .
# The cache mounts keep the crate registry and target/ between builds, so
# the binary is copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin revokd \
    && install -D -m 0755 target/release/revokd /out/revokd

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="revokd" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.description="gRPC JWT issue/verify/revoke sidecar with a Redis revocation store" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/revokd /revokd
# The distroless "nonroot" user, numeric so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# 9464: admin HTTP (/healthz, /readyz, /metrics, /.well-known/jwks.json).
# 50051: gRPC, bound to 127.0.0.1 by default (only containers in the same pod).
# 50052: HTTP API (forward-auth), bound to 127.0.0.1 by default.
EXPOSE 9464 50051 50052
ENTRYPOINT ["/revokd", "serve"]
