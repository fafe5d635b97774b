from .database import connect_pool, migrate
from .events import EventStore, StoredEvent, verify_chain
from .unit_of_work import (
    Fenced,
    IdempotencyRace,
    OffsetFence,
    OffsetsFenced,
    RejectedMessage,
    StreamAppend,
    StreamConflict,
    UnitOfWork,
)

__all__ = [
    "EventStore", "Fenced", "IdempotencyRace", "OffsetFence", "OffsetsFenced", "RejectedMessage",
    "StoredEvent", "StreamAppend", "StreamConflict", "UnitOfWork", "connect_pool", "migrate", "verify_chain",
]
