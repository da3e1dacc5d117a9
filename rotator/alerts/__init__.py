"""Alerts: the rules (pure), dispatch (once per threshold, restart-safe), the channels."""
