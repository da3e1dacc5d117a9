"""Vendor providers behind one Provider protocol (see rotator.providers.base)."""
