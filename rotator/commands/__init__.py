"""The commands beside the daemon, one module each; rotator/cli.py only parses and delegates.

check (check --online in online), status, seed (``rotator import``), refresh,
authorize (its listener and pasted codes in callback), faxmax (faxmax-login-url),
probe (what a vendor accepts, spending nothing);
common holds what they share, terminal how outside text is shown.
"""
