"""edge-facedet: many camera streams -> OpenVINO face-detection-0204 -> MQTT and Prometheus."""

from edge_facedet.telemetry import disable_openvino_telemetry

__version__ = "0.1.0"

# Before any submodule can import OpenVINO: the CLI, the bench run directly and library use
# alike send nothing to OpenVINO's usage telemetry (edge_facedet/telemetry.py says why).
disable_openvino_telemetry()
