"""Socket.IO and HTTP: the engine, the direct-write fan-out, event handlers and HTTP routes."""
