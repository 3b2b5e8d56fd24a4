"""Prometheus metrics, Grafana dashboards and alert rules for the cluster."""
