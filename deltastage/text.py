"""Names as a person reads them: what tables, logs and error messages print.

Apart from the records (``models``) so that the error tree, which every command loads first,
needs nothing else.
"""

from __future__ import annotations

__all__ = ["shown"]


def shown(text: str) -> str:
    """``text`` for a person to read (tables, logs): a name's undecodable bytes as
    ``\\xNN``, so printing it never fails and the original bytes can be told."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name holds
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return data.decode("utf-8", "backslashreplace")
