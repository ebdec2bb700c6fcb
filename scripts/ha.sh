# shellcheck shell=bash
# The local HA stack (scripts/ha): its layout, and helpers a drill script sources to
# find, kill, freeze, restart or switch over Postgres nodes:
#
#   source scripts/ha.sh
#   leader=$(ha_leader); ha_kill_node "$leader"; ha_wait_primary 30; ha_start_node "$leader"
#
# Layout, every port on 127.0.0.1:
#   etcd       e1 e2 e3      clients 2479 2579 2679, peers 2480 2580 2680 (not etcd's
#                            usual 2379/2380: a packaged etcd may run there)
#   Patroni    pg1 pg2 pg3   Postgres 5441 5442 5443, REST API 8008 8009 8010
#   HAProxy    5000 the primary, 5001 the replicas, 7000 stats page,
#              8090 the voucherd replicas
#   voucherd   replica k on 8080+k (8081, 8082, ...)
# Everything else (data, rendered configs, logs, pid files) is under HA_DIR:
#   $HA_DIR/etcd/eK/          etcd member data          $HA_DIR/log/*.log  every log
#   $HA_DIR/pgK/patroni.yml   a node's configuration    $HA_DIR/pgK/data   its data dir
#   $HA_DIR/run/*.pid         pid files                 $HA_DIR/haproxy.cfg
# Nothing here starts or stops anything when sourced.

# shellcheck disable=SC2034 # read by scripts/ha and by drills
{
HA_DIR=${HA_DIR:-/var/tmp/voucherd-ha}
HA_NODES=(pg1 pg2 pg3)
HA_ETCD=(e1 e2 e3)
HA_PG_BIN=${HA_PG_BIN:-/usr/lib/postgresql/15/bin}
HA_PRIMARY_PORT=5000
HA_REPLICA_PORT=5001
HA_STATS_PORT=7000
HA_VOUCHERD_PORT=8090
HA_PRIMARY_URL=postgres://postgres:postgres@127.0.0.1:${HA_PRIMARY_PORT}/voucherd
HA_REPLICA_URL=postgres://postgres:postgres@127.0.0.1:${HA_REPLICA_PORT}/voucherd
}

# Drills often source scripts/services.sh too: keep its log if it is there.
declare -F log >/dev/null || log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Ports of node pgK / etcd member eK / voucherd replica k.
ha_index() { echo "${1//[!0-9]/}"; }
ha_pg_port() { echo $((5440 + $(ha_index "$1"))); }
ha_rest_port() { echo $((8007 + $(ha_index "$1"))); }
ha_etcd_client_port() { echo $((2379 + 100 * $(ha_index "$1"))); }
ha_etcd_peer_port() { echo $((2380 + 100 * $(ha_index "$1"))); }
ha_voucherd_port() { echo $((8080 + $1)); }
ha_etcd_endpoints() {
  local e out=()
  for e in "${HA_ETCD[@]}"; do out+=("http://127.0.0.1:$(ha_etcd_client_port "$e")"); done
  (IFS=,; echo "${out[*]}")
}
ha_patroni_conf() { echo "$HA_DIR/$1/patroni.yml"; }

# ha_pid PIDFILE MARKER: the pid in PIDFILE, if that process is alive and its
# command line contains MARKER (a pid file that outlived a reboot names a stranger).
ha_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
  echo "$pid"
}

# ha_spawn PIDFILE LOG [--as USER] CMD...: runs CMD in a session of its own (a
# Ctrl-C in the caller's terminal does not reach it), stdin closed, appending to
# LOG; CMD writes its own pid to PIDFILE, so the pid is right whatever job control
# the caller has.
ha_spawn() {
  local pidfile=$1 logfile=$2 as=()
  shift 2
  if [ "$1" = --as ]; then as=(setpriv --reuid="$2" --regid="$2" --init-groups); shift 2; fi
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner sh
  setsid "${as[@]}" sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
  for _ in $(seq 1 50); do [ -s "$pidfile" ] && return 0; sleep 0.05; done
  log "$(basename "$pidfile" .pid) did not start (see $logfile)"; return 1
}

