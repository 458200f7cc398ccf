# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash-safe file primitives shared by the metadata store and the reports.

* ``atomic_write``: temp file in the same directory, fsync, rename, directory fsync.
  A reader sees either the old or the new content, never a half-written file.
* ``create_exclusive``: the same, but the final name must not exist yet (``link``
  refuses to replace), so two writers can never overwrite each other.
* ``append_line``: one ``write`` on an ``O_APPEND`` descriptor, then fsync; a last line
  torn by a crash is ended first, so a new line never merges with it.
* ``lines_backwards``: the lines of a file from the end, read in chunks (log tails, the
  last entry of an append-only index) without loading the file.
* ``locked(data_dir)``: ``fcntl.flock`` on ``<data_dir>/.lock``; serializes every
  writer of one data folder across processes (``--forks``, AWX, several
  ``ansible-playbook`` runs). Re-entrant inside one process and thread.

Modes and symlinks (the one home of both rules): files are created ``0600`` and folders ``0700``
(``FILE_MODE``, ``DIR_MODE``), whatever the umask: they hold tenant data. An existing file or folder
keeps its mode. No write follows a symbolic link: the file itself is opened with ``O_NOFOLLOW`` or
checked with ``lstat`` before it is replaced, and while the thread holds ``locked(data_dir)`` every
folder between the data folder and the file must be a real folder too (the data folder itself, and
a file outside it such as a log elsewhere, are the operator's: only the file is checked). A symlink
raises ``UnsafePath`` naming it, and nothing is written.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
import threading

LOCK_NAME = ".lock"
TEMP_PREFIX = ".tmp-"
FILE_MODE = 0o600
DIR_MODE = 0o700

_held = {}
_held_guard = threading.Lock()
_thread_locks = {}
_local = threading.local()


class UnsafePath(OSError):
    """A path the collection writes is a symbolic link: refused, nothing written (``errno`` ELOOP)."""

    def __str__(self):
        return str(self.strerror)


def _root_of(path):
    """The innermost data folder whose lock this thread holds and that contains ``path``, or None."""
    for root in reversed(getattr(_local, "roots", ())):
        if path.startswith(root + os.sep):
            return root
    return None


def check_path(path, root=None):
    """Raise ``UnsafePath`` when ``path`` or a folder between ``root`` and it is a symbolic link.

    ``root`` defaults to the data folder whose lock the thread holds (``locked``) when it contains
    ``path``; without one only ``path`` itself is checked. Missing parts are fine (they will be
    created as real folders). Returns the absolute path.
    """
    path = os.path.abspath(path)
    root = os.path.abspath(root) if root else _root_of(path)
    if root is not None and not path.startswith(root + os.sep):
        root = None
    parts = [path]
    if root is not None:
        head = os.path.dirname(path)
        while head != root and head.startswith(root + os.sep):
            parts.insert(0, head)
            head = os.path.dirname(head)
    for part in parts:
        try:
            info = os.lstat(part)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                break  # missing: the write creates it, or fails with its own error
            raise
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePath(errno.ELOOP, "refused: %s is a symbolic link (the collection never writes through"
                                          " a symlink; remove it or point es_data_dir/es_log_file at a real path)"
                             % part, part)
    return path


def ensure_dir(path, mode=DIR_MODE):
    """Create ``path`` (and missing parents, each ``mode``) if it is missing.

    Below the data folder whose lock the thread holds no folder may be a symlink; the data folder
    itself and folders outside it (an operator's ``/var/lib/es -> /data/es``) may be.
    """
    path = os.path.abspath(path)
    if _root_of(path) is not None:
        check_path(path)
    missing = []
    head = path
    while not os.path.isdir(head):
        missing.insert(0, head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for folder in missing:
        try:
            os.mkdir(folder, mode)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
        else:
            os.chmod(folder, mode)  # mkdir applies the umask; the mode is the rule
    if _root_of(path) is not None:
        check_path(path)
    if not os.path.isdir(path):
        raise OSError(errno.ENOTDIR, "%s is not a folder" % path, path)
    return path


def fsync_dir(path):
    """fsync a directory so a rename/link/unlink in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_bytes(data):
    if isinstance(data, bytes):
        return data
    return data.encode("utf-8")


def _write_temp(directory, data, mode, durable=True):
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        os.fchmod(fd, mode)
        view = memoryview(_to_bytes(data))
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path, data, mode=FILE_MODE, durable=True):
    """Replace ``path`` with ``data`` (str or bytes) atomically and durably.

    With ``durable=False`` the fsyncs are left out: still atomic for readers, but a crash may lose
    the file or leave it empty, so the caller must ``os.sync()`` before anything relies on it (a
    bulk write such as the store's migration, which syncs once before its last step).
    """
    directory = os.path.dirname(os.path.abspath(path))
    ensure_dir(directory)
    check_path(path)
    tmp = _write_temp(directory, data, mode, durable)
    try:
        os.rename(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(directory)
    return path


def create_exclusive(path, data, mode=FILE_MODE):
    """Write ``data`` to the new file ``path`` atomically; never replaces an existing file.

    Raises ``FileExistsError`` (an ``OSError`` with ``EEXIST``) when ``path`` exists.
    """
    directory = os.path.dirname(os.path.abspath(path))
    ensure_dir(directory)
    check_path(path)
    tmp = _write_temp(directory, data, mode)
    try:
        os.link(tmp, path)
    finally:
        _unlink_quietly(tmp)
    fsync_dir(directory)
    return path


def write_json(path, obj, mode=FILE_MODE, durable=True):
    """Atomically write ``obj`` as indented JSON (keys in insertion order); ``durable`` as for ``atomic_write``."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", mode, durable)


def read_json(path, default=None):
    """Load JSON from ``path``; ``default`` when the file does not exist."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return default
        raise
    return json.loads(raw.decode("utf-8"))


def remove(path):
    """Delete ``path`` durably; True when a file was removed, False when it was missing."""
    check_path(os.path.dirname(os.path.abspath(path)))
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True


def _open_nofollow(path, flags, mode):
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            check_path(path)  # raises UnsafePath naming the link
        raise


def append_line(path, line, mode=FILE_MODE):
    """Append ``line`` plus a newline with a single write on an O_APPEND descriptor, then fsync.

    When the file does not end with a newline (a write torn by a crash), one is written first.
    """
    directory = os.path.dirname(os.path.abspath(path))
    ensure_dir(directory)
    payload = _to_bytes(line.rstrip("\n") + "\n")
    try:
        fd = _open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, mode)
        readable = True
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM):
            raise
        fd = _open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
        readable = False
    try:
        if readable:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload
        written = os.write(fd, payload)
        if written != len(payload):
            raise OSError("short write to %s (%d of %d bytes)" % (path, written, len(payload)))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def lines_backwards(path, chunk=65536):
    """Yield the non-empty lines of ``path`` (str, UTF-8 with replacement), last line first.

    Reads backwards in chunks of ``chunk`` bytes; a missing file yields nothing.
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise
    with handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        rest = b""
        while position > 0:
            step = min(chunk, position)
            position -= step
            handle.seek(position)
            parts = (handle.read(step) + rest).split(b"\n")
            rest = parts[0] if position > 0 else b""
            for raw in reversed(parts[1:] if position > 0 else parts):
                if raw:
                    yield raw.decode("utf-8", "replace")


def list_dir(path):
    """The names in directory ``path``; ``[]`` when it does not exist."""
    try:
        return os.listdir(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise


def _thread_lock(key):
    with _held_guard:
        lock = _thread_locks.get(key)
        if lock is None:
            lock = threading.RLock()
            _thread_locks[key] = lock
        return lock


@contextlib.contextmanager
def locked(data_dir):
    """Hold the exclusive lock of ``data_dir`` (creating the folder if needed).

    The lock is ``fcntl.flock`` on ``<data_dir>/.lock``; it is released when the
    block ends or the process dies. Nested use in the same thread is allowed. While it is held,
    the thread's writes below ``data_dir`` refuse a symlink at every folder between it and the file.
    """
    ensure_dir(data_dir)
    key = (os.getpid(), os.path.realpath(data_dir))
    tlock = _thread_lock(key)
    with tlock:
        depth, fd = _held.get(key, (0, None))
        if depth == 0:
            fd = _open_nofollow(os.path.join(data_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        _held[key] = (depth + 1, fd)
        roots = _local.__dict__.setdefault("roots", [])
        roots.append(os.path.abspath(data_dir))
        try:
            yield data_dir
        finally:
            roots.pop()
            depth, fd = _held[key]
            if depth == 1:
                del _held[key]
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
            else:
                _held[key] = (depth - 1, fd)
