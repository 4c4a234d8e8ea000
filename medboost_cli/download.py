"""MedMNIST files: the data folder (``data_dir_from``), opening and hashing a file with the OS's refusals as one-line
errors, and downloading one from medmnist's URL (or a mirror) with MD5 checks and resumable ``.part`` files."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import stat
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from .errors import DataError
from .fileio import open_partial
from .paths import check_name
from .progress import download_bar
from .tasks import Task


def data_dir_from(arg: str | os.PathLike | None) -> Path:
    """The data folder: the argument, else $MEDBOOST_DATA, else ~/.medmnist (medmnist's own default)."""
    if arg:
        return check_name(Path(arg).expanduser(), "--data-dir")
    if os.environ.get("MEDBOOST_DATA"):
        return check_name(Path(os.environ["MEDBOOST_DATA"]).expanduser(), "$MEDBOOST_DATA")
    return Path("~/.medmnist").expanduser()


_MD5S: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns): the MD5 md5sum computed


def _key(path: Path) -> tuple[str, int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return str(Path(path).resolve()), info.st_ino, info.st_size, info.st_mtime_ns


def md5sum(path: Path, chunk: int = 1 << 22) -> str:
    """The file's MD5, always read from the file (the verification's); remembered for ``known_md5``."""
    key = _key(path)
    digest = hashlib.md5()
    with open_data_file(path) as f:
        while block := f.read(chunk):
            digest.update(block)
    if key is not None:
        _MD5S[key] = digest.hexdigest()
    return digest.hexdigest()


def known_md5(path: Path) -> str:
    """The file's MD5 as ``md5sum`` computed it in this process for the same file (path, inode, size and
    modification time), else ``md5sum``'s: a verified data file is hashed once for the check and the run manifest
    (results/provenance.py)."""
    return _MD5S.get(_key(path)) or md5sum(path)


# ---------------------------------------------------------------------------------------------- download


def download(task: Task, size: int, data_dir: Path, timeout: float = 30.0, log=print, console: Console | None = None,
             mirror: str | None = None) -> Path:
    """Fetch ``task``'s npz file at ``size`` from medmnist's URL (or ``mirror``) into ``data_dir``; verify its MD5.

    A file already present is kept when its MD5 matches and fetched again otherwise. The download goes to a
    ``.part`` file that replaces the target only after its MD5 matched, so a failure never leaves a bad file. A
    download cut short keeps its ``.part``, and the next call continues it with an HTTP Range request (from the
    start when the server ignores Range); a ``.part`` whose MD5 then fails is deleted. ``console``: where to draw a
    progress bar (None: no bar). ``mirror``: a URL prefix to fetch ``{mirror}/{file name}`` from instead.
    """
    name, expected = task.filename(size), task.md5(size)
    url = f"{mirror.rstrip('/')}/{name}" if mirror else task.url(size)
    target = data_dir / name
    if target.exists():
        got = md5sum(target)
        if got == expected:
            log(f"{target}: present, MD5 ok")
            return target
        log(f"{target}: MD5 {got} does not match medmnist's {expected}; downloading it again")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create data folder {data_dir}: {e.strerror}; choose another with --data-dir") from e
    part = _part(target)
    _fetch(url, target, timeout, console, log)
    got = md5sum(part)
    if got != expected:
        part.unlink(missing_ok=True)
        raise DataError(f"downloaded {name} from {url} but its MD5 {got} is not medmnist's {expected}; try again")
    os.replace(part, target)
    log(f"{target}: downloaded, MD5 ok")
    return target


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError)


def _part(target: Path) -> Path:
    """Where the download of ``target`` collects its bytes until their MD5 matched."""
    return target.with_name(target.name + ".part")


def _fetch(url: str, target: Path, timeout: float, console: Console | None, log) -> None:
    """Bring ``target``'s ``.part`` to the whole file at ``url``, continuing what it holds when the server allows."""
    part = _part(target)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    failed = f"could not download {target.name} from {url}"
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after byte `have`: the part is the whole file, or garbage the MD5 finds
            log(f"{part}: the server has nothing after its {have} bytes; checking it")
            return
        raise DataError(f"{failed} (HTTP {e.code} {e.reason}); download it by hand and put it at {target}") from None
    except _NETWORK_ERRORS as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(f"{failed} ({reason}); download it by hand and put it at {target}") from None
    with response:
        resumed = bool(have) and response.status == 206 and _range_start(response) == have
        if have and resumed:
            log(f"{part}: resuming after {have} bytes")
        elif have:
            log(f"{part}: the server ignored the request to resume after {have} bytes; downloading from the start")
        length = response.headers.get("Content-Length")
        done = have if resumed else 0
        total = done + int(length) if length and length.isdigit() else None
        with open_partial(part, resumed) as out, download_bar(console, target.name, total, done) as advance:
            try:
                while block := response.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    advance(len(block))
            except _NETWORK_ERRORS as e:
                raise _cut_short(part, f"{failed}: interrupted after {done} bytes ({getattr(e, 'reason', None) or e})")
    if total is not None and done < total:  # http.client ends a body cut short without an error
        raise _cut_short(part, f"{failed}: the connection closed after {done} of {total} bytes")


def _cut_short(part: Path, what: str) -> DataError:
    """The error for a download that stopped part-way: the bytes that arrived stay in ``part`` for the next try."""
    if part.stat().st_size == 0:
        part.unlink()
        return DataError(f"{what}; try again")
    return DataError(f"{what}; {part} keeps what arrived: run the same command again to resume")


def _range_start(response) -> int | None:
    """The first byte a 206 response holds, from ``Content-Range: bytes START-END/TOTAL``."""
    found = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


FILE_KINDS = {stat.S_IFIFO: "FIFO (named pipe)", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
              stat.S_IFSOCK: "socket"}


def open_data_file(path: Path):
    """``open(path, "rb")`` with the OS's refusals (a folder, no permission, an I/O error) as DataError. Only a
    regular file is opened: a FIFO would block the read (and the MD5 check) forever, a device never end."""
    try:
        kind = stat.S_IFMT(os.stat(path).st_mode)
        if kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise DataError(f"{path}: is a {FILE_KINDS.get(kind, 'special file')}, not a regular file; put "
                            f"medmnist's {path.name} there (`medboost download` fetches it)")
        return open(path, "rb")
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a .npz file; move it away and put medmnist's {path.name} there "
                        f"(`medboost download` fetches it)") from None
    except PermissionError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror}); give your user read permission (chmod u+r) or copy "
                        f"the file into a folder of yours and point --data-dir there") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}); check the disk or copy the file elsewhere and "
                        f"point --data-dir there") from None
