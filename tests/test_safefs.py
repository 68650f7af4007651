"""safefs, the read and write boundary: every refusal, and what it must still allow."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deltastage.errors import UnsafePathError
from deltastage.protocol.paths import MAX_DEPTH
from deltastage.safefs import (
    DIR_FLAGS,
    FILE_CREATE,
    FILE_READ,
    DirCache,
    check_relative_path,
    open_at,
    open_child_dir,
    open_dir,
    open_file_beneath,
    open_parent_beneath,
    remove_tree_beneath,
    walk_files,
)

# --- the path rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "..", "../x", "a/..", "a/../b", ".", "./a", "a/.",  # '.' and '..'
        "/", "/etc/passwd", "/a/b",  # absolute
        "", "a//b", "a/", "//a",  # empty parts
        "a\0b", "\0",  # NUL
        "x" * 256, "a/" + "é" * 128,  # a name over 255 bytes
        "/".join(["x" * 200] * 21),  # a path over 4096 bytes
        "/".join(["d"] * (MAX_DEPTH + 2)),  # nested too deep
    ],
)  # fmt: skip
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafePathError):
        check_relative_path(path)


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("a", ["a"]),
        ("a/b/c", ["a", "b", "c"]),
        ("...", ["..."]),
        (".hidden/..x/x..", [".hidden", "..x", "x.."]),
        ("a b/new\nline", ["a b", "new\nline"]),
        ("ünïcødé", ["ünïcødé"]),
        (os.fsdecode(b"latin1-\xe9"), ["latin1-\udce9"]),
        ("x" * 255, ["x" * 255]),
        ("/".join(["d"] * (MAX_DEPTH + 1)), ["d"] * (MAX_DEPTH + 1)),
    ],
)
def test_safe_paths_split_into_their_parts(path: str, parts: list[str]) -> None:
    assert check_relative_path(path) == parts


# --- a tree with traps --------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path, int]]:
    """A root holding a file, a nested file and traps of every kind; a secret outside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    (outside / "a" / "b").mkdir(parents=True)
    for base in (root, outside):
        (base / "f").write_bytes(b"file " + base.name.encode())
        (base / "a" / "b" / "f").write_bytes(b"nested " + base.name.encode())
    (root / "link-dir").symlink_to(outside)  # a symlink as the first part
    (root / "a" / "link-dir").symlink_to(outside / "a")  # ... as a middle part
    (root / "a" / "b" / "link-file").symlink_to(outside / "f")  # ... as the last part
    (root / "inner-link").symlink_to("f")  # even a link that stays inside is refused
    (root / "dangling").symlink_to(outside / "missing")
    os.mkfifo(root / "fifo")
    fd = open_dir(root)
    yield root, outside, fd
    os.close(fd)


def read_all(fd: int) -> bytes:
    try:
        return os.pread(fd, 1 << 16, 0)
    finally:
        os.close(fd)


