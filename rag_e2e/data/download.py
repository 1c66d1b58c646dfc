"""Fetch one upstream file, check its sha256, and hand it over as a local path: from the network or a local copy.

A download streams into a temporary file beside its target (never whole in memory: psgs_w100 is 13 GB unpacked), so
an interrupted fetch leaves no half-written file under the data root.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rag_e2e.errors import ConfigError
from rag_e2e.files import sha256_of

CHUNK = 1 << 20


@dataclass(frozen=True)
class Upstream:
    """One file as its publisher serves it."""

    url: str
    sha256: str | None = None  # of the file as served; None where no trusted hash is known (the fetched one is shown)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def local_copy(upstream: Upstream, source: Path) -> Path | None:
    """`source` itself (a file) or the file of the upstream's name under it (a folder, searched recursively), or
    a `<name>.zip` holding it."""
    if source.is_file():
        return source
    for name in (upstream.name, upstream.name + ".zip"):
        found = sorted(source.rglob(name)) if source.is_dir() else []
        if found:
            return found[0]
    return None


@contextlib.contextmanager
def _unzipped(path: Path, member: str, work_dir: Path) -> Iterator[Path]:
    """`member` of the zip `path`, extracted to a temporary file that is removed afterwards."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ConfigError(f"{path}: not a readable zip file") from None
    with archive, tempfile.NamedTemporaryFile(dir=work_dir, prefix=f".{member}.", suffix=".unzip") as tmp:
        try:
            with archive.open(member) as packed:
                shutil.copyfileobj(packed, tmp, CHUNK)
        except KeyError:
            raise ConfigError(f"{path}: holds no member {member}") from None
        tmp.flush()
        yield Path(tmp.name)


@contextlib.contextmanager
def fetched(upstream: Upstream, work_dir: Path, source: Path | None = None) -> Iterator[Path]:
    """The upstream file on local disk, checked against its sha256; a temporary download is removed afterwards.

    Args:
        upstream: what to fetch.
        work_dir: where a download is staged (the dataset's folder under the data root: same disk as the output).
        source: a local copy (file, or folder holding the file by its upstream name) used instead of the network.

    Raises:
        ConfigError: no local copy under `source`, the network cannot reach the URL, or the sha256 differs.
    """
    if source is not None:
        path = local_copy(upstream, source)
        if path is None:
            raise ConfigError(f"{source}: no file named {upstream.name} in it (from= names a local copy of "
                              f"{upstream.url})")
        if path.suffix == ".zip" and not upstream.name.endswith(".zip"):
            work_dir.mkdir(parents=True, exist_ok=True)
            with _unzipped(path, upstream.name, work_dir) as member:
                _check(member, upstream)
                yield member
            return
        _check(path, upstream)
        yield path
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=work_dir, prefix=f".{upstream.name}.", suffix=".download") as tmp:
        try:
            with urllib.request.urlopen(upstream.url, timeout=60) as response:
                shutil.copyfileobj(response, tmp, CHUNK)
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise ConfigError(f"{upstream.url}: cannot download ({reason}); offline, fetch it elsewhere and pass "
                              "from=<file or folder>") from None
        tmp.flush()
        _check(Path(tmp.name), upstream)
        yield Path(tmp.name)


def _check(path: Path, upstream: Upstream) -> None:
    got = sha256_of(path)
    if upstream.sha256 is None:
        print(f"{upstream.name}: sha256 {got} (no published hash to check it against)")
    elif got != upstream.sha256:
        raise ConfigError(f"{path}: sha256 {got}, expected {upstream.sha256} for {upstream.url} (a different or "
                          "damaged file; nothing was written)")
