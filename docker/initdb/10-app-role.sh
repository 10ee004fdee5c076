#!/usr/bin/env bash
# Runs once, when the database volume is first initialised: a login role for the app that owns
# the commodities database (so migrations can create tables) and nothing more. CREATEDB lets
# `backups_main.py verify` restore into a scratch database.
set -euo pipefail

app_password="$(cat "${APP_DB_PASSWORD_FILE:?}")"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:?}" --dbname postgres \
    --set=app_password="$app_password" <<'SQL'
CREATE ROLE commodities_app LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'app_password';
ALTER DATABASE commodities OWNER TO commodities_app;
SQL
