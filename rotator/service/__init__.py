"""The daemon as a service: wiring, lifecycle, monitor, metrics and health, logs, sd_notify."""
