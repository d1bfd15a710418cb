"""The MQTT output: connection, outbox, topics, Home Assistant discovery."""
