"""HashiCorp Vault / OpenBao KV v2."""
