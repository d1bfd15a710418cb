"""Offline tools apart from the service: the model and media assets, `detect` and `eval`."""
