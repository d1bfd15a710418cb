"""From per-frame boxes to faces over time: tracks, their best face, and their events.

The stage between the detector and the outputs: `tracker` associates each camera's
detections across processed frames (ByteTrack's two stages, a constant-velocity Kalman
filter), `quality` scores each detection so a track keeps its best face, and `lifecycle`
turns a camera's tracks into the `new`, `update` and `end` events of `events`.
"""
