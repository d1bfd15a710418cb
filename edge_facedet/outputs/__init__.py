"""Stage 3, outputs: the result pipeline and the Output protocol it fans out to.

MQTT (with Home Assistant discovery), metrics and the HTTP endpoint live here.
"""
