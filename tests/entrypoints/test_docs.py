"""The README and docs/*.md cite only what the repository holds, and the licence is the one cited.

What counts as a citation of the repository (outside fenced code blocks, which are commands and
examples):

1. a relative Markdown link ``[text](path)`` or ``[text](path#anchor)``: the path exists, relative to
   the document; a link ``(#anchor)`` or ``(path#anchor)`` names a heading of that document;
2. a backticked span whose first word starts with a top-level entry that git tracks (``plugins/...``,
   ``tests/...``, ``galaxy.yml``...): it exists, relative to the repository root; ``<...>``, ``{...}``
   and ``*`` stand for any name (``bench/results/<label>.json``). Runtime paths
   (``deployment_reports/...``, ``sandbox/es_data/``, ``~/.kube/config``) do not start with a tracked
   entry and are not checked; ``NOT_IN_REPOSITORY`` lists, with a reason, the paths of other projects
   that do;
3. a backticked ``*.md`` file: it exists, relative to the document or the repository root;
4. a backticked test file name ``test_*.py`` (``test_x.py::test_y`` too): a file of that name is under
   ``tests/``.
"""

import fnmatch
import glob
import os
import re
import subprocess

import pytest

from tests.entrypoints.packaging import ROOT

DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# Paths of other projects that start like one of ours: path -> why it is not in this repository.
NOT_IN_REPOSITORY = {
    "collections/requirements.yml": "an AWX project's collection requirements (Enabling the report callback)",
}
FENCE_RE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SPAN_RE = re.compile(r"`([^`\n]+)`")
HEADING_RE = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)
PLACEHOLDER_RE = re.compile(r"<[^>]*>|\{[^}]*\}")


def _tracked_top_level():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return set(name.split("/")[0] for name in listed.split("\0") if name)


TOP_LEVEL = _tracked_top_level()


def _prose(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as handle:
        text = handle.read()
    return text, FENCE_RE.sub("", text)


def _slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc):
    text, _prose_text = _prose(doc)
    return set(_slug(h) for h in HEADING_RE.findall(FENCE_RE.sub("", text)))


def _exists(path):
    if "*" in path:
        return bool(glob.glob(os.path.join(ROOT, path)))
    return os.path.lexists(os.path.join(ROOT, path))


def repository_paths(prose):
    """The backticked spans that name a path of the repository (rule 2), as written."""
    found = []
    for span in SPAN_RE.findall(prose):
        word = span.split()[0]
        first = word.split("/")[0]
        if first in TOP_LEVEL and ("/" in word or word == first):
            found.append(word)
    return found


def _check_path(word):
    path = PLACEHOLDER_RE.sub("*", word.rstrip("/"))
    return _exists(path)


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    _text, prose = _prose(doc)
    missing = []
    for target in LINK_RE.findall(prose):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _sep, anchor = target.partition("#")
        where = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if path and not os.path.exists(os.path.join(ROOT, where)):
            missing.append(target)
        elif anchor and where.endswith(".md") and anchor not in _anchors(where):
            missing.append(target)
    assert missing == []


@pytest.mark.parametrize("doc", DOCS)
def test_backticked_repository_paths_exist(doc):
    _text, prose = _prose(doc)
    missing = [word for word in repository_paths(prose) if word not in NOT_IN_REPOSITORY and not _check_path(word)]
    for span in SPAN_RE.findall(prose):
        word = span.split()[0]
        if word.endswith(".md") and not word.startswith(("/", "~")):
            if not (_exists(word) or os.path.exists(os.path.join(ROOT, os.path.dirname(doc), word))):
                missing.append(word)
        name = word.split("::")[0].split("/")[-1]
        tests = glob.glob(os.path.join(ROOT, "tests", "**", name), recursive=True)
        if fnmatch.fnmatch(name, "test_*.py") and not tests:
            missing.append(word)
    assert missing == []


def test_the_rules_see_what_they_should():
    """The rules on known text: a repository path, a runtime path, another project's path, a missing file."""
    prose = ("`plugins/module_utils/request.py` `deployment_reports/{user}.json` `sandbox/es_data/` "
             "`bench/results/<label>.json` `scripts/sandbox -e x=1` `collections/requirements.yml` "
             "`~/.kube/config` `galaxy.yml` `shared/spec/provisioning.md` `nvidia.com/gpu`")
    assert repository_paths(prose) == ["plugins/module_utils/request.py", "bench/results/<label>.json",
                                       "scripts/sandbox", "collections/requirements.yml", "galaxy.yml"]
    assert [_check_path(word) for word in repository_paths(prose)] == [True, True, True, False, True]
    # every exception is still cited somewhere (no stale entries)
    cited = set()
    for doc in DOCS:
        cited.update(repository_paths(_prose(doc)[1]))
    assert set(NOT_IN_REPOSITORY) <= cited


def test_licence_is_the_file_every_header_cites():
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as handle:
        licence = handle.read()
    assert licence.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in licence
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        assert re.search(r"^license:\n  - GPL-3.0-or-later$", handle.read(), re.MULTILINE)
    listed = subprocess.run(["git", "grep", "-h", "-o", "-I", r"(see [^ ]* or https://www.gnu.org/licenses/gpl-3.0.txt)"],
                            cwd=ROOT, capture_output=True, text=True, check=False).stdout.split("\n")
    cited = set(line.split()[1] for line in listed if line)
    assert cited == {"LICENSE"}
