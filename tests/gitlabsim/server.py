"""A GitLab v4 API test server (test infrastructure).

Real HTTP (or HTTPS with a generated CA) on 127.0.0.1, serving the endpoints
unmodified python-gitlab uses to read a repository:

- ``GET /api/v4/projects/:id`` (numeric id or URL-encoded ``group/project``)
- ``GET|HEAD /api/v4/projects/:id/repository/files/:path?ref=``
- ``GET /api/v4/projects/:id/repository/files/:path/raw?ref=``
- ``GET /api/v4/projects/:id/repository/tree?path=&ref=&recursive=&per_page=&page=``
  (offset pagination with ``X-Page``/``X-Next-Page``/``X-Total``... and ``Link``)
- ``GET /api/v4/projects/:id/repository/commits/:ref``
- ``GET /api/v4/projects/:id/repository/branches/:name`` and ``tags/:name``

Every request needs the ``PRIVATE-TOKEN`` header with the server's token,
otherwise ``401 {"message": "401 Unauthorized"}``. Requests are logged as
received (headers included) in ``server.requests`` so tests can assert on them.

Knobs: ``delay`` (seconds slept before every answer), ``delay_paths``
(substring -> seconds, for one endpoint only), ``fail_paths`` (substring of
the request path -> HTTP status, or ``(status, message)``, returned instead), ``evil_tree_entries``
on a project (extra raw tree entries, e.g. ``../x`` or ``/abs``, listed by
every tree request and served by the files API).
"""

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import posixpath
import ssl
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE_FILE = "100644"
MODE_EXEC = "100755"
MODE_SYMLINK = "120000"
MODE_TREE = "040000"
MODE_SUBMODULE = "160000"


def _git_blob_id(content):
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class Entry:
    """A file in a commit: its bytes and its git mode."""

    def __init__(self, content, mode=MODE_FILE):
        if isinstance(content, str):
            content = content.encode("utf-8")
        self.content = content
        self.mode = mode

    @property
    def blob_id(self):
        return _git_blob_id(self.content)

    @property
    def kind(self):
        if self.mode == MODE_SUBMODULE:
            return "commit"
        return "blob"


class Commit:
    def __init__(self, sha, files, message, parent):
        self.sha = sha
        self.files = files  # path -> Entry
        self.message = message
        self.parent = parent
        self.created_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
        # the commit that last changed each path (for ``last_commit_id``)
        self.last_change = {}

    def as_json(self):
        return {
            "id": self.sha,
            "short_id": self.sha[:8],
            "title": self.message.splitlines()[0] if self.message else "",
            "message": self.message,
            "author_name": "Test Author",
            "author_email": "author@example.com",
            "authored_date": self.created_at,
            "committer_name": "Test Author",
            "committer_email": "author@example.com",
            "committed_date": self.created_at,
            "created_at": self.created_at,
            "parent_ids": [self.parent.sha] if self.parent else [],
        }


class Project:
    """A repository: commits, branches and tags."""

    def __init__(self, project_id, path_with_namespace, default_branch="main"):
        self.id = project_id
        self.path_with_namespace = path_with_namespace
        self.default_branch = default_branch
        self.commits = {}
        self.branches = {}
        self.tags = {}
        self.evil_tree_entries = []  # raw tree entries: {"path", "mode", "type", "content"}

    def add_evil_entry(self, path, content=b"evil\n", mode=MODE_FILE):
        """List ``path`` verbatim in every tree answer and serve it from the
        files API, whatever it looks like (``../x``, ``/abs``...)."""
        if isinstance(content, str):
            content = content.encode("utf-8")
        entry = {"path": path, "mode": mode, "type": "commit" if mode == MODE_SUBMODULE else "blob",
                 "content": content}
        self.evil_tree_entries.append(entry)
        return entry

    def commit(self, files, branch=None, message="update", base=None):
        """Add a commit whose tree is ``base``'s (default: the branch head)
        updated with ``files`` (path -> str/bytes/Entry, ``None`` deletes)."""
        branch = branch or self.default_branch
        parent = base if base is not None else self.commits.get(self.branches.get(branch))
        tree = dict(parent.files) if parent else {}
        last_change = dict(parent.last_change) if parent else {}
        for path, value in files.items():
            if value is None:
                tree.pop(path, None)
                last_change.pop(path, None)
            else:
                tree[path] = value if isinstance(value, Entry) else Entry(value)
        digest = hashlib.sha1()
        digest.update((parent.sha if parent else "").encode())
        digest.update(message.encode())
        for path in sorted(tree):
            digest.update(path.encode() + b"\0" + tree[path].mode.encode() + tree[path].blob_id.encode())
        digest.update(str(len(self.commits)).encode())
        sha = digest.hexdigest()
        commit = Commit(sha, tree, message, parent)
        for path, value in files.items():
            if value is not None:
                last_change[path] = sha
        commit.last_change = last_change
        self.commits[sha] = commit
        self.branches[branch] = sha
        return commit

    def tag(self, name, sha):
        self.tags[name] = sha

    def resolve(self, ref):
        """Branch, tag, full sha or a unique sha prefix (>= 7 chars) -> Commit."""
        if ref in self.branches:
            return self.commits[self.branches[ref]]
        if ref in self.tags:
            return self.commits[self.tags[ref]]
        if ref in self.commits:
            return self.commits[ref]
        if len(ref) >= 7:
            found = [c for sha, c in self.commits.items() if sha.startswith(ref)]
            if len(found) == 1:
                return found[0]
        return None

    def as_json(self, base_url):
        namespace, _u, path = self.path_with_namespace.rpartition("/")
        return {
            "id": self.id,
            "name": path,
            "path": path,
            "path_with_namespace": self.path_with_namespace,
            "name_with_namespace": self.path_with_namespace.replace("/", " / "),
            "default_branch": self.default_branch,
            "visibility": "private",
            "web_url": "%s/%s" % (base_url, self.path_with_namespace),
            "namespace": {"name": namespace, "path": namespace, "full_path": namespace, "kind": "group"},
        }


