# shellcheck shell=bash
# Makes sure Postgres and Redis answer on 127.0.0.1, for scripts/dev and scripts/check.
# Order of preference: services already running; local packages (installed with
# apt-get if missing, then started); Docker Compose when a Docker engine answers.
# Sourced, not run: it exports DATABASE_URL-style variables for the caller.

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_PASSWORD=${PG_PASSWORD:-postgres}
REDIS_PORT=${REDIS_PORT:-6379}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

pg_url() { echo "postgres://${PG_USER}:${PG_PASSWORD}@${PG_HOST}:${PG_PORT}/$1"; }

# Connects with the Rust-free client if present; falls back to a TCP probe.
pg_answers() {
  if command -v psql >/dev/null; then
    psql "$(pg_url postgres)" -Atqc 'select 1' >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/${PG_HOST}/${PG_PORT}") 2>/dev/null
  fi
}

redis_answers() {
  if command -v redis-cli >/dev/null; then
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/${REDIS_PORT}") 2>/dev/null
  fi
}

# compose: Docker Compose v2 (`docker compose`) or the standalone v1 binary.
compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

# A Docker engine answers and some Compose is installed to drive it.
docker_answers() {
  command -v docker >/dev/null && docker info >/dev/null 2>&1 \
    && { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; }
}

apt_install() {
  command -v apt-get >/dev/null || { log "apt-get not found: install $* yourself"; return 1; }
  log "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

start_local_postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql || return 1
  fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  [ -n "$version" ] || { log "no Postgres cluster found under /etc/postgresql"; return 1; }
  log "starting Postgres $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || as_root service postgresql start
  for _ in $(seq 1 30); do
    as_root runuser -u postgres -- psql -Atqc 'select 1' >/dev/null 2>&1 && break
    sleep 1
  done
}

# A fresh Debian cluster asks TCP clients for a password: give `postgres` the
# development one so DATABASE_URL works. Harmless where auth is trust.
set_dev_password() {
  command -v runuser >/dev/null && [ -d /etc/postgresql ] || return 0
  as_root runuser -u postgres -- psql -Atqc \
    "ALTER USER ${PG_USER} PASSWORD '${PG_PASSWORD}'" >/dev/null 2>&1 || true
}

start_local_redis() {
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server || return 1
  fi
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/voucherd.log
  for _ in $(seq 1 20); do redis_answers && return 0; sleep 0.5; done
}

# ensure_services: Postgres and Redis answer on their ports, or this fails loudly.
ensure_services() {
  if pg_answers && redis_answers; then return 0; fi
  if ! pg_answers && ! redis_answers && docker_answers && [ "${VOUCHERD_NO_DOCKER:-}" != 1 ]; then
    log "starting Postgres and Redis with Docker Compose"
    compose up -d --wait postgres redis
  fi
  if ! pg_answers; then
    start_local_postgres || true
    set_dev_password
  fi
  redis_answers || start_local_redis || true
  pg_answers || { log "Postgres does not answer on ${PG_HOST}:${PG_PORT}"; return 1; }
  redis_answers || { log "Redis does not answer on 127.0.0.1:${REDIS_PORT}"; return 1; }
}

# ensure_database NAME: creates the database if it does not exist.
ensure_database() {
  local name=$1
  if command -v psql >/dev/null; then
    if [ "$(psql "$(pg_url postgres)" -Atqc "select 1 from pg_database where datname = '$name'")" != 1 ]; then
      log "creating database $name"
      psql "$(pg_url postgres)" -qc "CREATE DATABASE \"$name\"" >/dev/null
    fi
  fi
  # Without psql, voucherd's tests and `voucherd migrate` create nothing: the
  # Docker image's POSTGRES_DB covers the Compose path.
}
