"""The server's Prometheus metrics (docs/operations.md lists each one).

One `Metrics` per application, on its own registry, so several servers in one process (tests)
never share counters. Labels are bounded: error codes, provider error kinds, tool names the
registry knows, outcomes; never a room, a person or a message.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds. Time to first delta is usually well under 2 s; answers run for seconds to minutes.
FIRST_DELTA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters and histograms the layers update, and gauges read when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns_started = Counter(
            "roundtable_turns_started", "Runs started (one per message that gets a turn).",
            registry=r)
        self.turns_completed = Counter(
            "roundtable_turns_completed", "Runs that ended normally (silent ones included).",
            registry=r)
        self.turns_failed = Counter(
            "roundtable_turns_failed", "Runs that failed, by provider error kind.",
            ["kind"], registry=r)
        self.turns_stopped = Counter(
            "roundtable_turns_stopped", "Runs stopped by a participant.", registry=r)
        self.first_delta = Histogram(
            "roundtable_time_to_first_delta_seconds",
            "From a turn's start to its first text shown to the room.",
            buckets=FIRST_DELTA_BUCKETS, registry=r)
        self.answer_duration = Histogram(
            "roundtable_answer_duration_seconds", "From a turn's start to its end.",
            buckets=DURATION_BUCKETS, registry=r)
        self.deltas_sent = Counter(
            "roundtable_deltas_sent", "message-delta events sent to rooms (once per event).",
            registry=r)
        self.frames_sent = Counter(
            "roundtable_frames_sent", "Events delivered to connections (once per recipient).",
            registry=r)
        self.slow_clients_dropped = Counter(
            "roundtable_slow_clients_dropped",
            "Connections dropped for reading too far behind (SLOW_CLIENT_BYTES).", registry=r)
        self.refused = Counter(
            "roundtable_refused_requests", "Requests refused, by error code.", ["code"],
            registry=r)
        self.provider_retries = Counter(
            "roundtable_provider_retries", "Provider requests retried by the SDK.", registry=r)
        self.tool_calls = Counter(
            "roundtable_tool_calls", "Tool calls by tool and outcome (ok, failed).",
            ["tool", "outcome"], registry=r)
        # with REDIS_URL (they stay 0 with one process)
        self.rooms_acquired = Counter(
            "roundtable_rooms_acquired", "Leases of rooms this process took.", registry=r)
        self.leases_lost = Counter(
            "roundtable_leases_lost", "Rooms this process found taken over while it ran them "
            "(it was paused or cut off past the lease; its writes were refused).", registry=r)
        self.answers_taken_over = Counter(
            "roundtable_answers_taken_over", "Answers left open by a process that stopped, "
            "ended here as cut short.", registry=r)

    def cluster(self, redis_up: Callable[[], float], rooms_owned: Callable[[], float]) -> None:
        """The cluster's gauges (with REDIS_URL)."""
        r = self.registry
        Gauge("roundtable_redis_up", "1 while Redis answers, else 0.",
              registry=r).set_function(redis_up)
        Gauge("roundtable_rooms_owned", "Rooms whose answers this process runs (it holds their "
              "lease).", registry=r).set_function(rooms_owned)

    def gauges(
        self, rooms: Callable[[], float], people: Callable[[], float],
        connections: Callable[[], float], waiting: Callable[[], float],
    ) -> None:
        """Gauges computed when scraped, from the live state."""
        r = self.registry
        Gauge("roundtable_rooms_open", "Rooms open.", registry=r).set_function(rooms)
        Gauge("roundtable_people", "People in every room (a person with several tabs is one).",
              registry=r).set_function(people)
        Gauge("roundtable_connections", "Socket.IO connections open.",
              registry=r).set_function(connections)
        Gauge("roundtable_turns_waiting", "Turns queued behind the answers in progress.",
              registry=r).set_function(waiting)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
