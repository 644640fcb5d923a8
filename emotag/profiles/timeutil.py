"""Timestamp parsing for profile records.

Profiles decay evidence by age, so every record needs one unambiguous instant. We reduce all accepted
forms to float epoch seconds (UTC) because arithmetic on floats is what the fold does millions of times.

Choices, and why:

* ISO 8601 strings with an offset (``2024-05-01T10:00:00+08:00``, ``...Z``) are exact.
* Naive ISO strings (no offset) are read as China Standard Time (UTC+8): emotag targets Chinese platforms,
  whose exports overwhelmingly use Beijing time without saying so. Reading them as UTC would shift every
  record by 8 hours; the decay is insensitive to that, but first/last-seen dates would be wrong.
* Slashed and Chinese dates as spreadsheets export them (``2024/5/1 10:00``, ``2024年5月1日``,
  ``2024年5月1日 10时30分``, ``2024年5月1日 10点``) follow the same rule as naive ISO strings.
* Compact digit dates, ``20240501`` and ``20240501103000`` (YYYYMMDD[HHMMSS], string or number, as CSV
  round trips leave them), are dates: read as epoch seconds they would land in 1970-1973 or after 2600,
  where no review or post comes from.
* Other numbers (and numeric strings) are epoch seconds. Values above 1e11 cannot be seconds (that is the
  year 5138) and are read as epoch milliseconds, the other common export format; above 1e14 as
  microseconds and above 1e17 as nanoseconds (database and pandas exports).
* ``datetime`` objects (e.g. from Parquet) are accepted; naive ones follow the UTC+8 rule.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "UTC+08:00")
_MS_THRESHOLD = 1e11


# 2024/5/1, 2024.05.01, 2024年5月1日, optionally followed by a time and an offset. Two time spellings:
# * digits with `:` or 时: 10:30, 10:30:15.5, 10时30, 10时30分, 10时30分15秒 (and the mixes exports leave,
#   10:30分15秒);
# * an hour with 点 or 时 and nothing else (10点, 10时), or 点 with minutes that carry their 分 (10点30分,
#   10点30分15秒). A bare 10点5 is not taken: people say it for 10:05 and for 10:30 (点五 = half past).
# 上午/下午 (12-hour clock) is not taken either: 3点 alone cannot say which.
_LOOSE_DATE = re.compile(
    r"(?P<y>\d{4})[/.年](?P<mo>\d{1,2})[/.月](?P<d>\d{1,2})日?"
    r"(?:[ T]*(?:"
    r"(?P<h>\d{1,2})[:时](?P<mi>\d{1,2})(?:[:分](?P<s>\d{1,2})(?:\.(?P<f>\d{1,6}))?秒?|分)?"
    r"|(?P<h2>\d{1,2})[点时](?:(?P<mi2>\d{1,2})分(?:(?P<s2>\d{1,2})(?:\.(?P<f2>\d{1,6}))?秒?)?)?"
    r"))?"
    r"\s*(?P<off>Z|[+-]\d{2}:?\d{2})?"
)
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2}))?")


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
        compact = _compact_date(s)
        if compact is not None:
            return compact
        loose = _LOOSE_DATE.fullmatch(s)
        if loose:
            return _parse_loose(loose, s)
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
    # only 8- and 14-digit numbers can be compact dates; the bound also keeps str() off huge ints
    if (isinstance(value, int) or (isinstance(value, float) and value.is_integer())) and 0 < value < 1e14:
        compact = _compact_date(str(int(value)))
        if compact is not None:
            return compact
    if isinstance(value, (int, float)):
        return _from_number(_float(value), value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=CST)
        return dt.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=CST).timestamp()
    return _from_number(_float(value), value)  # numpy scalars and the like


def _float(value: object) -> float:
    """float(value), or a TimeParseError: an int past float range (JSON allows any number of digits), or a
    value float() does not take."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TimeParseError(f"unsupported timestamp {short_repr(value)}") from None
    except OverflowError:
        raise TimeParseError(f"invalid timestamp {short_repr(value)}") from None


def short_repr(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters: an error names the value (a 400-digit number, a whole
    object) without echoing all of it back."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _from_number(num: float, original: object) -> float:
    if not math.isfinite(num):
        raise TimeParseError(f"invalid timestamp {short_repr(original)}")
    for threshold, per_second in ((1e17, 1e9), (1e14, 1e6), (_MS_THRESHOLD, 1e3)):  # ns, µs, ms
        if abs(num) >= threshold:
            return num / per_second
    return num


def _compact_date(s: str) -> float | None:
    """YYYYMMDD or YYYYMMDDHHMMSS (UTC+8) when `s` has exactly that shape (8 or 14 digits), else None.

    A value of that shape is a date or nothing: an invalid one (20240230, 20241301) or one outside
    1900-2199 is a TimeParseError, never epoch seconds, which would store a typo as a day in 1970-1973."""
    m = _COMPACT.fullmatch(s)
    if not m:
        return None
    parts = [int(g) for g in m.groups() if g is not None]
    try:
        if not 1900 <= parts[0] <= 2199:
            raise ValueError
        return datetime(*parts, tzinfo=CST).timestamp()  # type: ignore[misc]
    except ValueError:
        raise TimeParseError(f"invalid compact date {s!r} (YYYYMMDD or YYYYMMDDHHMMSS)") from None


def _parse_loose(m: re.Match[str], s: str) -> float:
    g = m.groupdict()
    y, mo, d, off = g["y"], g["mo"], g["d"], g["off"]
    # the two time spellings fill different groups (see _LOOSE_DATE); at most one of each pair is set
    hh, mm, ss, frac = (g[k] or g[k + "2"] for k in ("h", "mi", "s", "f"))
    micro = int((frac or "0").ljust(6, "0"))
    try:
        tz = CST
        if off:
            tz = timezone.utc if off == "Z" else datetime.strptime(off.replace(":", ""), "%z").tzinfo  # type: ignore[assignment]
        dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), micro, tzinfo=tz)
    except ValueError:
        raise TimeParseError(f"unparseable timestamp {s!r}") from None
    return dt.timestamp()


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
