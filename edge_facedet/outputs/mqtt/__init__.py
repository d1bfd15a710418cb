"""The MQTT output: connection, outbox, topics, error texts, Home Assistant discovery."""
