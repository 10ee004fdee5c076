#!/usr/bin/env bash
# The HTML report on the host: runs `main.py report` in a container, copies its folder to
# reports/<UTC date>/ beside docker-compose.yml (or under DEST), owned by whoever runs this.
# Usage: run_report.sh [DEST]
set -euo pipefail

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$project_dir/reports}"
log_dir="${HOST_LOG_DIR:-$project_dir/logs}"
mkdir -p "$log_dir"
day="$(date -u +%Y-%m-%d)"
container="commodities-report-$$"

cd "$project_dir"  # Compose reads docker-compose.yml and any docker-compose.override.yml here
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
status=0
# Kept after it exits (no --rm) so its output can be copied out, then removed.
docker compose --progress quiet run --name "$container" --no-TTY pipeline \
    report --out "/app/reports/$day" >/dev/null || status=$?
if [ "$status" -eq 0 ]; then
    mkdir -p "$dest"
    rm -rf "${dest:?}/$day"
    docker cp "$container:/app/reports/$day" "$dest/$day" >/dev/null || status=$?
fi
docker rm "$container" >/dev/null 2>&1 || true
if [ "$status" -eq 0 ]; then
    echo "report written to $dest/$day/index.html"
fi
echo "$started report finished at $(date -u +%H:%M:%SZ) with exit code $status" \
    >>"$log_dir/cron-$day.log"
exit "$status"
