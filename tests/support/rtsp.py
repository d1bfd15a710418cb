"""Placeholder; filled by the RTSP work."""
