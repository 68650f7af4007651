"""Parsers for single values, shared by the TOML and the Cedar XML readers.

Each raises ``Invalid`` with the reason only; the reader that called it adds the file and key.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from pathlib import Path
from typing import cast

from deltastage.errors import ConfigError
from deltastage.models import Gateway

MAX_NAME_LENGTH = 255


class Invalid(Exception):
    """A value is unacceptable; the message is the reason, the caller adds the key."""


_MODE_RE = re.compile(r"(?:0o)?([0-7]{3,4})")


def octal_mode(text: str) -> int:
    match = _MODE_RE.fullmatch(text.strip())
    if match is None:
        raise Invalid(f'must be an octal permission string like "0640", got {text!r}')
    return int(match.group(1), 8)


def parse_mode(text: str) -> int:
    """Parse an octal permission string ("0640", "640", "0o2750"); ConfigError if bad."""
    try:
        return octal_mode(text)
    except Invalid as exc:
        raise ConfigError(str(exc)) from None


def host_name(text: str) -> str:
    if not text or any(c.isspace() or not c.isprintable() for c in text) or "/" in text:
        raise Invalid(f"not a host name: {text!r}")
    if text.startswith("-"):
        # ssh would read a leading dash as an option
        raise Invalid(f"a host name cannot start with '-': {text!r}")
    return text


def port_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid(f"must be a port number from 1 to 65535, got {value!r}")
    return value


def gateway(text: str) -> Gateway:
    user: str | None = None
    rest = text.strip()
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user or any(c.isspace() or not c.isprintable() for c in user):
            raise Invalid(f'not a gateway "user@host:port": {text!r}')
    port = 22
    port_text: str | None = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise Invalid(f'not a gateway "user@host:port": {text!r}')
        port_text = tail[1:] if tail else None
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host = rest
    if port_text is not None:
        if not port_text.isdigit():
            raise Invalid(f"gateway port must be a number: {text!r}")
        port = port_number(int(port_text))
    return Gateway(host=host_name(host), port=port, user=user)


def parse_gateway(text: str) -> Gateway:
    """Parse ``[user@]host[:port]`` (``[v6addr]:port`` for IPv6); ConfigError if bad."""
    try:
        return gateway(text)
    except Invalid as exc:
        raise ConfigError(str(exc)) from None


def gateway_text(gateway: Gateway) -> str:
    user = f"{gateway.user}@" if gateway.user else ""
    host = f"[{gateway.host}]" if ":" in gateway.host else gateway.host
    return f"{user}{host}:{gateway.port}"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a directory or file name of its own, or None."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    if name in (".", ".."):
        return f"{name!r} is not a usable name"
    if "/" in name or "\\" in name:
        return f"must not contain a path separator: {name!r}"
    if any(not c.isprintable() for c in name):
        return f"must not contain control characters: {name!r}"
    return None


def peer_name_problem(name: str) -> str | None:
    problem = name_problem(name)
    if problem is None and name.startswith("."):
        return f"must not start with '.' (it names a staging directory): {name!r}"
    if problem is None and name != name.strip():
        return f"must not start or end with blanks: {name!r}"
    return problem


def path_text_problem(text: str) -> str | None:
    if not text:
        return "must not be empty"
    if "\0" in text:
        return "must not contain a NUL character"
    return None


def local_path(text: str, base: Path) -> Path:
    problem = path_text_problem(text)
    if problem:
        raise Invalid(problem)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def remote_path(text: str) -> Path:
    problem = path_text_problem(text)
    if problem:
        raise Invalid(problem)
    if not text.startswith("/"):
        raise Invalid(f"must be an absolute path on the peer, got {text!r}")
    return Path(posixpath.normpath(text))


def agent_command(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise Invalid(f"cannot split {value!r}: {exc}") from None
    elif isinstance(value, list) and all(isinstance(w, str) for w in value):
        words = list(cast("list[str]", value))
    else:
        raise Invalid("must be a string or an array of strings")
    if not words or not words[0]:
        raise Invalid("must name a program")
    if any("\0" in w for w in words):
        raise Invalid("must not contain a NUL character")
    return tuple(words)
