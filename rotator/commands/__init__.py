"""The commands beside the daemon: authorize, import, status, check --online."""
