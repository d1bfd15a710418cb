"""Where the tests find the repository, the shared assets and the installed model."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGE_FACEDET_SHARED", REPO.parent / "shared")).resolve()
# The set-up's mirror variables (README) where given, so a clone anywhere tests as it installs.
MODEL_MIRROR = Path(os.environ.get("EDGE_FACEDET_MODEL_MIRROR", SHARED / "models")).resolve()
MEDIA = Path(os.environ.get("EDGE_FACEDET_MEDIA_MIRROR", SHARED / "media")).resolve()
WIDER_DEV = SHARED / "eval" / "wider-face-val-dev"
# The set-up script installs the model here (`model fetch --mirror ... --dest .models`).
MODEL_ROOT = Path(os.environ.get("EDGE_FACEDET_MODELS", REPO / ".models")).resolve()

FACE_VIDEO = MEDIA / "videos" / "openmpf_video_01_event_faces_640x480.mp4"
HIKERS_VIDEO = MEDIA / "videos" / "openmpf_video_02_hikers_walking_640x480.mp4"
