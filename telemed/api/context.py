"""Typed application keys: how handlers reach what app.py set up."""

from __future__ import annotations

from aiohttp import web

from telemed.auth import TokenService
from telemed.bus import Bus
from telemed.metrics import Metrics
from telemed.settings import Settings
from telemed.store import Database

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
BUS = web.AppKey("bus", Bus)
TOKENS = web.AppKey("tokens", TokenService)
METRICS = web.AppKey("metrics", Metrics)
