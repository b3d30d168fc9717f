#!/usr/bin/env bash
# taskledger beside the legacy tracker's design, in one run on this machine:
#   PostgreSQL (seeds/000-001's TaskTracker table, indexes and statements) and
#   Redis (seeds/004's `SET NX EX` idempotency check).
# Installs both from Debian's packages if missing, starts each on loopback in a temporary
# directory, runs `taskledger-bench peers` (flags are passed through), and stops them at the end.
#
#   bench/peers.sh                                  # the full run (100 k and 1 M tasks stored)
#   bench/peers.sh --tasks 100000 --seconds 5       # a quicker one
#   bench/peers.sh --out target/peers.md            # also write the Markdown report
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}
REDIS_DURABLE_PORT=${REDIS_DURABLE_PORT:-56380}

need=()
command -v redis-server >/dev/null || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if ((${#need[@]})); then
    echo "installing ${need[*]} from Debian's packages" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

WORK=$(mktemp -d /tmp/taskledger-peers.XXXXXX)
chmod 755 "$WORK"
# PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1 || true
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    redis-cli -p "$REDIS_DURABLE_PORT" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/pg" "$WORK/redis"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U bench --auth=trust -E UTF8 >/dev/null
# Durable like taskledger's acknowledgement: fsync and synchronous_commit on (the defaults,
# stated). Enough connections for the pool, and room for the 1 M-task table in shared buffers.
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/server.log" -w -o "\
 -c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$WORK/pg\
 -c fsync=on -c synchronous_commit=on -c max_connections=200\
 -c shared_buffers=1GB -c max_wal_size=4GB" start >/dev/null
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" \
    --daemonize yes --logfile "$WORK/redis.log" --pidfile "$WORK/redis.pid"
# A second Redis at taskledger's durability: every write in the append-only file, fsync'd
# before the reply.
mkdir -p "$WORK/redis-aof"
redis-server --port "$REDIS_DURABLE_PORT" --bind 127.0.0.1 --dir "$WORK/redis-aof" \
    --appendonly yes --appendfsync always \
    --daemonize yes --logfile "$WORK/redis-aof.log" --pidfile "$WORK/redis-aof.pid"
for port in "$REDIS_PORT" "$REDIS_DURABLE_PORT"; do
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done

cargo build --release --workspace --bins
${BENCH_WRAPPER:-} target/release/taskledger-bench peers \
    --pg "host=127.0.0.1 port=$PG_PORT user=bench dbname=postgres" \
    --redis "redis://127.0.0.1:$REDIS_PORT/" \
    --redis-durable "redis://127.0.0.1:$REDIS_DURABLE_PORT/" "$@"
