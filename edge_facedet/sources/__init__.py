"""Stage 1: camera sources: URL model, decoders, the reader supervisor and its sessions, lag."""
