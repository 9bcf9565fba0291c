# syntax=docker/dockerfile:1
# One image for every role: the entrypoint is `swarm` (`coordinator`, `worker`, `up`, …).
#   docker build -t "$SWARM_IMAGE" .
# Base images are build arguments; pin them (by digest in production).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p swarm-cli \
 && install -D -m 0755 target/release/swarm /out/swarm

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates bubblewrap python3-minimal \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 swarm \
 && useradd --system --uid 10001 --gid swarm --home-dir /var/lib/swarm --create-home swarm
COPY --from=build /out/swarm /usr/local/bin/swarm
USER 10001:10001
WORKDIR /var/lib/swarm
# gRPC API, HTTP (web view, /metrics), plaintext health.
EXPOSE 7070 9090 7079
ENTRYPOINT ["swarm"]
CMD ["up", "--listen", "0.0.0.0:7070", "--http-listen", "0.0.0.0:9090"]
