"""WebSocket signaling, rooms and the selective forwarding unit."""
