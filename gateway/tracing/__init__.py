"""Traces (OpenTelemetry): spans made on every floor, built in the lifespan."""
