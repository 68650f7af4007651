"""What both loaders check beyond single values: the file's size as it is read, the accounts
named for ownership, where the collect and staging dirs lie, and peer names that are
indicators' names."""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from deltastage.config.model import Options, PeerConfig
from deltastage.config.problems import Problems
from deltastage.errors import ConfigError

# A config file is a few kilobytes; refusing big ones keeps a mistaken path (a backup
# image, /dev/zero) from being read into memory.
MAX_CONFIG_BYTES = 4 << 20


def accounts(
    options: Options, user_key: str, group_key: str, problems: Problems, check: bool | None
) -> None:
    # Ownership is only changed when running as root, so only then must the names resolve
    # (Cedar Backup does the same through getUidGid).
    if not (os.geteuid() == 0 if check is None else check):
        return
    if options.backup_user is not None:
        try:
            pwd.getpwnam(options.backup_user)
        except (KeyError, ValueError):  # ValueError: a NUL in the name
            problems.add(user_key, f"no such user {options.backup_user!r} on this machine")
    if options.backup_group is not None:
        try:
            grp.getgrnam(options.backup_group)
        except (KeyError, ValueError):
            problems.add(group_key, f"no such group {options.backup_group!r} on this machine")


def layout(staging_dir: Path, peers: Iterable[tuple[str, PeerConfig]], problems: Problems) -> None:
    """A local collect dir inside the staging dir (or the reverse) would stage its own output.

    Judged by the paths' text and by the dirs themselves: a symlink or a bind mount can put
    one inside the other under a path that does not show it, so the device and inode of the
    one are looked for among those of the other and each of its ancestors. A bind mount of
    a subdirectory shows neither: its mount point has the subdirectory's identity, and its
    ancestors are the mount's. So each dir is also placed where it lies on its filesystem,
    through the mount table (``_fs_location``), and the two places compared.
    """
    staging = _identity(staging_dir)
    staging_line = _lineage(staging_dir)
    mounts = _mounts()
    staging_place = _fs_location(staging_dir, mounts)
    for key, peer in peers:
        if peer.type != "local":
            continue
        collect_dir = peer.collect_dir
        collect = _identity(collect_dir)
        if collect_dir.is_relative_to(staging_dir):
            problems.add(key, f"collect dir {str(collect_dir)!r} lies inside the staging dir")
        elif staging_dir.is_relative_to(collect_dir):
            problems.add(key, f"the staging dir lies inside collect dir {str(collect_dir)!r}")
        elif staging is not None and staging in _lineage(collect_dir):
            problems.add(
                key,
                f"collect dir {str(collect_dir)!r} lies inside the staging dir "
                "(through a symlink or a mount)",
            )
        elif (collect is not None and collect in staging_line) or _inside(
            staging_place, _fs_location(collect_dir, mounts)
        ):
            problems.add(
                key,
                f"the staging dir lies inside collect dir {str(collect_dir)!r} "
                "(through a symlink or a mount)",
            )
        elif _inside(_fs_location(collect_dir, mounts), staging_place):
            problems.add(
                key,
                f"collect dir {str(collect_dir)!r} lies inside the staging dir "
                "(through a symlink or a mount)",
            )


def _identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the dir at ``path`` (links followed), None if it is not there."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _lineage(path: Path) -> set[tuple[int, int]]:
    """The identities of ``path`` and of every ancestor, along the path as written (a
    symlink on the way is followed by stat) and along its resolved form; a dir not made
    yet adds nothing, its ancestors still count. A bind mount has its source's identity."""
    found: set[tuple[int, int]] = set()
    for each in (path, Path(os.path.realpath(path))):
        for ancestor in (each, *each.parents):
            identity = _identity(ancestor)
            if identity is not None:
                found.add(identity)
    return found


# A mount: its device ("major:minor"), the dir of that filesystem it shows, and where.
_Mount = tuple[str, PurePosixPath, PurePosixPath]
_MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _mounts() -> list[_Mount]:
    """This process's mounts, in the kernel's order (a later one over the same place hides
    an earlier one); none where the table cannot be read (not Linux)."""
    try:
        text = _MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return []
    mounts: list[_Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 5:
            root, point = (_unescape(field) for field in fields[3:5])
            mounts.append((fields[2], PurePosixPath(root), PurePosixPath(point)))
    return mounts


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def _fs_location(path: Path, mounts: list[_Mount]) -> tuple[str, PurePosixPath] | None:
    """Where the dir at ``path`` (symlinks resolved; a dir not made yet counts where it
    would be) lies: its filesystem's device and its path from that filesystem's root,
    through the mount it is under. None without a mount table."""
    real = PurePosixPath(os.path.realpath(path))
    under = None
    for mount in mounts:
        point = mount[2]
        if real.is_relative_to(point) and (
            under is None or len(point.parts) >= len(under[2].parts)
        ):
            under = mount
    if under is None:
        return None
    device, root, point = under
    return device, root / real.relative_to(point)


def _inside(
    inner: tuple[str, PurePosixPath] | None, outer: tuple[str, PurePosixPath] | None
) -> bool:
    """Whether ``inner`` lies in ``outer`` (or is it): the same filesystem, beneath its path."""
    return (
        inner is not None
        and outer is not None
        and inner[0] == outer[0]
        and inner[1].is_relative_to(outer[1])
    )


# Cedar Backup's indicator names: a peer named like one would have its staging dir where the
# daily dir's indicator goes, or be taken for it by Cedar's later actions.
CEDAR_INDICATORS = ("cback.collect", "cback.stage", "cback.store")


def peer_names(
    options: Options, peers: Iterable[tuple[str, PeerConfig]], problems: Problems
) -> None:
    """A peer may not be named like an indicator: ``cback.stage`` as a peer dir leaves no
    room for the daily dir's stage indicator, which could then never be written."""
    reserved = {name: "a Cedar Backup indicator" for name in CEDAR_INDICATORS}
    reserved[options.collect_indicator] = "the collect indicator (options.collect_indicator)"
    reserved[options.stage_indicator] = "the stage indicator (options.stage_indicator)"
    for key, peer in peers:
        what = reserved.get(peer.name)
        if what is not None:
            problems.add(
                key,
                f"{peer.name!r} is the name of {what}: a peer's staging dir may not take it",
            )


def read_source(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a {what}")
    return data
