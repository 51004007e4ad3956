"""Kindred shared core: generated API (kindred.v1), settings, telemetry, gRPC plumbing, data, stores."""

__version__ = "0.1.0"