def returns_promptly(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread that must end within seconds; return what it raised."""
    raised: list[BaseException | None] = [None]

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised[0] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "blocked"
    return raised[0]


# --- reading beneath a root ---------------------------------------------------------------


def test_regular_files_are_opened_at_any_depth(tree: tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    assert read_all(open_file_beneath(fd, ["f"])) == b"file root"
    assert read_all(open_file_beneath(fd, ["a", "b", "f"])) == b"nested root"


@pytest.mark.parametrize(
    "parts",
    [
        ["link-dir", "f"],  # first
        ["link-dir", "a", "b", "f"],
        ["a", "link-dir", "b", "f"],  # middle
        ["a", "b", "link-file"],  # last
        ["inner-link"],
        ["dangling"],
    ],
)
def test_a_symlink_at_any_level_is_refused(tree: tuple[Path, Path, int], parts: list[str]) -> None:
    _, _, fd = tree
    with pytest.raises(UnsafePathError, match="symlink"):
        open_file_beneath(fd, parts)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tree: tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    raised = returns_promptly(lambda: open_file_beneath(fd, ["fifo"]))
    assert isinstance(raised, UnsafePathError) and "not a regular file" in str(raised)


def test_a_socket_is_refused(tree: tuple[Path, Path, int]) -> None:
    root, _, fd = tree
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(root / "sock"))
        assert stat.S_ISSOCK(os.lstat(root / "sock").st_mode)
        with pytest.raises(OSError):  # a socket cannot be open(2)ed at all
            open_file_beneath(fd, ["sock"])
    finally:
        server.close()


def test_a_directory_where_a_file_is_expected_is_refused(tree: tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    with pytest.raises(UnsafePathError, match="not a regular file"):
        open_file_beneath(fd, ["a", "b"])


def test_a_file_where_a_directory_is_expected_is_refused(tree: tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    with pytest.raises(NotADirectoryError):
        open_file_beneath(fd, ["f", "x"])
    with pytest.raises(NotADirectoryError):
        open_at(fd, "f", DIR_FLAGS)


def test_a_missing_name_is_not_found(tree: tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    with pytest.raises(FileNotFoundError):
        open_file_beneath(fd, ["a", "missing", "f"])
    with pytest.raises(FileNotFoundError):
        open_file_beneath(fd, ["missing"])


@pytest.mark.parametrize("flags", [DIR_FLAGS, FILE_READ])
def test_open_at_refuses_a_symlink_whatever_the_flags(
    tree: tuple[Path, Path, int], flags: int
) -> None:
    _, _, fd = tree
    for name in ("link-dir", "inner-link", "dangling"):
        with pytest.raises(UnsafePathError, match="symlink"):
            open_at(fd, name, flags)
    os.close(open_at(fd, "a", flags))  # a real directory opens either way


def test_a_root_that_is_a_symlink_is_refused(tree: tuple[Path, Path, int]) -> None:
    root, _, _ = tree
    with pytest.raises(OSError):
        open_dir(root / "link-dir")


# --- writing beneath a root ---------------------------------------------------------------


@pytest.mark.parametrize(
    "parts", [["link-dir", "x"], ["a", "link-dir", "x"], ["f", "x"], ["fifo", "x"]]
)
def test_without_create_nothing_but_a_real_directory_is_walked(
    tree: tuple[Path, Path, int], parts: list[str]
) -> None:
    _, _, fd = tree
    with pytest.raises(UnsafePathError), open_parent_beneath(fd, parts, create=False):
        pass


def test_without_create_a_missing_directory_is_not_found(tree: tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    with pytest.raises(FileNotFoundError), open_parent_beneath(fd, ["new", "x"], create=False):
        pass


def snapshot(directory: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(directory)): None if path.is_dir() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
    }


def test_with_create_whatever_is_in_the_way_becomes_a_directory(
    tree: tuple[Path, Path, int],
) -> None:
    root, outside, fd = tree
    before = snapshot(outside)
    for parts in (["link-dir", "x"], ["a", "link-dir", "b", "x"], ["f", "x"], ["n", "m", "x"]):
        with open_parent_beneath(fd, parts, create=True, mode=0o700) as parent:
            os.close(os.open(parts[-1], FILE_CREATE, 0o600, dir_fd=parent))
        path = root.joinpath(*parts)
        assert path.is_file() and not any(p.is_symlink() for p in path.parents)
    assert (root / "n").stat().st_mode & 0o777 == 0o700
    assert snapshot(outside) == before  # the links were replaced, never followed


@pytest.mark.parametrize("name", ["inner-link", "dangling", "f", "a", "fifo"])
def test_a_file_is_created_only_where_nothing_is(tree: tuple[Path, Path, int], name: str) -> None:
    root, outside, fd = tree
    before = snapshot(outside)
    with pytest.raises(FileExistsError):
        os.open(name, FILE_CREATE, 0o600, dir_fd=fd)
    assert snapshot(outside) == before
    assert not (outside / "missing").exists()  # the dangling link did not create its target
    fresh = os.open("fresh", FILE_CREATE, 0o600, dir_fd=fd)
    os.write(fresh, b"x")
    assert os.pread(fresh, 1, 0) == b"x"  # created for reading back too
    os.close(fresh)
    assert (root / "fresh").read_bytes() == b"x"


def test_open_child_dir_creates_and_reopens(tree: tuple[Path, Path, int]) -> None:
    root, _, fd = tree
    os.close(open_child_dir(fd, "made", create=True, mode=0o750))
    assert (root / "made").is_dir() and (root / "made").stat().st_mode & 0o777 == 0o750
    os.close(open_child_dir(fd, "made", create=False))
    with pytest.raises(UnsafePathError):
        open_child_dir(fd, "link-dir", create=False)


@pytest.mark.parametrize("planted", ["dir", "symlink"])
def test_a_directory_made_meanwhile_by_another_process_is_opened(
    tree: tuple[Path, Path, int], monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """The commit worker and the receiver may make the same directory at once: the one
    whose mkdir finds it made opens it, and only if it is a directory."""
    root, outside, fd = tree
    real_mkdir = os.mkdir

    def raced(name: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        if planted == "dir":  # the other process won
            real_mkdir(name, mode, dir_fd=dir_fd)
        else:
            os.symlink(outside, name, dir_fd=dir_fd)
        raise FileExistsError(errno.EEXIST, "File exists", name)

    monkeypatch.setattr(os, "mkdir", raced)
    if planted == "dir":
        os.close(open_child_dir(fd, "made", create=True))
        assert (root / "made").is_dir()
    else:  # refused, never followed
        with pytest.raises((UnsafePathError, NotADirectoryError)):
            open_child_dir(fd, "made", create=True)


def test_a_file_in_the_way_removed_meanwhile_by_another_process(
    tree: tuple[Path, Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both processes find a staged file where a directory is needed now; the one whose
    unlink finds it gone goes on to make (or open) the directory."""
    root, _, fd = tree
    real_unlink = os.unlink

    def raced(name: str, *, dir_fd: int | None = None) -> None:
        real_unlink(name, dir_fd=dir_fd)  # the other process was first
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)

    monkeypatch.setattr(os, "unlink", raced)
    os.close(open_child_dir(fd, "f", create=True))
    assert (root / "f").is_dir()


