"""Shared fixtures: nothing here replaces aiohttp, diskcache or the event loop."""

from __future__ import annotations
