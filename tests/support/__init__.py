"""Test support: real components (brokers, RTSP servers, media) started for the tests."""