def test_the_dir_cache_opens_each_directory_once_and_never_through_a_link(
    tree: tuple[Path, Path, int],
) -> None:
    _, _, fd = tree
    cache = DirCache(fd, create=False)
    try:
        with cache.lease(("a", "b")) as nested, cache.parent(["a", "b", "f"]) as again:
            assert again == nested
        with cache.lease(()) as root:
            assert root == fd
        assert cache.open_count == 2  # a and a/b
        with pytest.raises(UnsafePathError), cache.lease(("a", "link-dir")):
            pass
        with pytest.raises(NotADirectoryError), cache.lease(("f",)):
            pass
        cache.forget(("a",))
        assert cache.open_count == 0
    finally:
        cache.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def many_dirs(root: Path, count: int) -> list[tuple[str, ...]]:
    """``count`` leaf directories two levels deep (a parent per ten), each with its file."""
    leaves = [(f"d{i // 10}", f"e{i}") for i in range(count)]
    for leaf in leaves:
        root.joinpath(*leaf).mkdir(parents=True)
        root.joinpath(*leaf, "f").write_bytes(leaf[-1].encode())
    return leaves


def test_the_dir_cache_keeps_at_most_its_bound_open(tmp_path: Path) -> None:
    leaves = many_dirs(tmp_path, 200)
    root_fd = open_dir(tmp_path)
    cache = DirCache(root_fd, create=False, max_open=16)
    before = open_fds()
    most = 0
    try:
        for _ in range(2):  # the second time round, every directory was evicted: reopened
            for leaf in leaves:
                with cache.parent([*leaf, "f"]) as dir_fd:
                    assert read_all(os.open("f", FILE_READ, dir_fd=dir_fd)) == leaf[-1].encode()
                    most = max(most, open_fds() - before)
                    assert cache.open_count <= 16
    finally:
        cache.close()
        os.close(root_fd)
    assert most <= 16
    assert open_fds() == before - 1


def test_the_dir_cache_creates_with_its_mode_and_forgets_a_removed_subtree(
    tmp_path: Path,
) -> None:
    root_fd = open_dir(tmp_path)
    cache = DirCache(root_fd, create=True, mode=0o750, max_open=4)
    try:
        for i in range(10):
            with cache.lease(("made", f"n{i}", "deep")) as dir_fd:
                os.close(os.open("x", FILE_CREATE, 0o600, dir_fd=dir_fd))
        assert (tmp_path / "made" / "n9" / "deep" / "x").is_file()
        assert (tmp_path / "made" / "n0").stat().st_mode & 0o777 == 0o750
        assert cache.open_count <= 4
        with cache.lease(("made", "n9")) as dir_fd:
            remove_tree_beneath(dir_fd, "deep")
            cache.forget(("made", "n9", "deep"))
        with cache.lease(("made", "n9", "deep")) as dir_fd:  # made again, not the stale fd
            assert os.listdir(dir_fd) == []
    finally:
        cache.close()
        os.close(root_fd)
    assert cache.open_count == 0


