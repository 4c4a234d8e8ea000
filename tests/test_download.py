"""`medboost download` against a real HTTP server on this machine: resuming a cut download with a Range request,
starting over when the server ignores Range, deleting a .part whose MD5 fails, and the progress bar.

The server is a few lines of http.server that answer Range requests (python's SimpleHTTPRequestHandler does not)
and can drop the connection part-way through a file, as a flaky network does.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from rich.console import Console

from medboost_cli.data import download
from medboost_cli.errors import DataError
from medboost_cli.tasks import resolve_task

from .test_cli import run

BREAST = resolve_task("breast")
PAYLOAD = np.random.default_rng(0).bytes(300_000)  # stands for an npz: only its bytes and MD5 matter here


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: FileServer = self.server
        asked = self.headers.get("Range")
        server.ranges.append(asked)
        body, start = server.payload, 0
        found = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if found and server.honour_range:
            start = int(found.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        sent = body[start:] if server.cut_after is None else body[start : start + server.cut_after]
        self.wfile.write(sent)  # then the connection closes (HTTP/1.0): short of Content-Length when cut

    def log_message(self, *args):
        pass


class FileServer(ThreadingHTTPServer):
    """Serves ``payload`` at every path; ``cut_after`` bytes then hangs up; ``honour_range`` False ignores Range."""

    payload = PAYLOAD
    honour_range = True
    cut_after: int | None = None

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ranges: list[str | None] = []  # the Range header of each request, None when there was none
        self.url = f"http://127.0.0.1:{self.server_address[1]}/files"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy set in the environment must not carry local requests
    monkeypatch.setattr(type(BREAST), "md5", lambda self, size: hashlib.md5(PAYLOAD).hexdigest())
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_a_cut_download_keeps_its_part_and_resumes_with_a_range_request(server, tmp_path):
    server.cut_after = 120_000
    with pytest.raises(DataError, match="connection closed after 120000 of 300000 bytes;.*breastmnist.npz.part keeps"
                                        " what arrived: run the same command again to resume"):
        download(BREAST, 28, tmp_path, mirror=server.url, log=lambda m: None)
    part = tmp_path / "breastmnist.npz.part"
    assert part.read_bytes() == PAYLOAD[:120_000] and not (tmp_path / "breastmnist.npz").exists()

    server.cut_after = None
    logs = []
    path = download(BREAST, 28, tmp_path, mirror=server.url, log=logs.append)
    assert server.ranges == [None, "bytes=120000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert "resuming after 120000 bytes" in logs[0] and logs[-1].endswith("downloaded, MD5 ok")


def test_a_server_that_ignores_range_gets_the_whole_file_again(server, tmp_path):
    server.honour_range = False
    (tmp_path / "breastmnist.npz.part").write_bytes(PAYLOAD[:50_000])
    logs = []
    path = download(BREAST, 28, tmp_path, mirror=server.url, log=logs.append)
    assert server.ranges == ["bytes=50000-"]  # asked to resume, answered 200 with the whole file
    assert path.read_bytes() == PAYLOAD  # not the old 50 kB followed by the whole file
    assert "ignored the request to resume after 50000 bytes; downloading from the start" in logs[0]


def test_a_part_that_the_md5_refuses_is_deleted_and_the_next_try_starts_over(server, tmp_path):
    part = tmp_path / "breastmnist.npz.part"
    part.write_bytes(b"\0" * 1000)  # not the file's first 1000 bytes: the resumed whole cannot match
    with pytest.raises(DataError, match="its MD5 [0-9a-f]{32} is not medmnist's .*; try again"):
        download(BREAST, 28, tmp_path, mirror=server.url, log=lambda m: None)
    assert not part.exists() and not (tmp_path / "breastmnist.npz").exists()
    assert download(BREAST, 28, tmp_path, mirror=server.url, log=lambda m: None).read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-", None]


def test_a_complete_part_is_checked_without_fetching_more(server, tmp_path):
    (tmp_path / "breastmnist.npz.part").write_bytes(PAYLOAD)
    path = download(BREAST, 28, tmp_path, mirror=server.url, log=lambda m: None)
    assert server.ranges == ["bytes=300000-"] and path.read_bytes() == PAYLOAD  # answered 416, MD5 matched


def test_progress_bar_on_a_terminal_counts_the_whole_file_when_resuming(server, tmp_path):
    (tmp_path / "breastmnist.npz.part").write_bytes(PAYLOAD[:100_000])
    screen = io.StringIO()
    download(BREAST, 28, tmp_path, mirror=server.url, log=lambda m: None,
             console=Console(file=screen, force_terminal=True, width=120))
    shown = screen.getvalue()
    assert "breastmnist.npz" in shown and "300.0/300.0 kB" in shown  # not the 200 kB this request fetched


def test_cli_download_from_a_mirror_without_a_bar_when_stderr_is_not_a_terminal(server, tmp_path):
    server.cut_after = 10_000
    first = run("download", "breast", "--mirror", server.url + "/", "--data-dir", tmp_path)
    assert first.returncode == 3 and "run the same command again to resume" in first.stderr
    server.cut_after = None
    again = run("download", "breast", "--mirror", server.url + "/", "--data-dir", tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{tmp_path / 'breastmnist.npz'}: downloaded, MD5 ok" in again.stdout
    assert again.stderr == ""  # no progress bar written into a log file or pipe
    assert server.ranges == [None, "bytes=10000-"]
