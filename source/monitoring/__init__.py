"""The monitoring stage: when a job ends, tell whoever watches. Prometheus metrics to
METRICS_DIR (node_exporter's textfile collector) and to a Pushgateway, and healthchecks.io
pings (a dead-man's switch). A monitor that is down or slow never changes a job's exit code:
one warning line, a few seconds at most."""

from source.monitoring.job import JobRecord, active, monitored, record

__all__ = ["JobRecord", "active", "monitored", "record"]
