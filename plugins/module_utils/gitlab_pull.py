# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pull tenant configuration files from a GitLab repository.

The pull is consistent, contained and atomic:

- the ref (branch, tag, commit; default the project's default branch) is
  resolved to one commit id first and every file is fetched at that id;
- every path is checked before anything is written: no absolute paths, no
  ``..``, no empty or ``.`` components, nothing outside the requested
  folder; symbolic links (tree mode ``120000``) and submodules are refused;
  each file's content is checked against its git blob id;
- files are written into a temporary folder beside ``dest`` which then
  replaces ``dest`` with renames (old tree renamed away, new one renamed in,
  old one removed). A failed pull leaves the previous tree (or none) and no
  temporary folder behind.

The pulled tree mirrors repository paths (``dir: config`` lands in
``<dest>/config/...``). Well-known files are looked up in the pulled tree,
most specific first, with ``<root>`` being ``dir`` (when given) and then the
top of the tree:

- ``elasticsearch_yml``: ``<root>/config/elasticsearch.yml``, then
  ``<root>/elasticsearch.yml``;
- ``jvm_options``: ``<root>/config/jvm.options``, then ``<root>/jvm.options``;
- ``manifests``: every ``.yml``/``.yaml``/``.json`` file under ``<root>/k8s/``
  (any depth), sorted.

Error messages name the URL and the path concerned and never carry the
token: python-gitlab and requests exceptions are caught and their messages
rebuilt, and the token string is scrubbed from every message defensively.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import hashlib
import os
import shutil
import tempfile
import warnings

try:
    import gitlab
    import gitlab.exceptions
    import requests
    import requests.exceptions

    HAS_GITLAB = True
    GITLAB_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    HAS_GITLAB = False
    GITLAB_IMPORT_ERROR = str(exc)

MODE_SYMLINK = "120000"
MODE_SUBMODULE = "160000"
FILE_MODES = ("100644", "100755", "100664")
MANIFEST_EXTENSIONS = (".yml", ".yaml", ".json")
MASK = "********"
TMP_MARK = ".tmp-"
OLD_MARK = ".old-"


class PullError(Exception):
    """A pull failed; ``message`` is safe to show (no token)."""

    def __init__(self, message, kind="error"):
        super().__init__(message)
        self.message = message
        self.kind = kind


def scrub(text, secrets):
    """Replace every non-empty secret in ``text`` by ``********``."""
    text = "%s" % (text,)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def check_relpath(path, what):
    """Return ``path`` if it is a safe relative POSIX path, else raise PullError."""
    if not isinstance(path, str) or not path:
        raise PullError("%s %r is not a non-empty path" % (what, path), "unsafe_path")
    if "\0" in path:
        raise PullError("%s %r contains a NUL byte" % (what, path), "unsafe_path")
    if path.startswith("/") or path.startswith("\\") or (len(path) > 1 and path[1] == ":"):
        raise PullError("%s %r is an absolute path; refused" % (what, path), "unsafe_path")
    for part in path.replace("\\", "/").split("/"):
        if part == "..":
            raise PullError("%s %r leaves the destination folder ('..'); refused" % (what, path), "unsafe_path")
        if part in ("", "."):
            raise PullError("%s %r has an empty or '.' component; refused" % (what, path), "unsafe_path")
    return path


def _inside(root, path):
    root = os.path.realpath(root)
    path = os.path.realpath(path)
    return path == root or path.startswith(root + os.sep)


def git_blob_id(content, length=40):
    header = b"blob %d\0" % len(content)
    if length == 64:
        return hashlib.sha256(header + content).hexdigest()
    return hashlib.sha1(header + content).hexdigest()


def locate(paths, directory=None):
    """Find the well-known files among pulled repository paths.

    Returns ``(elasticsearch_yml, jvm_options, manifests)`` as repository
    paths (``None`` when absent); see the module docstring for the order.
    """
    present = set(paths)
    roots = []
    if directory:
        roots.append(directory.strip("/") + "/")
    roots.append("")

    def first(name):
        for root in roots:
            for candidate in (root + "config/" + name, root + name):
                if candidate in present:
                    return candidate
        return None

    manifests = set()
    for root in roots:
        prefix = root + "k8s/"
        for path in present:
            if path.startswith(prefix) and path.lower().endswith(MANIFEST_EXTENSIONS):
                manifests.add(path)
    return first("elasticsearch.yml"), first("jvm.options"), sorted(manifests)


def tree_digest(root):
    """``{relative path: sha256}`` of the regular files under ``root`` (or {})."""
    out = {}
    if not os.path.isdir(root) or os.path.islink(root):
        return out
    for base, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            full = os.path.join(base, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if os.path.islink(full) or not os.path.isfile(full):
                out[rel] = None
                continue
            with open(full, "rb") as fh:
                out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


class _Call:
    """Turn python-gitlab / requests exceptions into PullError with a clean message."""

    def __init__(self, puller, what, path=None):
        self.puller = puller
        self.what = what
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, PullError):
            return False
        if not isinstance(exc, Exception):
            return False
        raise self.puller.error_from(exc, self.what, self.path) from None


class GitLabPuller:
    def __init__(self, url, project, dest, ref=None, files=None, directory=None, token=None, ca_path=None,
                 validate_certs=True, timeout=30):
        self.url = (url or "").rstrip("/")
        self.project_ref = "%s" % (project,)
        self.dest = dest
        self.ref = ref or None
        self.files = list(files) if files is not None else ["docker-compose.yml"]
        self.directory = directory.strip("/") if directory else None
        self.token = token or None
        self.ca_path = ca_path
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.secrets = [self.token] if self.token else []

    # ------------------------------------------------------------ messages
    def where(self, path=None):
        out = "url %s, project %s" % (self.url, self.project_ref)
        if path:
            out += ", path %s" % path
        return out

    def fail(self, reason, path=None, kind="error"):
        return PullError(scrub("GitLab pull failed: %s (%s)" % (reason, self.where(path)), self.secrets), kind)

    def error_from(self, exc, what, path=None):
        """Map an exception raised while fetching ``what`` (project, ref, file, folder)."""
        if isinstance(exc, gitlab.exceptions.GitlabError):
            code = exc.response_code
            if isinstance(exc, gitlab.exceptions.GitlabAuthenticationError) or code == 401:
                return self.fail("401 Unauthorized: the token was refused (missing, wrong or expired)", path,
                                 "unauthorized")
            if code == 403:
                return self.fail("403 Forbidden: the token may not read this %s" % what, path, "forbidden")
            if code == 404:
                reason = {
                    "project": "404 project %s not found" % self.project_ref,
                    "ref": "404 ref %s not found" % (self.ref,),
                    "file": "404 file %s not found" % (path,),
                    "folder": "404 folder %s not found" % (path,),
                }.get(what, "404 not found")
                return self.fail(reason, path, "not_found")
            return self.fail("GitLab answered %s while reading the %s: %s"
                             % (code or "an error", what, exc.error_message), path, "http_error")
        if isinstance(exc, requests.exceptions.SSLError):
            return self.fail("TLS certificate verification failed (set ca_path to the CA that signed the server's "
                             "certificate): %s" % _short(exc), path, "tls")
        if isinstance(exc, requests.exceptions.Timeout):
            return self.fail("no answer within the timeout of %s seconds" % self.timeout, path, "timeout")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return self.fail("cannot connect to the GitLab server (unreachable or connection refused): %s"
                             % _short(exc), path, "unreachable")
        if isinstance(exc, requests.exceptions.RequestException):
            return self.fail("request failed: %s" % _short(exc), path, "request")
        if isinstance(exc, OSError):
            return self.fail("cannot write the pulled files: %s" % exc, path, "io")
        return self.fail("%s: %s" % (type(exc).__name__, exc), path, "error")

    # ------------------------------------------------------------ steps
    def _client(self):
        verify = self.ca_path if (self.validate_certs and self.ca_path) else bool(self.validate_certs)
        return gitlab.Gitlab(self.url, private_token=self.token, ssl_verify=verify, timeout=self.timeout,
                             retry_transient_errors=False, keep_base_url=True)

    def _tree(self, project, path, sha, recursive, what):
        with _Call(self, what, path or "/"):
            return project.repository_tree(path=path or "", ref=sha, recursive=recursive, get_all=True)

    def _plan(self, project, sha):
        """Repository paths to fetch, all checked; raises PullError."""
        wanted = {}
        # explicit files: check each exists as a regular file (not a symlink) in its folder listing
        by_parent = {}
        for path in self.files:
            check_relpath(path, "file")
            by_parent.setdefault(path.rpartition("/")[0], []).append(path)
        for parent in sorted(by_parent):
            listing = {}
            try:
                entries = self._tree(project, parent, sha, False, "file")
            except PullError as err:
                if err.kind != "not_found":
                    raise
                entries = []
            for entry in entries:
                listing[entry.get("path")] = entry
            for path in by_parent[parent]:
                entry = listing.get(path)
                if entry is None:
                    raise self.fail("404 file %s not found at %s" % (path, self.ref_label(sha)), path, "not_found")
                self._check_entry(entry, path, None)
                wanted[path] = entry
        if self.directory:
            check_relpath(self.directory, "dir")
            for entry in self._tree(project, self.directory, sha, True, "folder"):
                path = entry.get("path")
                self._check_entry(entry, path, self.directory)
                if entry.get("type") == "tree":
                    continue
                wanted[path] = entry
        if not wanted:
            raise self.fail("nothing to pull: no files listed and the folder is empty", self.directory, "empty")
        return wanted

    def ref_label(self, sha):
        return "%s (%s)" % (self.ref, sha[:12]) if self.ref and self.ref != sha else sha

    def _check_entry(self, entry, path, folder):
        try:
            check_relpath(path, "server path")
        except PullError as err:
            raise self.fail(err.message, path, "unsafe_path")
        if folder and not path.startswith(folder + "/"):
            raise self.fail("server path %r is outside the requested folder %r; refused" % (path, folder), path,
                            "unsafe_path")
        mode = "%s" % entry.get("mode", "")
        kind = entry.get("type")
        if mode == MODE_SYMLINK:
            raise self.fail("%s is a symbolic link (mode 120000); symlinks are refused" % path, path, "symlink")
        if kind == "commit" or mode == MODE_SUBMODULE:
            raise self.fail("%s is a submodule; submodules are not supported" % path, path, "submodule")
        if kind == "tree":
            if folder is None:
                raise self.fail("%s is a folder, not a file (use dir to pull a folder)" % path, path, "not_a_file")
            return
        if kind != "blob" or mode not in FILE_MODES:
            raise self.fail("%s has unsupported type %r / mode %r; refused" % (path, kind, mode), path, "unsafe_path")

    def _fetch(self, project, sha, path):
        with _Call(self, "file", path):
            remote = project.files.get(file_path=path, ref=sha)
            content = remote.decode()
        if isinstance(content, str):
            content = content.encode("utf-8")
        remote_commit = getattr(remote, "commit_id", None)
        if remote_commit and remote_commit != sha:
            raise self.fail("the server returned %s at commit %s instead of %s" % (path, remote_commit, sha), path,
                            "inconsistent")
        blob_id = getattr(remote, "blob_id", None)
        if blob_id and git_blob_id(content, len(blob_id)) != blob_id:
            raise self.fail("content of %s does not match its blob id %s" % (path, blob_id), path, "inconsistent")
        return content

    @staticmethod
    def _write(root, path, content):
        target = os.path.join(root, *path.split("/"))
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        if not _inside(root, parent):
            raise OSError("%s resolves outside the destination" % path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())

    def _replace(self, tmp):
        dest = self.dest
        parent = os.path.dirname(dest)
        if os.path.lexists(dest):
            if os.path.islink(dest) or not os.path.isdir(dest):
                raise self.fail("destination %s exists and is not a folder" % dest, None, "io")
            old = tempfile.mkdtemp(prefix=".%s%s" % (os.path.basename(dest), OLD_MARK), dir=parent)
            os.rmdir(old)
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except Exception:
                os.rename(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
        try:
            fd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def pull(self, check_mode=False):
        """Run the pull; return the result dict (see ``es_gitlab_pull`` RETURN)."""
        if not HAS_GITLAB:
            raise PullError("the python-gitlab library is required: %s" % GITLAB_IMPORT_ERROR, "missing_library")
        if not self.url:
            raise PullError("GitLab pull failed: url is empty", "bad_input")
        if not self.dest or not os.path.isabs(self.dest):
            raise PullError("GitLab pull failed: dest must be an absolute path, got %r" % (self.dest,), "bad_input")
        self.dest = os.path.normpath(self.dest)
        with warnings.catch_warnings():
            if not self.validate_certs:
                warnings.simplefilter("ignore")
            try:
                return self._pull(check_mode)
            except PullError as err:
                err.message = scrub(err.message, self.secrets)
                err.args = (err.message,)
                raise
            except Exception as exc:  # anything unexpected: rebuilt, scrubbed, no traceback
                raise self.error_from(exc, "repository") from None

    def _pull(self, check_mode):
        gl = self._client()
        with _Call(self, "project"):
            project = gl.projects.get(self.project_ref)
        if not self.ref:
            self.ref = getattr(project, "default_branch", None)
            if not self.ref:
                raise self.fail("the project has no default branch (empty repository?); set ref", None, "not_found")
        with _Call(self, "ref"):
            sha = project.commits.get(self.ref).id
        wanted = self._plan(project, sha)

        parent = os.path.dirname(self.dest)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise self.fail("cannot create %s: %s" % (parent, exc), None, "io")
        tmp = tempfile.mkdtemp(prefix=".%s%s" % (os.path.basename(self.dest), TMP_MARK), dir=parent)
        try:
            files = []
            for path in sorted(wanted):
                content = self._fetch(project, sha, path)
                with _Call(self, "file", path):
                    self._write(tmp, path, content)
                files.append({"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()})
            new_digest = {f["path"]: f["sha256"] for f in files}
            changed = new_digest != tree_digest(self.dest)
            if changed and not check_mode:
                with _Call(self, "destination", self.dest):
                    self._replace(tmp)
        finally:
            if os.path.lexists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)

        es_yml, jvm, manifests = locate(new_digest, self.directory)

        def absolute(path):
            return os.path.join(self.dest, *path.split("/")) if path else None

        return {
            "changed": changed,
            "url": self.url,
            "commit": sha,
            "ref": self.ref,
            "project": {"id": project.id, "path_with_namespace": getattr(project, "path_with_namespace", None)},
            "files": files,
            "dest": self.dest,
            "elasticsearch_yml": absolute(es_yml),
            "jvm_options": absolute(jvm),
            "manifests": [absolute(p) for p in manifests],
        }


def _short(exc):
    """The innermost reason of a requests exception, without its long wrapper."""
    text = "%s" % (exc,)
    reason = getattr(exc, "args", None)
    if reason and hasattr(reason[0], "reason"):
        text = "%s" % (reason[0].reason,)
    return text


def pull(url, project, dest, ref=None, files=None, directory=None, token=None, ca_path=None, validate_certs=True,
         timeout=30, check_mode=False):
    """Pull ``files`` (default ``[docker-compose.yml]``) and the folder ``directory``
    of ``project`` at ``ref`` from the GitLab at ``url`` into ``dest``; see
    ``GitLabPuller``. Raises PullError with a token-free message."""
    return GitLabPuller(url, project, dest, ref=ref, files=files, directory=directory, token=token, ca_path=ca_path,
                        validate_certs=validate_certs, timeout=timeout).pull(check_mode=check_mode)
