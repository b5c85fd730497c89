"""Prometheus metrics: request latency measured here; task figures read from the database at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marionet.tasks.store import Store


class TaskCollector:
    """Tasks by status, queue depth and engine seconds, for every worker sharing the database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator:
        counts = self.store.counts_by_status()
        tasks = GaugeMetricFamily("marionet_tasks", "Tasks by status.", labels=["status"])
        for status, n in counts.items():
            tasks.add_metric([status], n)
        yield tasks
        yield GaugeMetricFamily("marionet_queue_depth", "Tasks waiting to start.", value=counts["pending"])
        yield CounterMetricFamily(
            "marionet_engine_seconds",
            "Seconds spent in engines by completed tasks.",
            value=self.store.engine_seconds_total(),
        )
        yield GaugeMetricFamily(
            "marionet_engine_seconds_per_video_second",
            "Measured engine speed over recent tasks.",
            value=self.store.engine_speed(),
        )


def make_registry(store: Store) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    registry.register(TaskCollector(store))
    latency = Histogram(
        "marionet_request_duration_seconds",
        "HTTP request latency.",
        ["method", "route", "status"],
        registry=registry,
    )
    return registry, latency


class LatencyMiddleware:
    """Times every request, labelled by route template (not raw path, which would explode cardinality)."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.latency.labels(scope["method"], template, str(status)).observe(time.perf_counter() - started)
