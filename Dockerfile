# syntax=docker/dockerfile:1
# sagaflow: one image for every role (coordinator, worker, migrate, start, ...).
#   docker build -t sagaflow .
#   docker run --rm sagaflow sagaflow --help

# --- build ----------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# The store's queries are checked at compile time against .sqlx/ (committed; see
# docs/development.md), never a live database: SQLX_OFFLINE=true (also set by
# .cargo/config.toml). `COPY . .` brings .sqlx/ and .cargo/ along; .dockerignore
# must not exclude them.
ENV SQLX_OFFLINE=true
COPY . .
# Cache mounts (BuildKit) keep the crate registry and compiled dependencies
# between builds; the binary is copied out because the target dir is a mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sagaflow \
    && cp target/release/sagaflow /usr/local/bin/sagaflow

# --- runtime --------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sagaflow
COPY --from=builder /usr/local/bin/sagaflow /usr/local/bin/sagaflow
WORKDIR /app
COPY sagas/ /app/sagas/
COPY config/ /app/config/
COPY migrations/ /app/migrations/
USER sagaflow
# Settings come from /app/config/default.toml, overridden by SAGAFLOW__* env vars.
CMD ["sagaflow", "--help"]
