"""Calendar arithmetic the rules need; pure and deterministic."""

from __future__ import annotations

import calendar
from datetime import datetime


def add_months(moment: datetime, months: int) -> datetime:
    """The same wall-clock time `months` later, clamped to the month's last day."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = moment.day
    if day > 28:  # not every month has the day: clamp it to the month's length
        day = min(day, calendar.monthrange(year, month)[1])
    # The constructor rather than `replace`, whose keyword arguments cost a third more;
    # every earn calls this twice (its expiry date and its tier window).
    return datetime(year, month, day, moment.hour, moment.minute, moment.second, moment.microsecond, moment.tzinfo,
                    fold=moment.fold)
