"""Operator surface: read model, HTTP API, CSV exports, insights, metrics, probes, dashboard."""
