"""The service core: settings, admission, drain, metrics, telemetry, logs."""
