"""Secret stores behind one SecretStore protocol (see rotator.backends.base)."""
