"""edge-facedet: many camera streams -> OpenVINO face-detection-0204 -> MQTT and Prometheus."""

__version__ = "0.1.0"
