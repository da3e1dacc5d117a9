"""The embedded sandbox token server and `rotator demo` (also used by tests and the bench)."""
