"""Stage 3, outputs: the result pipeline and the outputs it fans out to.

base.py is the `Output` protocol; build.py makes the service's list of outputs from the
config; mqtt/ is the MQTT output (connection, outbox, topics, error texts, Home Assistant
discovery); memory.py keeps messages in memory. Metrics and the HTTP endpoint live here too.
"""
