"""What an ssh or scp command line says about reaching a peer: its port, key and jump host.

Cedar Backup reached remote peers with an ``rcp_command`` (scp) and an ``rsh_command`` (ssh);
``import-cedar`` carries over the settings deltastage has, and lists the ones it has not.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from deltastage.config.values import Invalid, gateway, local_path, port_number
from deltastage.models import Gateway


@dataclass
class SshSettings:
    port: int | None = None
    identity: Path | None = None
    gateway: Gateway | None = None
    unmapped: list[str] = field(default_factory=list)


# ssh/scp options that take an argument (ssh(1), scp(1)); others are single-letter flags.
_SSH_ARG_FLAGS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
_SCP_ARG_FLAGS = frozenset("cDFiJloPSX")
# Flags that change nothing deltastage needs to reproduce: batch mode, quiet, verbose and
# compression (deltastage compresses literals itself); scp's -p and -r are added below.
_HARMLESS_FLAGS = frozenset("BqvC")


def ssh_settings(command: str, base: Path) -> SshSettings:
    """What an ssh/scp command line says about reaching the peer: port, key, jump host."""
    words = shlex.split(command)
    settings = SshSettings()
    if not words:
        return settings
    program = posixpath.basename(words[0])
    is_scp = program.startswith("scp")
    if not (is_scp or program.startswith("ssh")):
        settings.unmapped.append(words[0])
        return settings
    arg_flags = _SCP_ARG_FLAGS if is_scp else _SSH_ARG_FLAGS
    port_flag = "P" if is_scp else "p"
    harmless = _HARMLESS_FLAGS | ({"p", "r"} if is_scp else set())
    args = iter(words[1:])
    for word in args:
        if not word.startswith("-") or word == "-":
            settings.unmapped.append(word)
            continue
        letters = word[1:]
        while letters:
            flag, letters = letters[0], letters[1:]
            if flag not in arg_flags:
                if flag not in harmless:
                    settings.unmapped.append(f"-{flag}")
                continue
            value = letters or next(args, "")
            letters = ""
            _ssh_option(settings, flag, port_flag, value, base)
    return settings


def _ssh_option(settings: SshSettings, flag: str, port_flag: str, value: str, base: Path) -> None:
    try:
        if flag == port_flag:
            settings.port = port_number(int(value)) if value.isdigit() else port_number(value)
        elif flag == "i":
            settings.identity = local_path(value, base)
        elif flag == "J" and "," not in value:
            settings.gateway = gateway(value)
        elif flag == "o" and "=" in value:
            key, _, option = value.partition("=")
            key = key.strip().lower()
            if key == "port":
                settings.port = port_number(int(option) if option.strip().isdigit() else option)
            elif key == "identityfile":
                settings.identity = local_path(option.strip(), base)
            elif key == "proxyjump" and "," not in option:
                settings.gateway = gateway(option.strip())
            else:
                settings.unmapped.append(f"-o {value}")
        else:
            settings.unmapped.append(f"-{flag} {value}")
    except Invalid:
        settings.unmapped.append(f"-{flag} {value}")
