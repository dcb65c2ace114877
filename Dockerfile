# syntax=docker/dockerfile:1
# One image with every offport binary. Build: docker build -t offport .
# Run a stage: docker run offport offport-normalize-proxy --config /etc/offport/offport.yaml

FROM rust:1.95-bookworm AS build
# librdkafka is compiled by rdkafka-sys (bash configure, make, gcc: all in this image); it links
# OpenSSL and zlib found through pkg-config.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p normalize-proxy -p normalize-edr -p normalize-mdm -p joiner -p scorer -p offportctl \
 && mkdir -p /out \
 && cp target/release/offport-normalize-proxy target/release/offport-normalize-edr \
       target/release/offport-normalize-mdm target/release/offport-joiner \
       target/release/offport-scorer target/release/offportctl /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 offport \
 && useradd --system --uid 10001 --gid offport --no-create-home --shell /usr/sbin/nologin offport
COPY --from=build /out/ /usr/local/bin/
# Non-root, and nothing is written to the image's filesystem: runs with a read-only root.
USER 10001:10001
ENV OFFPORT__LOG__JSON=true
CMD ["offportctl", "--help"]
