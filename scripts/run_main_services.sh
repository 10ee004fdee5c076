#!/usr/bin/env bash
# Hourly (host cron): one pipeline run in its container. Extra arguments go to main.py.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/compose_job.sh" pipeline "$@"
