#!/usr/bin/env bash
# Every six hours (host cron): one verified backup, then retention.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/compose_job.sh" backup "$@"
