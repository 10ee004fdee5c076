"""Write the Kubernetes monitoring overlay's copies of the alert rules (as a PrometheusRule)
and of the dashboard, from deploy/prometheus/alerts.yml and deploy/grafana/dashboards/, the
single sources: kustomize reads no file outside the overlay's folder.

Run after editing either:  python scripts/monitoring_overlay.py
The test suite fails when the overlay and its sources disagree."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "commodities.json"
OVERLAY = REPO / "deploy" / "kubernetes" / "overlays" / "monitoring"
HEADER = """\
# Generated from deploy/prometheus/alerts.yml by scripts/monitoring_overlay.py: edit that file
# and rerun the script. Prometheus Operator loads it when its ruleSelector matches these labels
# (kube-prometheus-stack: add `release: <its release name>` in kustomization.yaml's labels).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: commodities-alerts
  labels:
    app.kubernetes.io/name: commodities
    app.kubernetes.io/component: alert-rules
spec:
"""


def render_rules() -> str:
    """alerts.yml's groups, comments and all, as the PrometheusRule's spec."""
    lines = ALERTS.read_text().splitlines()
    start = lines.index("groups:")
    return HEADER + "".join(f"  {line}\n" if line else "\n" for line in lines[start:])


def rendered() -> dict[Path, str]:
    return {
        OVERLAY / "prometheusrule.yaml": render_rules(),
        OVERLAY / DASHBOARD.name: DASHBOARD.read_text(),
    }


def main() -> int:
    for path, text in rendered().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
