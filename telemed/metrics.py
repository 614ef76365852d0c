"""Prometheus metrics, one registry per application so tests and nodes do not share counters."""

from __future__ import annotations

import time
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("telemed_http_requests", "HTTP requests handled",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("telemed_http_request_seconds", "HTTP request handling time",
                                 ["route"], registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self) -> Callable:
        @web.middleware
        async def measure(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            finally:
                self.requests.labels(request.method, name, str(status)).inc()
                self.latency.labels(name).observe(time.perf_counter() - started)

        return measure