# ha_stop_pid PID [SECONDS]: SIGTERM, then SIGKILL if it is still there.
ha_stop_pid() {
  local pid=$1 wait=${2:-20}
  kill -CONT "$pid" 2>/dev/null || true  # a frozen process cannot act on SIGTERM
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((wait * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid ignored SIGTERM for ${wait}s: SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
}

# --- Patroni nodes -------------------------------------------------------------

# ha_patroni_pid NODE: Patroni's pid (fails when it is not running).
ha_patroni_pid() { ha_pid "$HA_DIR/$1/patroni.pid" "$(ha_patroni_conf "$1")"; }

# ha_postmaster_pid NODE: the postmaster's pid, from its data directory.
ha_postmaster_pid() {
  local pid
  pid=$(head -n1 "$HA_DIR/$1/data/postmaster.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] || return 1
  echo "$pid"
}

# ha_node_pids NODE: Patroni, the postmaster and its children (each Postgres child
# has a session of its own, so they are found by parent).
ha_node_pids() {
  local pm
  ha_patroni_pid "$1" || true
  if pm=$(ha_postmaster_pid "$1"); then echo "$pm"; ps -o pid= --ppid "$pm" | tr -d ' '; fi
}

# ha_start_node NODE: starts the node's Patroni (which starts Postgres as a replica
# of the current leader, rewinding it if it has diverged). As the postgres user:
# Postgres refuses to run as root.
ha_start_node() {
  local node=$1 pid
  if pid=$(ha_patroni_pid "$node"); then log "$node: Patroni already running (pid $pid)"; return 0; fi
  ha_spawn "$HA_DIR/$node/patroni.pid" "$HA_DIR/log/$node.log" --as postgres \
    env HOME="$HA_DIR/$node" LC_ALL=C.UTF-8 patroni "$(ha_patroni_conf "$node")"
}

# ha_stop_node NODE: a clean stop (Patroni shuts Postgres down, then exits; a leader
# hands its key over first).
ha_stop_node() {
  local pid pm
  if pid=$(ha_patroni_pid "$1"); then ha_stop_pid "$pid" 60; fi
  # A postmaster left without its Patroni (Patroni was killed): stop it too.
  if pm=$(ha_postmaster_pid "$1"); then
    runuser -u postgres -- "$HA_PG_BIN/pg_ctl" stop -s -m fast -D "$HA_DIR/$1/data" -t 30 \
      || kill -9 "$pm" 2>/dev/null || true
  fi
}

# ha_kill_node NODE: the node dies at once, as with a power cut: SIGKILL to Patroni
# first (or it would restart Postgres), then to every Postgres process.
ha_kill_node() {
  local pids
  pids=$(ha_node_pids "$1")
  [ -n "$pids" ] || { log "$1: nothing running"; return 1; }
  # shellcheck disable=SC2086 # one pid per word
  kill -9 $pids 2>/dev/null || true
}

# ha_freeze_node NODE / ha_thaw_node NODE: SIGSTOP / SIGCONT Patroni and every
# Postgres process of the node: a hung machine, not a dead one (sockets stay open).
ha_freeze_node() {
  local pids
  pids=$(ha_node_pids "$1")
  [ -n "$pids" ] || { log "$1: nothing running"; return 1; }
  # shellcheck disable=SC2086
  kill -STOP $pids
}
ha_thaw_node() {
  local pids
  pids=$(ha_node_pids "$1")
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -CONT $pids
}

# --- the cluster as Patroni sees it ----------------------------------------------

ha_patronictl() { patronictl -c "$(ha_patroni_conf "${HA_NODES[0]}")" "$@"; }

# ha_cluster_json: GET /cluster from the first node whose REST API answers.
ha_cluster_json() {
  local n
  for n in "${HA_NODES[@]}"; do
    curl -sf --max-time 1 "http://127.0.0.1:$(ha_rest_port "$n")/cluster" && return 0
  done
  return 1
}

# ha_leader / ha_sync_standby: names as recorded in etcd. Right after a node dies
# the leader may still be the dead one until its key expires (ttl 10 s); use
# ha_wait_primary to wait for a live one.
ha_leader() { ha_cluster_json | jq -r '.members[] | select(.role == "leader") | .name'; }
ha_sync_standby() { ha_cluster_json | jq -r '.members[] | select(.role == "sync_standby") | .name'; }
ha_replicas() { ha_cluster_json | jq -r '.members[] | select(.role != "leader") | .name'; }

# ha_is_primary NODE: its Patroni answers GET /primary with 200 (what HAProxy checks).
ha_is_primary() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
    "http://127.0.0.1:$(ha_rest_port "$1")/primary")" = 200 ]
}

# ha_switchover [CANDIDATE]: a planned switchover from the leader to CANDIDATE, by
# default the synchronous standby (in strict synchronous mode the only one allowed).
ha_switchover() {
  local leader candidate=${1:-}
  leader=$(ha_leader)
  [ -n "$candidate" ] || candidate=$(ha_sync_standby | head -n1)
  ha_patronictl switchover --leader "$leader" --candidate "$candidate" --force
}

# ha_psql TARGET [psql args...]: TARGET is a node (pg1), `primary` (port 5000) or
# `replicas` (port 5001); database voucherd unless -d says otherwise.
ha_psql() {
  local port
  case $1 in
    primary) port=$HA_PRIMARY_PORT ;;
    replicas) port=$HA_REPLICA_PORT ;;
    *) port=$(ha_pg_port "$1") ;;
  esac
  shift
  PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-3} psql -h 127.0.0.1 -p "$port" -U postgres -d voucherd -X -v ON_ERROR_STOP=1 "$@"
}

