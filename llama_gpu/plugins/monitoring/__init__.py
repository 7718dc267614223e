"""Monitoring plugins: system and GPU figures, stored samples, logs, alerts, Prometheus, the Socket.IO bridge."""
