# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
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
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import threading

LOCK_NAME = ".lock"
TEMP_PREFIX = ".tmp-"

_held = {}
_held_guard = threading.Lock()
_thread_locks = {}


def ensure_dir(path, mode=0o755):
    """Create ``path`` (and parents) if it is missing."""
    try:
        os.makedirs(path, mode)
    except OSError as exc:
        if exc.errno != errno.EEXIST or not os.path.isdir(path):
            raise
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


def atomic_write(path, data, mode=0o644, durable=True):
    """Replace ``path`` with ``data`` (str or bytes) atomically and durably.

    With ``durable=False`` the fsyncs are left out: still atomic for readers, but a crash may lose
    the file or leave it empty, so the caller must ``os.sync()`` before anything relies on it (a
    bulk write such as the store's migration, which syncs once before its last step).
    """
    directory = os.path.dirname(os.path.abspath(path))
    ensure_dir(directory)
    tmp = _write_temp(directory, data, mode, durable)
    try:
        os.rename(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(directory)
    return path


def create_exclusive(path, data, mode=0o644):
    """Write ``data`` to the new file ``path`` atomically; never replaces an existing file.

    Raises ``FileExistsError`` (an ``OSError`` with ``EEXIST``) when ``path`` exists.
    """
    directory = os.path.dirname(os.path.abspath(path))
    ensure_dir(directory)
    tmp = _write_temp(directory, data, mode)
    try:
        os.link(tmp, path)
    finally:
        _unlink_quietly(tmp)
    fsync_dir(directory)
    return path


def write_json(path, obj, mode=0o644, durable=True):
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
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True


def append_line(path, line, mode=0o644):
    """Append ``line`` plus a newline with a single write on an O_APPEND descriptor, then fsync.

    When the file does not end with a newline (a write torn by a crash), one is written first.
    """
    directory = os.path.dirname(os.path.abspath(path))
    ensure_dir(directory)
    payload = _to_bytes(line.rstrip("\n") + "\n")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, mode)
        readable = True
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM):
            raise
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
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
    block ends or the process dies. Nested use in the same thread is allowed.
    """
    ensure_dir(data_dir)
    key = (os.getpid(), os.path.realpath(data_dir))
    tlock = _thread_lock(key)
    with tlock:
        depth, fd = _held.get(key, (0, None))
        if depth == 0:
            fd = os.open(os.path.join(data_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        _held[key] = (depth + 1, fd)
        try:
            yield data_dir
        finally:
            depth, fd = _held[key]
            if depth == 1:
                del _held[key]
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
            else:
                _held[key] = (depth - 1, fd)
