"""Stage 2, inference: latest-frame slots, the batching scheduler, the detector, post-processing."""
