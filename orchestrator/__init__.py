"""The arx daemon."""
