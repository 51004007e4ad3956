"""The online feature store: per-key feature rows read on the serving hot path.

`open_online_store(settings)` picks the backend: an embedded SQLite store in the data directory on one
machine, Redis on the cluster. Both implement `OnlineStore`.
"""

from kindred.store.online import OnlineStore, open_online_store, validate_namespace

__all__ = ["OnlineStore", "open_online_store", "validate_namespace"]
