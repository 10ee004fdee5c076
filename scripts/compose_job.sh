#!/usr/bin/env bash
# Shared by the cron scripts: run one one-shot compose service, log a line, keep its exit code.
# Usage: compose_job.sh SERVICE [ARGS...]   (works from any current directory, e.g. cron's /)
set -euo pipefail

service="${1:?usage: compose_job.sh SERVICE [ARGS...]}"
shift
project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log_dir="${HOST_LOG_DIR:-$project_dir/logs}"
mkdir -p "$log_dir"
log_file="$log_dir/cron-$(date -u +%Y-%m-%d).log"

# No -f: from the project directory Compose reads docker-compose.yml and, when it is there,
# docker-compose.override.yml (its convention for local changes); COMPOSE_FILE still wins.
# Progress lines stay out of cron's mail: only the job's own output reaches it.
cd "$project_dir"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
status=0
docker compose --progress quiet run --rm --no-TTY "$service" "$@" || status=$?
# When the `init` service the job depends on failed, Compose says only that; its own one-line
# reason (e.g. an unreadable secret) is what a person needs, with its exit code.
if [ "$status" -ne 0 ]; then
    init_status="$(docker compose ps --all --format '{{.ExitCode}}' init 2>/dev/null || true)"
    if [ -n "$init_status" ] && [ "$init_status" != 0 ]; then
        docker compose logs --no-log-prefix --tail 1 init >&2 || true
        status="$init_status"
    fi
fi
echo "$started $service finished at $(date -u +%H:%M:%SZ) with exit code $status" >>"$log_file"
exit "$status"
