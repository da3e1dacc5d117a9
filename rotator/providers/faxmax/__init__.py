"""FaxMAX: JSON-RPC login and keep-alive, and the pluggable login-token cipher."""
