#!/usr/bin/env bash
# Shared by the cron scripts: run one one-shot compose service, log a line, keep its exit code.
# Usage: compose_job.sh SERVICE [ARGS...]   (works from any current directory, e.g. cron's /)
set -euo pipefail

service="${1:?usage: compose_job.sh SERVICE [ARGS...]}"
shift
project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
compose_file="${COMPOSE_FILE_PATH:-$project_dir/docker-compose.yml}"
log_dir="${HOST_LOG_DIR:-$project_dir/logs}"
mkdir -p "$log_dir"
log_file="$log_dir/cron-$(date -u +%Y-%m-%d).log"

started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
status=0
docker compose -f "$compose_file" --project-directory "$project_dir" \
    run --rm --no-TTY "$service" "$@" || status=$?
echo "$started $service finished at $(date -u +%H:%M:%SZ) with exit code $status" >>"$log_file"
exit "$status"
