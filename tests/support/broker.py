"""Placeholder; filled by the broker work."""
