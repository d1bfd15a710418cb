"""Snapshots: a track's best face as a JPEG, and optionally as a file.

render.py turns a picture and its face boxes into a JPEG for a camera's snapshot mode (crop,
frame, blurred_frame); store.py writes the JPEGs into `snapshot_dir`, atomically and bounded
in size, age and free space; worker.py runs both off the event loop, in order, with a
bounded queue. Nothing here runs for a camera whose snapshots are off (the default).
"""
