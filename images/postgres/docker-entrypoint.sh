#!/usr/bin/env bash
# The official `postgres` image's entrypoint contract, for the local node's host PostgreSQL:
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (default postgres),
#   POSTGRES_DB (default: the user), PGDATA, POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR,
#   POSTGRES_HOST_AUTH_METHOD, each of the first four also as <NAME>_FILE, and the scripts of
#   /docker-entrypoint-initdb.d (*.sh, *.sql) on first start.
# An empty PGDATA is initialised (the password from a file, never the command line); an existing one is
# reused. Started as root, it prepares the folders and runs again as the `postgres` user. It ends by
# exec'ing postgres, so the server is the container's main process and gets its stop signal.
set -Eeo pipefail

if ! command -v postgres >/dev/null; then # a host whose PostgreSQL is not the image's major version
  for bin in /usr/lib/postgresql/*/bin; do PATH="$PATH:$bin"; done
fi

# usage: from_env_or_file NAME [DEFAULT]: NAME, or the contents of the file NAME_FILE names.
from_env_or_file() {
  local name="$1" file_name="${1}_FILE" value="${2:-}"
  if [ -n "${!name:-}" ] && [ -n "${!file_name:-}" ]; then
    printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$name" "$file_name"
    exit 1
  fi
  if [ -n "${!name:-}" ]; then
    value="${!name}"
  elif [ -n "${!file_name:-}" ]; then
    value="$(<"${!file_name}")"
  fi
  export "$name"="$value"
  unset "$file_name"
}

read_settings() {
  from_env_or_file POSTGRES_PASSWORD
  from_env_or_file POSTGRES_USER postgres
  from_env_or_file POSTGRES_DB "$POSTGRES_USER"
  from_env_or_file POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"
  DATABASE_ALREADY_EXISTS=
  if [ -s "$PGDATA/PG_VERSION" ]; then
    DATABASE_ALREADY_EXISTS=true
  fi
}

# The data and socket folders; as root, handed to the postgres user.
create_directories() {
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" || : # postgres checks this itself; some volumes refuse chmod
  mkdir -p /var/run/postgresql || :
  chmod 03775 /var/run/postgresql || :
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    chmod 700 "$POSTGRES_INITDB_WALDIR"
  fi
  if [ "$(id -u)" = 0 ]; then
    local folder
    for folder in "$PGDATA" /var/run/postgresql ${POSTGRES_INITDB_WALDIR:+"$POSTGRES_INITDB_WALDIR"}; do
      find "$folder" \! -user postgres -exec chown postgres '{}' +
    done
  fi
}

refuse_without_password() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<-'EOE'
		Error: Database is uninitialized and superuser password is not specified.
		       You must specify POSTGRES_PASSWORD to a non-empty value for the
		       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

		       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
		       connections without a password. This is *not* recommended.

		       See PostgreSQL documentation about "trust":
		       https://www.postgresql.org/docs/current/auth-trust.html
	EOE
    exit 1
  fi
}

# initdb looks the running user up; a uid without an account (runAsUser) gets one through nss_wrapper.
with_account() {
  local uid gid wrapper
  uid="$(id -u)" gid="$(id -g)"
  if getent passwd "$uid" >/dev/null; then
    "$@"
    return
  fi
  for wrapper in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
    if [ -s "$wrapper" ]; then
      local passwd group
      passwd="$(mktemp)" group="$(mktemp)"
      printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$uid" "$gid" "$PGDATA" >"$passwd"
      printf 'postgres:x:%s:\n' "$gid" >"$group"
      LD_PRELOAD="$wrapper" NSS_WRAPPER_PASSWD="$passwd" NSS_WRAPPER_GROUP="$group" "$@"
      rm -f "$passwd" "$group"
      return
    fi
  done
  "$@"
}

initialise() {
  local password_file
  password_file="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file" # initdb refuses an empty file
  local waldir=()
  # shellcheck disable=SC2034 # expanded inside the eval below
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    waldir=(--waldir "$POSTGRES_INITDB_WALDIR")
  fi
  # POSTGRES_INITDB_ARGS is a string of options, split as a shell would (as the official image does).
  eval 'with_account initdb --username="$POSTGRES_USER" --pwfile="$password_file" "${waldir[@]}" '"$POSTGRES_INITDB_ARGS"
  rm -f "$password_file"
  # The official image's configuration listens on every address; Debian's sample says localhost.
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  local method="${POSTGRES_HOST_AUTH_METHOD:-$(postgres -C password_encryption -D "$PGDATA")}"
  printf '\nhost all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
}

run_sql() {
  PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc \
    --dbname "${POSTGRES_DB:-postgres}" "$@"
}

# The database and the init scripts, on a server that listens on its socket only.
set_up_database() {
  export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
  PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
  local database="$POSTGRES_DB" # run_sql connects to `postgres` to create it
  if [ -z "$(POSTGRES_DB=postgres run_sql --set db="$database" --tuples-only <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")" ]; then
    POSTGRES_DB=postgres run_sql --set db="$database" <<<'CREATE DATABASE :"db";'
  fi
  local script
  for script in /docker-entrypoint-initdb.d/*; do
    case "$script" in
      *.sh)
        echo "$0: running $script"
        # shellcheck source=/dev/null # the user's init scripts
        if [ -x "$script" ]; then "$script"; else . "$script"; fi ;;
      *.sql) echo "$0: running $script"; run_sql -f "$script" ;;
      *) if [ -e "$script" ]; then echo "$0: ignoring $script"; fi ;;
    esac
  done
  PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
}

wants_help() {
  local arg
  for arg; do
    case "$arg" in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
  done
  return 1
}

main() {
  if [ "${1:0:1}" = - ]; then
    set -- postgres "$@"
  fi
  if [ "$1" = postgres ] && ! wants_help "$@"; then
    read_settings
    create_directories
    if [ "$(id -u)" = 0 ]; then
      exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
    fi
    if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
      refuse_without_password
      initialise
      set_up_database
      echo 'PostgreSQL init process complete; ready for start up.'
    else
      echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
    fi
  fi
  exec "$@"
}

main "$@"
