#!/bin/bash
# The official postgres image's start-up, as far as the stack uses it: read the password file
# as root, drop to the postgres user, initdb on first start (superuser POSTGRES_USER with a
# scram password, database POSTGRES_DB), listen on every address of the container.
set -euo pipefail

if [ "${1:-}" != "postgres" ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        POSTGRES_PASSWORD="$(<"$POSTGRES_PASSWORD_FILE")"
        export POSTGRES_PASSWORD
        unset POSTGRES_PASSWORD_FILE
    fi
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

user="${POSTGRES_USER:-postgres}"
database="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE is required}"
    initdb --username="$user" --pwfile=<(printf '%s' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 -D "$PGDATA" >/dev/null
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$database" != "postgres" ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres \
            -c "CREATE DATABASE \"$database\"" >/dev/null
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "stand-in postgres: initialised $PGDATA (user $user, database $database)"
fi
unset POSTGRES_PASSWORD
exec postgres -c listen_addresses='*' "${@:2}"
