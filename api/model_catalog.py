"""The model names the configured server offers, to reject unknown models before enqueueing."""

from __future__ import annotations

import threading
import time


from mistralmeter.settings import Settings
from workers.provider import get_client

CACHE_SECONDS = 60.0

_lock = threading.Lock()
_cache: dict[str | None, tuple[float, frozenset[str]]] = {}


class CatalogUnavailable(RuntimeError):
    """The model server returned no model list for GET /v1/models."""


def known_models(settings: Settings) -> frozenset[str]:
    """Return the server's model ids, cached for CACHE_SECONDS."""
    key = settings.model_server_url
    now = time.monotonic()
    with _lock:
        cached = _cache.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]

    try:
        listing = get_client(settings).models.list(timeout_ms=10_000)
    except Exception as exc:  # the SDK raises its own errors and httpx2 transport errors
        raise CatalogUnavailable(f"could not list models at {key or 'the Mistral API'}: {exc}") from exc

    names = frozenset(model.id for model in (listing.data or []))
    with _lock:
        _cache[key] = (now, names)
    return names


def clear_cache() -> None:
    with _lock:
        _cache.clear()
