# Builds voucherd in a Rust image and ships it in a slim Debian runtime.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# Queries are checked at build time against the schema recorded in .sqlx/; the
# build needs no database (SQLX_OFFLINE, also set in .cargo/config.toml).
COPY .cargo .cargo
COPY .sqlx .sqlx
ENV SQLX_OFFLINE=true
COPY src src
# The docs page and its vendored script, embedded in the binary.
COPY assets assets
COPY migrations migrations
COPY loadtest/loadgen loadtest/loadgen
RUN cargo build --release --locked -p voucherd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system voucherd
COPY --from=build /src/target/release/voucherd /usr/local/bin/voucherd
USER voucherd
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["voucherd"]
CMD ["serve"]
