from .events import AppendRequest, EventStore, StoredEvent, verify_chain
from .database import connect_pool, migrate

__all__ = ["AppendRequest", "EventStore", "StoredEvent", "connect_pool", "migrate", "verify_chain"]
