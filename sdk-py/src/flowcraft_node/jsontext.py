"""JSON text as it crosses the component boundary: strict encoding and
decoding shared by the component, the context and the test host.

Python's :mod:`json` is lenient where the host is not: it writes ``NaN`` and
``Infinity``, reads them back, and writes strings with lone surrogates that
are not UTF-8. These helpers refuse all three with :class:`ValueError`, so a
value that leaves the SDK is JSON the host accepts.
"""

from __future__ import annotations

import json
from typing import Any


def encode(value: Any) -> str:
    """``value`` as compact JSON text.

    Raises :class:`TypeError` for values JSON cannot represent (sets, objects)
    and :class:`ValueError` for non-finite floats and lone surrogates.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"a string is not valid Unicode (lone surrogate at {error.start})") from None
    return text


def decode(text: str) -> Any:
    """The value of the JSON ``text``; raises :class:`ValueError` when it is
    not JSON (including the non-standard ``NaN`` and ``Infinity``)."""
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
