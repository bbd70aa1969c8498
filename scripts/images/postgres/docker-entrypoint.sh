#!/bin/bash
# Entrypoint of the postgres:17 stand-in (scripts/images/postgres/Dockerfile).
#
#   docker-entrypoint.sh postgres [server options...]   (the image's CMD)
#   docker-entrypoint.sh -c name=value ...              the same: "postgres" is implied
#   docker-entrypoint.sh anything else                   run as given
#
# For the server it behaves like the official image's entrypoint: started as root it makes
# PGDATA and the socket folder the postgres user's and restarts itself as that user; on an
# empty PGDATA it creates the cluster (initdb), its superuser POSTGRES_USER with
# POSTGRES_PASSWORD and the database POSTGRES_DB, runs /docker-entrypoint-initdb.d, and
# finally execs postgres, which then is the process that gets the container's signals.
# Nothing outside PGDATA, /var/run/postgresql and /tmp is written, so the root file system
# may be read-only.
set -Eeuo pipefail

log() { printf '[entrypoint] %s\n' "$*" >&2; }
die() { printf '[entrypoint] error: %s\n' "$*" >&2; exit 1; }

# VAR or the contents of the file named by VAR_FILE (Docker and Kubernetes secrets); the
# default when neither is set.
from_env_or_file() {
  local var=$1 default=${2:-} file_var="${1}_FILE"
  if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
    die "both $var and $file_var are set; set only one"
  fi
  local value=$default
  if [[ -n ${!var:-} ]]; then
    value=${!var}
  elif [[ -n ${!file_var:-} ]]; then
    value=$(<"${!file_var}")
  fi
  export "$var=$value"
  unset "$file_var"
}

setup_env() {
  from_env_or_file POSTGRES_PASSWORD
  from_env_or_file POSTGRES_USER postgres
  from_env_or_file POSTGRES_DB "$POSTGRES_USER"
  from_env_or_file POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
  : "${POSTGRES_INITDB_WALDIR:=}"
  export POSTGRES_HOST_AUTH_METHOD
}

# True when the server arguments only ask for help or a version (nothing to initialise).
wants_help() {
  local arg
  for arg; do
    case $arg in
      -'?' | --help | --describe-config | -V | --version) return 0 ;;
    esac
  done
  return 1
}

# Creates PGDATA (and the WAL folder) and, as root, hands them and the socket folder to
# postgres. Failures to chmod are ignored: a volume may refuse, and initdb will say so.
prepare_folders() {
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA" 2>/dev/null || true
  mkdir -p /var/run/postgresql 2>/dev/null || true
  chmod 3775 /var/run/postgresql 2>/dev/null || true
  if [[ -n $POSTGRES_INITDB_WALDIR ]]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    chmod 0700 "$POSTGRES_INITDB_WALDIR" 2>/dev/null || true
  fi
  if [[ $(id -u) == 0 ]]; then
    find "$PGDATA" /var/run/postgresql ${POSTGRES_INITDB_WALDIR:+"$POSTGRES_INITDB_WALDIR"} \
      ! -user postgres -exec chown postgres:postgres {} +
  fi
}

initdb_cluster() {
  if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
    die "the database is not initialised and POSTGRES_PASSWORD is empty; set it (or POSTGRES_HOST_AUTH_METHOD=trust, which lets anyone in)"
  fi
  # Fails here, before initdb, if the init scripts' folder cannot be read.
  ls /docker-entrypoint-initdb.d/ >/dev/null

  local args=(--username="$POSTGRES_USER" --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD")
  [[ -z $POSTGRES_INITDB_WALDIR ]] || args+=(--waldir="$POSTGRES_INITDB_WALDIR")
  local extra=()
  # POSTGRES_INITDB_ARGS is a list of words (e.g. "--data-checksums --locale=C").
  read -r -a extra <<<"$POSTGRES_INITDB_ARGS"
  if [[ -n $POSTGRES_PASSWORD ]]; then
    # The password goes through a pipe, never through a file on disk or the command line.
    initdb "${args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${extra[@]}"
  else
    initdb "${args[@]}" "${extra[@]}"
  fi

  {
    printf '\n# Added by docker-entrypoint.sh: every host may connect, authenticated.\n'
    printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
  } >>"$PGDATA/pg_hba.conf"
  printf "\n# Added by docker-entrypoint.sh: listen on every interface.\nlisten_addresses = '*'\n" \
    >>"$PGDATA/postgresql.conf"
}

# psql as the superuser over the socket, stopping at the first error.
run_sql() {
  PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password \
    --no-psqlrc "$@"
}

# A server on the unix socket only, so that nothing outside sees the half-made database
# (and TCP health checks keep failing until the real server starts).
start_socket_server() {
  local options=''
  (($# == 0)) || options=$(printf '%q ' "$@")
  PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -w start \
    -o "$options -c listen_addresses='' -p ${PGPORT:-5432}"
}

stop_socket_server() {
  PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -m fast -w stop
}

create_database() {
  local exists
  exists=$(run_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only --no-align <<'SQL'
SELECT 1 FROM pg_database WHERE datname = :'db';
SQL
  )
  if [[ -z $exists ]]; then
    log "creating database $POSTGRES_DB"
    run_sql --dbname postgres --set db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
  fi
}

run_init_files() {
  local file
  for file in /docker-entrypoint-initdb.d/*; do
    [[ -e $file ]] || continue
    case $file in
      *.sh)
        if [[ -x $file ]]; then
          log "running $file"
          "$file"
        else
          log "sourcing $file"
          # shellcheck disable=SC1090
          . "$file"
        fi
        ;;
      *.sql) log "running $file"; run_sql --dbname "$POSTGRES_DB" -f "$file" ;;
      *.sql.gz) log "running $file"; gunzip -c "$file" | run_sql --dbname "$POSTGRES_DB" ;;
      *.sql.xz) log "running $file"; xzcat "$file" | run_sql --dbname "$POSTGRES_DB" ;;
      *.sql.zst) log "running $file"; zstd -dc "$file" | run_sql --dbname "$POSTGRES_DB" ;;
      *) log "ignoring $file" ;;
    esac
  done
}

# Server options are what follows "postgres" in the arguments.
initialise() {
  shift
  initdb_cluster
  export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
  start_socket_server "$@"
  create_database
  run_init_files
  stop_socket_server
  unset PGPASSWORD
  log "PostgreSQL init process complete; ready for start up"
}

main() {
  if [[ ${1:-} == -* ]]; then
    set -- postgres "$@"
  fi
  if [[ ${1:-} == postgres ]] && ! wants_help "$@"; then
    setup_env
    prepare_folders
    if [[ $(id -u) == 0 ]]; then
      exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
    fi
    if [[ -s $PGDATA/PG_VERSION ]]; then
      log "PGDATA ($PGDATA) holds a database; skipping initialisation"
    else
      initialise "$@"
    fi
  fi
  exec "$@"
}

main "$@"