class GitLabError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _tree_listing(commit, project, path, recursive):
    """Tree entries under ``path`` (GitLab order: trees first, then blobs, by name)."""
    prefix = path.strip("/")
    if prefix and not any(p.startswith(prefix + "/") for p in commit.files):
        raise GitLabError(404, "404 invalid revision or path Not Found")
    base = prefix + "/" if prefix else ""
    dirs = {}
    blobs = {}
    for file_path, entry in commit.files.items():
        if not file_path.startswith(base):
            continue
        rest = file_path[len(base):]
        parts = rest.split("/")
        # directories on the way
        for depth in range(1, len(parts)):
            if not recursive and depth > 1:
                break
            dir_path = base + "/".join(parts[:depth])
            dirs[dir_path] = {
                "id": hashlib.sha1(dir_path.encode()).hexdigest(),
                "name": parts[depth - 1],
                "type": "tree",
                "path": dir_path,
                "mode": MODE_TREE,
            }
        if recursive or len(parts) == 1:
            blobs[file_path] = {
                "id": entry.blob_id,
                "name": parts[-1],
                "type": entry.kind,
                "path": file_path,
                "mode": entry.mode,
            }
    out = [dirs[k] for k in sorted(dirs)] + [blobs[k] for k in sorted(blobs)]
    for evil in project.evil_tree_entries:
        out.append({
            "id": _git_blob_id(evil["content"]),
            "name": posixpath.basename(evil["path"]) or evil["path"],
            "type": evil["type"],
            "path": evil["path"],
            "mode": evil["mode"],
        })
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitLabSim/1.0"

    def log_message(self, fmt, *args):  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status, body, headers=None, content_type="application/json", head=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    def _dispatch(self, head):
        sim = self.server.sim
        raw_path, _u, raw_query = self.path.partition("?")
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        sim.log_request(self.command, raw_path, query, dict(self.headers.items()))
        delay = sim.delay
        for needle, seconds in sim.delay_paths.items():
            if needle in urllib.parse.unquote(raw_path):
                delay = max(delay, seconds)
        if delay:
            time.sleep(delay)
        try:
            if self.headers.get("PRIVATE-TOKEN") != sim.token:
                raise GitLabError(401, "401 Unauthorized")
            for needle, failure in sim.fail_paths.items():
                if needle in urllib.parse.unquote(raw_path):
                    status, message = failure if isinstance(failure, tuple) else (failure, None)
                    raise GitLabError(status, message or "%d Simulated failure" % status)
            status, body, headers, ctype = self._route(raw_path, query)
        except GitLabError as exc:
            status, body, headers, ctype = exc.status, {"message": exc.message}, {}, "application/json"
        try:
            self._send(status, body, headers, ctype, head=head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # ------------------------------------------------------------------ routes
    def _route(self, raw_path, query):
        sim = self.server.sim
        segments = raw_path.split("/")
        # ['', 'api', 'v4', 'projects', ':id', ...]
        if segments[:4] != ["", "api", "v4", "projects"] or len(segments) < 5:
            raise GitLabError(404, "404 Not Found")
        project = sim.find_project(urllib.parse.unquote(segments[4]))
        if project is None:
            raise GitLabError(404, "404 Project Not Found")
        rest = segments[5:]
        if not rest:
            return 200, project.as_json(sim.base_url), {}, "application/json"
        if rest[0] != "repository" or len(rest) < 2:
            raise GitLabError(404, "404 Not Found")
        what = rest[1]
        if what == "files" and len(rest) in (3, 4):
            file_path = urllib.parse.unquote(rest[2])
            raw = len(rest) == 4 and rest[3] == "raw"
            if len(rest) == 4 and not raw:
                raise GitLabError(404, "404 Not Found")
            return self._file(project, file_path, query, raw)
        if what == "tree" and len(rest) == 2:
            return self._tree(project, query)
        if what == "commits" and len(rest) == 3:
            commit = project.resolve(urllib.parse.unquote(rest[2]))
            if commit is None:
                raise GitLabError(404, "404 Commit Not Found")
            return 200, commit.as_json(), {}, "application/json"
        if what in ("branches", "tags") and len(rest) == 3:
            name = urllib.parse.unquote(rest[2])
            table = project.branches if what == "branches" else project.tags
            if name not in table:
                raise GitLabError(404, "404 %s Not Found" % ("Branch" if what == "branches" else "Tag"))
            body = {"name": name, "commit": project.commits[table[name]].as_json()}
            if what == "branches":
                body["default"] = name == project.default_branch
            return 200, body, {}, "application/json"
        raise GitLabError(404, "404 Not Found")

    def _lookup_file(self, project, commit, file_path):
        if file_path in commit.files:
            return commit.files[file_path]
        for evil in project.evil_tree_entries:
            if evil["path"] == file_path:
                return Entry(evil["content"], evil["mode"])
        return None

    def _file(self, project, file_path, query, raw):
        ref = query.get("ref") or (project.default_branch if raw else None)
        if not ref:
            raise GitLabError(400, "400 Bad request - ref is missing")
        commit = project.resolve(ref)
        if commit is None:
            raise GitLabError(404, "404 Commit Not Found")
        entry = self._lookup_file(project, commit, file_path)
        if entry is None or entry.mode == MODE_SUBMODULE:
            raise GitLabError(404, "404 File Not Found")
        last = commit.last_change.get(file_path, commit.sha)
        headers = {
            "X-Gitlab-Blob-Id": entry.blob_id,
            "X-Gitlab-Commit-Id": commit.sha,
            "X-Gitlab-Last-Commit-Id": last,
            "X-Gitlab-File-Path": file_path,
            "X-Gitlab-File-Name": posixpath.basename(file_path),
            "X-Gitlab-Ref": ref,
            "X-Gitlab-Size": str(len(entry.content)),
            "X-Gitlab-Encoding": "base64",
            "X-Gitlab-Content-Sha256": hashlib.sha256(entry.content).hexdigest(),
        }
        if raw:
            return 200, entry.content, headers, "text/plain; charset=utf-8"
        body = {
            "file_name": posixpath.basename(file_path),
            "file_path": file_path,
            "size": len(entry.content),
            "encoding": "base64",
            "content": base64.b64encode(entry.content).decode("ascii"),
            "content_sha256": hashlib.sha256(entry.content).hexdigest(),
            "ref": ref,
            "blob_id": entry.blob_id,
            "commit_id": commit.sha,
            "last_commit_id": last,
            "execute_filemode": entry.mode == MODE_EXEC,
        }
        return 200, body, headers, "application/json"

    def _tree(self, project, query):
        sim = self.server.sim
        ref = query.get("ref") or project.default_branch
        commit = project.resolve(ref)
        if commit is None:
            raise GitLabError(404, "404 Tree Not Found")
        recursive = query.get("recursive", "false").lower() in ("true", "1")
        entries = _tree_listing(commit, project, query.get("path", ""), recursive)
        try:
            per_page = min(max(int(query.get("per_page", sim.default_per_page)), 1), 100)
            page = max(int(query.get("page", 1)), 1)
        except ValueError:
            raise GitLabError(400, "400 Bad request - page/per_page invalid")
        total = len(entries)
        total_pages = max((total + per_page - 1) // per_page, 1)
        chunk = entries[(page - 1) * per_page:page * per_page]

        def page_url(number):
            params = dict(query)
            params["page"] = str(number)
            params["per_page"] = str(per_page)
            return "%s%s?%s" % (sim.base_url, self.path.partition("?")[0], urllib.parse.urlencode(params))

        links = []
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(total),
            "X-Total-Pages": str(total_pages),
            "X-Next-Page": str(page + 1) if page < total_pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }
        if page > 1:
            links.append('<%s>; rel="prev"' % page_url(page - 1))
        if page < total_pages:
            links.append('<%s>; rel="next"' % page_url(page + 1))
        links.append('<%s>; rel="first"' % page_url(1))
        links.append('<%s>; rel="last"' % page_url(total_pages))
        headers["Link"] = ", ".join(links)
        return 200, chunk, headers, "application/json"


class GitLabSim:
    """The server: projects, token, knobs and the request log.

    ``GitLabSim(token=..., tls=True)`` serves HTTPS with a CA written to
    ``ca_path``; ``start()`` / ``stop()`` run it in a daemon thread.
    """

    def __init__(self, token="glpat-test-token-0123456789", tls=False, host="127.0.0.1"):
        self.token = token
        self.tls = tls
        self.host = host
        self.projects = {}
        self.delay = 0.0
        self.delay_paths = {}
        self.fail_paths = {}
        self.default_per_page = 20
        self.requests = []
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self._tmpdir = None
        self.ca_path = None
        self.port = None

    # ------------------------------------------------------------------ data
    def add_project(self, project_id, path_with_namespace, default_branch="main"):
        project = Project(project_id, path_with_namespace, default_branch)
        self.projects[project_id] = project
        return project

    def find_project(self, ident):
        if ident.isdigit():
            return self.projects.get(int(ident))
        for project in self.projects.values():
            if project.path_with_namespace == ident:
                return project
        return None

    def log_request(self, method, path, query, headers):
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": query, "headers": headers})

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    @property
    def url(self):
        """What a client is configured with (python-gitlab appends ``/api/v4``)."""
        return self.base_url

    def start(self):
        self._httpd = ThreadingHTTPServer((self.host, 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.sim = self
        self.port = self._httpd.server_address[1]
        if self.tls:
            self._tmpdir = tempfile.mkdtemp(prefix="gitlabsim-tls-")
            self.ca_path, cert, key = make_tls_files(self._tmpdir, self.host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gitlabsim", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._tmpdir:
            for name in os.listdir(self._tmpdir):
                os.unlink(os.path.join(self._tmpdir, name))
            os.rmdir(self._tmpdir)
            self._tmpdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def make_tls_files(directory, host="127.0.0.1"):
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` (a CA and a server
    certificate for ``host``/``localhost`` signed by it); return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gitlabsim test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = os.path.join(directory, "ca.pem")
    cert_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server.key")
    with open(ca_path, "wb") as fh:
        fh.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def sample_server(**kwargs):
    """A server with the fixture data the tests use (not started).

    Project 42 ``tenants/es-config`` (default branch ``main``):

    - ``main``: ``docker-compose.yml``, ``elasticsearch.yml``, ``jvm.options``,
      ``config/extra.yml``, ``k8s/configmap.yml``, ``k8s/nested/service.yaml``,
      ``link-to-compose`` (symlink, mode 120000), 30 files ``bulk/fNN.txt``
      (so a recursive tree needs several pages).
    - tag ``v1`` -> the first commit (``docker-compose.yml`` says ``version: "1"``).
    - branch ``feature`` -> a commit with a different ``elasticsearch.yml``.

    Project 7 ``tenants/empty-default`` (default branch ``develop``) with one file.
    """
    sim = GitLabSim(**kwargs)
    project = sim.add_project(42, "tenants/es-config", default_branch="main")
    first = project.commit({"docker-compose.yml": 'version: "1"\nservices: {}\n'}, message="initial")
    project.tag("v1", first.sha)
    files = {
        "docker-compose.yml": 'version: "2"\nservices:\n  es:\n    image: elasticsearch:8.15.3\n',
        "elasticsearch.yml": "cluster:\n  name: tenant-cluster\nindices.query.bool.max_clause_count: 4096\n",
        "jvm.options": "# tenant options\n-Xms4g\n-Xmx4g\n-XX:+UseG1GC\n",
        "config/extra.yml": "extra: true\n",
        "k8s/configmap.yml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tenant-extra\ndata:\n  a: b\n"
        ),
        "k8s/nested/service.yaml": (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: tenant-svc\nspec:\n  ports:\n  - port: 80\n"
        ),
        "link-to-compose": Entry("docker-compose.yml", MODE_SYMLINK),
    }
    for index in range(30):
        files["bulk/f%02d.txt" % index] = "file %d\n" % index
    project.commit(files, message="tenant configuration")
    project.commit({"elasticsearch.yml": "cluster.name: feature\n"}, branch="feature",
                   base=project.commits[project.branches["main"]], message="feature")
    other = sim.add_project(7, "tenants/empty-default", default_branch="develop")
    other.commit({"docker-compose.yml": "version: '3'\n"}, branch="develop", message="initial")
    return sim
