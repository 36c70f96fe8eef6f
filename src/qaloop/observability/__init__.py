"""Metrics, structured logs, consumer lag and the dashboard's data (docs/observability.md)."""
