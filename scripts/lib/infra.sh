# shellcheck shell=bash
# Shared by scripts/up, scripts/test, scripts/bench and scripts/chaos:
# make sure RabbitMQ and PostgreSQL are reachable, installing and starting
# them from the OS packages where they are not, and that hookfleet's
# database role and database exist.

HF_AMQP_HOST=${HF_AMQP_HOST:-127.0.0.1}
HF_AMQP_PORT=${HF_AMQP_PORT:-5672}
HF_PG_HOST=${HF_PG_HOST:-127.0.0.1}
HF_PG_PORT=${HF_PG_PORT:-5432}
HF_DB_USER=${HF_DB_USER:-hookfleet}
HF_DB_PASSWORD=${HF_DB_PASSWORD:-hookfleet}
HF_DB_NAME=${HF_DB_NAME:-hookfleet}

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root or sudo to run: $*"
    fi
}

# Runs a command as the postgres superuser (peer authentication over the
# local socket, which is how Debian's packages set it up).
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"
    else sudo -u postgres "$@"
    fi
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_port() {
    local host=$1 port=$2 what=$3 i
    for i in $(seq 1 120); do
        port_open "$host" "$port" && return 0
        sleep 1
    done
    die "$what did not start listening on $host:$port"
}

apt_install() {
    command -v apt-get >/dev/null || die "no apt-get: install $* by hand (see README)"
    log "installing $* from the OS packages"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }

start_postgres() {
    if [ -z "$(pg_version)" ]; then
        apt_install postgresql postgresql-client
    fi
    port_open "$HF_PG_HOST" "$HF_PG_PORT" && return 0
    log "starting PostgreSQL $(pg_version)"
    if command -v pg_ctlcluster >/dev/null; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start || true
    else
        as_root service postgresql start || true
    fi
    wait_port "$HF_PG_HOST" "$HF_PG_PORT" PostgreSQL
}

start_rabbitmq() {
    if ! command -v rabbitmq-server >/dev/null && [ ! -x /usr/sbin/rabbitmq-server ]; then
        apt_install rabbitmq-server
    fi
    port_open "$HF_AMQP_HOST" "$HF_AMQP_PORT" && return 0
    log "starting RabbitMQ"
    # After a broker restart, a delay level's dead-letter worker may start
    # before the queue it forwards to; it then retries after
    # dead_letter_worker_publisher_confirm_timeout, 3 minutes by default,
    # and the retries due meanwhile wait that long. 10 s instead (the key
    # changed name across versions: both are set).
    as_root env PATH="$PATH:/usr/sbin" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-rabbit dead_letter_worker_publisher_confirm_timeout 10000 -rabbit dead_letter_worker_publisher_confirm_timeout_ms 10000" \
        rabbitmq-server -detached || true
    wait_port "$HF_AMQP_HOST" "$HF_AMQP_PORT" RabbitMQ
    # The port opens before the broker accepts work; wait for it to boot.
    as_root env PATH="$PATH:/usr/sbin" rabbitmqctl -q await_startup >/dev/null 2>&1 || true
}

# The counterparts of the two above, for scripts/chaos, which stops the
# broker and the database under load (and starts them again with the
# functions above).
stop_rabbitmq() {
    log "stopping RabbitMQ"
    as_root env PATH="$PATH:/usr/sbin" rabbitmqctl -q shutdown >/dev/null 2>&1 \
        || as_root env PATH="$PATH:/usr/sbin" rabbitmqctl -q stop >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
        port_open "$HF_AMQP_HOST" "$HF_AMQP_PORT" || return 0
        sleep 0.5
    done
    die "RabbitMQ still listens on $HF_AMQP_HOST:$HF_AMQP_PORT"
}

stop_postgres() {
    log "stopping PostgreSQL $(pg_version)"
    if command -v pg_ctlcluster >/dev/null; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main stop -m fast || true
    else
        as_root service postgresql stop || true
    fi
    for _ in $(seq 1 60); do
        port_open "$HF_PG_HOST" "$HF_PG_PORT" || return 0
        sleep 0.5
    done
    die "PostgreSQL still listens on $HF_PG_HOST:$HF_PG_PORT"
}

hf_database_url() {
    echo "postgres://$HF_DB_USER:$HF_DB_PASSWORD@$HF_PG_HOST:$HF_PG_PORT/$HF_DB_NAME"
}

ensure_database() {
    command -v psql >/dev/null || apt_install postgresql-client
    if psql "$(hf_database_url)" -qAtc 'select 1' >/dev/null 2>&1; then
        return 0
    fi
    log "creating role $HF_DB_USER and database $HF_DB_NAME"
    as_postgres psql -v ON_ERROR_STOP=1 -q <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$HF_DB_USER') THEN
    CREATE ROLE $HF_DB_USER LOGIN CREATEDB PASSWORD '$HF_DB_PASSWORD';
  ELSE
    ALTER ROLE $HF_DB_USER LOGIN CREATEDB PASSWORD '$HF_DB_PASSWORD';
  END IF;
END \$\$;
SQL
    if ! as_postgres psql -qAtc "select 1 from pg_database where datname = '$HF_DB_NAME'" | grep -q 1; then
        as_postgres createdb -O "$HF_DB_USER" "$HF_DB_NAME"
    fi
    psql "$(hf_database_url)" -qAtc 'select 1' >/dev/null \
        || die "cannot connect to $(hf_database_url) after creating it (check pg_hba.conf)"
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] || {
            log "installing the Rust toolchain with rustup"
            command -v curl >/dev/null || apt_install curl ca-certificates
            curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
        }
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cc >/dev/null || apt_install build-essential
}

# Everything the services and tests need on this machine.
ensure_infra() {
    port_open "$HF_PG_HOST" "$HF_PG_PORT" || start_postgres
    port_open "$HF_AMQP_HOST" "$HF_AMQP_PORT" || start_rabbitmq
    ensure_database
    ensure_rust
}
