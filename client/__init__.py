"""Roundtable clients: `client.terminal` (run with `python -m client`) and the web client."""
