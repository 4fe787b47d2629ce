# meshproxy as a drop-in for Envoy in a proxy image: the binary is installed as
# /usr/local/bin/meshproxy and /usr/local/bin/envoy, the path pilot-agent starts.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p meshproxy --bin meshproxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/meshproxy /usr/local/bin/meshproxy
RUN ln -s /usr/local/bin/meshproxy /usr/local/bin/envoy
EXPOSE 10000 15000
ENTRYPOINT ["/usr/local/bin/meshproxy"]