# ha_wal NODE: "NODE ROLE TIMELINE LSN": its role as Postgres says, its timeline as
# Patroni reports it, and its WAL position (written on a primary, replayed on a
# replica); "NODE down" when it does not answer.
ha_wal() {
  local row tl
  row=$(ha_psql "$1" -d postgres -Atq -F ' ' -c \
    "select case when pg_is_in_recovery() then 'replica' else 'primary' end,
            case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end" \
    2>/dev/null) || { echo "$1 down"; return 0; }
  tl=$(curl -sf --max-time 1 "http://127.0.0.1:$(ha_rest_port "$1")/patroni" | jq -r '.timeline // "?"') || tl='?'
  echo "$1 ${row%% *} $tl ${row#* }"
}
ha_wal_all() { local n; for n in "${HA_NODES[@]}"; do ha_wal "$n"; done; }

# --- waiting -------------------------------------------------------------------

# ha_wait SECONDS WHAT CMD...: runs CMD every 0.2 s until it succeeds; fails after
# SECONDS, naming WHAT.
ha_wait() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "gave up after ${secs}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

ha_has_live_primary() { local l; l=$(ha_leader) && [ -n "$l" ] && ha_is_primary "$l"; }
ha_has_sync_standby() {
  ha_cluster_json | jq -e '[.members[] | select(.role == "sync_standby" and
    (.state == "running" or .state == "streaming"))] | length > 0' >/dev/null
}
ha_primary_port_writes() {
  [ "$(ha_psql primary -d postgres -Atqc 'select not pg_is_in_recovery()')" = t ]
}
# ha_node_running NODE: the node's own Patroni says its Postgres runs, on the
# leader's timeline (a rejoining old primary first reports its old one).
ha_node_running() {
  local mine leaders
  mine=$(curl -sf --max-time 1 "http://127.0.0.1:$(ha_rest_port "$1")/patroni") || return 1
  leaders=$(curl -sf --max-time 1 "http://127.0.0.1:$(ha_rest_port "$(ha_leader)")/patroni") || return 1
  [ "$(jq -r '.state' <<<"$mine")" = running ] \
    && [ "$(jq -r '.timeline' <<<"$mine")" = "$(jq -r '.timeline' <<<"$leaders")" ]
}

# ha_wait_primary SECONDS: a leader whose Postgres is the primary, the only server
# HAProxy's primary port sends to, and writable through it.
ha_wait_primary() {
  ha_wait "$1" "a primary" ha_has_live_primary \
    && ha_wait "$1" "HAProxy to send port $HA_PRIMARY_PORT to the leader alone" ha_haproxy_follows_leader \
    && ha_wait "$1" "port $HA_PRIMARY_PORT" ha_primary_port_writes
}
ha_wait_sync() { ha_wait "$1" "a synchronous standby" ha_has_sync_standby; }
ha_wait_node() { ha_wait "$2" "$1 to run" ha_node_running "$1"; }

# --- HAProxy's view -------------------------------------------------------------

# ha_haproxy_servers PROXY: "SERVER STATUS" per server of PROXY (primary, replicas,
# voucherd), from the stats page.
ha_haproxy_servers() {
  curl -sf --max-time 2 "http://127.0.0.1:$HA_STATS_PORT/;csv" \
    | awk -F, -v p="$1" '$1 == p && $2 != "FRONTEND" && $2 != "BACKEND" { print $2, $18 }'
}
# ha_haproxy_primary: the server(s) HAProxy sends port 5000 to. Right after HAProxy
# starts every server counts as up until two checks fail: wait for exactly one.
ha_haproxy_primary() { ha_haproxy_servers primary | awk '$2 == "UP" { print $1 }'; }
ha_haproxy_follows_leader() {
  local l up
  l=$(ha_leader) && up=$(ha_haproxy_primary) && [ -n "$l" ] && [ "$up" = "$l" ]
}