def test_a_directory_evicted_is_reopened_without_following_a_link(
    tree: tuple[Path, Path, int],
) -> None:
    root, outside, fd = tree
    (root / "c").mkdir()
    cache = DirCache(fd, create=False, max_open=1)
    try:
        with cache.lease(("a", "b")):
            pass
        with cache.lease(("c",)):  # a and a/b closed
            assert cache.open_count == 1
        (root / "a").rename(root / "moved")
        (root / "a").symlink_to(outside / "a")  # a link planted where a/ was
        with pytest.raises(UnsafePathError), cache.lease(("a", "b")):
            pass
    finally:
        cache.close()


def test_a_leased_fd_is_never_closed_by_another_threads_eviction(tmp_path: Path) -> None:
    leaves = many_dirs(tmp_path, 120)
    inode = {leaf: os.stat(tmp_path.joinpath(*leaf)).st_ino for leaf in leaves}
    root_fd = open_dir(tmp_path)
    cache = DirCache(root_fd, create=False, max_open=8)
    errors: list[BaseException] = []

    def churn(seed: int) -> None:
        order = leaves[seed:] + leaves[:seed]
        try:
            for leaf in order * 3:
                with cache.lease(leaf) as dir_fd:
                    # the fd is this directory's all along, whatever the others evict
                    assert os.fstat(dir_fd).st_ino == inode[leaf]
                    os.listdir(dir_fd)
                    assert os.fstat(dir_fd).st_ino == inode[leaf]
        except BaseException as exc:
            errors.append(exc)

    try:
        with cache.lease(leaves[0]) as held:
            threads = [threading.Thread(target=churn, args=(n * 7,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert os.fstat(held).st_ino == inode[leaves[0]]  # leased: survived every eviction
        assert errors == []
        assert cache.open_count <= 8
    finally:
        cache.close()
        os.close(root_fd)


def test_a_directory_forgotten_while_leased_is_closed_when_its_lease_ends(
    tmp_path: Path,
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    root_fd = open_dir(tmp_path)
    cache = DirCache(root_fd, create=False)
    try:
        with cache.lease(("a", "b")) as dir_fd:
            cache.forget(("a",))
            assert cache.open_count == 1  # a closed; a/b is still in use
            os.fstat(dir_fd)
        assert cache.open_count == 0
    finally:
        cache.close()
        os.close(root_fd)


@pytest.fixture
def no_fd_left() -> Iterator[list[int]]:
    """The process out of fds (a soft limit just above the fds open, the rest filled in);
    the fillers are closed and the limit restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))) + 2, hard)
    )
    try:
        with contextlib.suppress(OSError):
            while True:
                fillers.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        yield fillers
    finally:
        for each in fillers:
            os.close(each)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("create", [False, True])
def test_too_many_open_files_is_reported_as_such_not_as_a_non_directory(
    tree: tuple[Path, Path, int], no_fd_left: list[int], create: bool
) -> None:
    _, _, fd = tree
    with pytest.raises(OSError) as raised:
        open_child_dir(fd, "a", create=create)
    assert raised.value.errno == errno.EMFILE
    assert not isinstance(raised.value, UnsafePathError)
    assert "Too many open files" in str(raised.value)


# --- removing and walking -----------------------------------------------------------------


def test_removing_a_tree_never_follows_a_link(tree: tuple[Path, Path, int]) -> None:
    root, outside, fd = tree
    before = snapshot(outside)
    remove_tree_beneath(fd, "a")
    remove_tree_beneath(fd, "link-dir")
    remove_tree_beneath(fd, "missing")  # nothing there: nothing to do
    assert not (root / "a").exists() and not (root / "link-dir").is_symlink()
    assert snapshot(outside) == before


def test_walking_lists_links_and_special_files_without_following_them(
    tree: tuple[Path, Path, int],
) -> None:
    _, _, fd = tree
    walked = dict(walk_files(fd))
    assert sorted(walked) == [
        "a/b/f", "a/b/link-file", "a/link-dir", "dangling", "f", "fifo", "inner-link",
        "link-dir",
    ]  # fmt: skip
    assert stat.S_ISLNK(walked["link-dir"].st_mode) and stat.S_ISFIFO(walked["fifo"].st_mode)
