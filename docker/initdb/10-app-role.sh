#!/usr/bin/env bash
# Runs once, when the database volume is first initialised: a login role for the app that owns
# the commodities database (so migrations can create tables) and nothing more. CREATEDB lets
# `backups_main.py verify` restore into a scratch database.
# The password travels through the environment and psql's \getenv, never on a command line.
set -euo pipefail

APP_PASSWORD="$(cat "${APP_DB_PASSWORD_FILE:?}")"
export APP_PASSWORD
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:?}" --dbname postgres <<'SQL'
\getenv app_password APP_PASSWORD
CREATE ROLE commodities_app LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'app_password';
ALTER DATABASE commodities OWNER TO commodities_app;
SQL
unset APP_PASSWORD
