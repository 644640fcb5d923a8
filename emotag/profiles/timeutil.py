"""Timestamp parsing for profile records.

Profiles decay evidence by age, so every record needs one unambiguous instant. We reduce all accepted
forms to float epoch seconds (UTC) because arithmetic on floats is what the fold does millions of times.

Choices, and why:

* ISO 8601 strings with an offset (``2024-05-01T10:00:00+08:00``, ``...Z``) are exact.
* Naive ISO strings (no offset) are read as China Standard Time (UTC+8): emotag targets Chinese platforms,
  whose exports overwhelmingly use Beijing time without saying so. Reading them as UTC would shift every
  record by 8 hours; the decay is insensitive to that, but first/last-seen dates would be wrong.
* Numbers (and numeric strings) are epoch seconds. Values above 1e11 cannot be seconds (that is the year
  5138) and are read as epoch milliseconds, the other common export format.
* ``datetime`` objects (e.g. from Parquet) are accepted; naive ones follow the UTC+8 rule.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "UTC+08:00")
_MS_THRESHOLD = 1e11


class TimeParseError(ValueError):
    """A record's timestamp could not be understood."""


def parse_time(value: object) -> float:
    """Return epoch seconds (UTC) for an ISO 8601 string, an epoch number, or a datetime.

    Raises TimeParseError with the offending value so the caller can name the row.
    """
    if isinstance(value, str):
        s = value.strip()
        if not s:
            raise TimeParseError("empty timestamp")
        c = s[0]
        if c.isdigit() and ("-" in s[1:] or ":" in s):
            return _parse_iso(s)
        try:
            num = float(s)
        except ValueError:
            return _parse_iso(s)
        return _from_number(num, value)
    if isinstance(value, bool) or value is None:
        raise TimeParseError(f"missing or invalid timestamp {value!r}")
    if isinstance(value, (int, float)):
        return _from_number(float(value), value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=CST)
        return dt.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=CST).timestamp()
    # numpy scalars and the like
    try:
        return _from_number(float(value), value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TimeParseError(f"unsupported timestamp {value!r}") from None


def _from_number(num: float, original: object) -> float:
    if not math.isfinite(num):
        raise TimeParseError(f"invalid timestamp {original!r}")
    if abs(num) >= _MS_THRESHOLD:
        return num / 1000.0
    return num


def _parse_iso(s: str) -> float:
    text = s
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        # Python 3.10's fromisoformat is strict: accept a space-separated "YYYY-MM-DD HH:MM:SS +0800" too.
        try:
            dt = datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z")
        except ValueError:
            raise TimeParseError(f"unparseable timestamp {s!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CST)
    return dt.timestamp()


def format_time(epoch: float | None) -> str | None:
    """ISO 8601 in UTC+8 (the reporting zone of the audience), second precision kept as given."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, CST).isoformat()
