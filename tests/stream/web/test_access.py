"""Who may use the web demo, and whose files are whose, on the real server.

Logins go through Gradio's own authentication; every browser gets a cookie, and a visitor's
uploads and results are served to that visitor only. The server is ``python demo.py --gradio``
in a subprocess; requests are plain HTTP (urllib, http.client) and gradio_client.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from support.browser import REPO, demo_server, isic_pair

from stream.errors import ConfigError
from stream.web.access import (
    ANONYMOUS,
    COOKIE,
    MAX_STEM,
    Visitors,
    check_exposure,
    parse_login,
    read_auth_file,
    safe_stem,
    visitor_id,
)

gradio_client = pytest.importorskip("gradio_client")

SERVER_ARGS = ("--device", "cpu", "--threads", "1", "--max-upload-mb", "2")


def demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "demo.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def get(url: str, *, cookie: str | None = None, context=None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def visitor_cookie(url: str) -> str:
    """A new visitor: the cookie the server sets on its first response."""
    with urllib.request.urlopen(url + "/config", timeout=30) as response:
        header = response.headers.get("set-cookie", "")
    assert header.startswith(f"{COOKIE}="), header
    return header.split(";", 1)[0]


def upload(url: str, name: str, data: bytes, *, cookie: str | None = None) -> tuple[int, bytes]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if cookie:
        headers["Cookie"] = cookie
    request = urllib.request.Request(url + "/gradio_api/upload", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def file_url(url: str, path: str | Path) -> str:
    return f"{url}/gradio_api/file={urllib.parse.quote(str(path))}"


# --- logins and the network ---------------------------------------------------------------


def test_logins_are_parsed_and_refused_with_one_line(tmp_path):
    assert parse_login("ana:s3:cret") == ("ana", "s3:cret")
    for bad in ("ana", ":pw", "ana:"):
        with pytest.raises(ConfigError, match="USER:PASSWORD"):
            parse_login(bad)
    # an auth file others may read is refused, a private one is read
    logins = tmp_path / "logins.txt"
    logins.write_text("# clinic\nana:one\n\nbo:two\n")
    logins.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_auth_file(logins)
    logins.chmod(0o600)
    assert read_auth_file(logins) == [("ana", "one"), ("bo", "two")]
    logins.write_text("ana\n")
    with pytest.raises(ConfigError, match="line 1"):
        read_auth_file(logins)


def test_only_loopback_may_serve_without_a_login():
    assert check_exposure("127.0.0.1", [], False) is None
    assert check_exposure("localhost", [], False) is None
    assert check_exposure("::1", [], False) is None
    assert check_exposure("0.0.0.0", [("a", "b")], False) is None
    with pytest.raises(ConfigError, match="--auth USER:PASSWORD"):
        check_exposure("0.0.0.0", [], False)
    with pytest.raises(ConfigError, match="--auth"):
        check_exposure("clinic-pc.local", [], False)
    assert "anyone" in check_exposure("0.0.0.0", [], True)


def test_a_network_address_without_a_login_is_one_error_line(tmp_path):
    # when the demo is asked to serve every interface without a login
    done = demo("--gradio", "--host", "0.0.0.0", "--port", "1")
    # then it refuses at once with one line that says how to add one
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: serving on 0.0.0.0 without a login")
    assert "--auth USER:PASSWORD" in lines[0] and "--no-auth" in lines[0]
    # and an auth file that others can read is refused the same way
    logins = tmp_path / "logins"
    logins.write_text("ana:one\n")
    logins.chmod(0o644)
    done = demo("--gradio", "--auth-file", str(logins), "--port", "1")
    assert done.returncode == 1 and "chmod 600" in done.stderr
    assert "Traceback" not in done.stderr
    # and the web flags mean nothing to a file run
    done = demo("--video", "x.mp4", "--auth", "a:b")
    assert done.returncode == 1 and "only apply to the web demo" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_with_a_login_the_page_and_the_api_refuse_strangers(tmp_path):
    image, _ = isic_pair(0)
    with demo_server(tmp_path, *SERVER_ARGS, "--auth", "ana:right-pw", timeout=180) as server:
        # then a plain HTTP client gets neither the page's config nor the upload route
        assert get(server.url + "/config")[0] == 401
        assert upload(server.url, "a.png", b"x")[0] == 401
        # and gradio_client without a login, or with a wrong one, is refused
        with pytest.raises(Exception, match="(?i)login|credentials|auth"):
            gradio_client.Client(server.url, verbose=False)
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises a plain Exception
            gradio_client.Client(server.url, verbose=False, auth=("ana", "wrong"))
        # while the right login segments a photo
        client = gradio_client.Client(server.url, verbose=False, auth=("ana", "right-pw"),
                                      download_files=str(tmp_path / "dl"))
        overlay, mask, area = client.submit(gradio_client.handle_file(str(image)), 0.5,
                                            api_name="/segment_image").result(timeout=120)
        assert Path(overlay).is_file() and Path(mask).is_file() and "Lesion area" in area


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_auth_on_the_network_shows_a_red_banner_and_a_console_warning(tmp_path):
    with demo_server(tmp_path, *SERVER_ARGS, "--host", "0.0.0.0", "--no-auth",
                     timeout=180) as server:
        status, body = get(server.url + "/config")
        assert status == 200
        assert "open-warning" in body.decode() and "anyone" in body.decode()
        assert "warning: NO LOGIN" in server.output()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tls_serves_https(tmp_path):
    # given a self-signed certificate
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                           "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out",
                           str(cert)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    with demo_server(tmp_path, *SERVER_ARGS, "--ssl-certfile", str(cert), "--ssl-keyfile",
                     str(key), timeout=180) as server:
        # then the page answers over https, and its cookie is Secure
        assert server.url.startswith("https://")
        context = ssl._create_unverified_context()
        with urllib.request.urlopen(server.url + "/config", timeout=30,
                                    context=context) as response:
            assert response.status == 200
            assert "Secure" in response.headers.get("set-cookie", "")
    # and one flag without the other is one error line
    done = demo("--gradio", "--ssl-certfile", str(cert), "--port", "1")
    assert done.returncode == 1 and "both --ssl-certfile and --ssl-keyfile" in done.stderr


# --- whose files are whose ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_visitor_cannot_fetch_another_visitors_files(tmp_path):
    image, _ = isic_pair(0)
    with demo_server(tmp_path, *SERVER_ARGS, timeout=180) as server:
        # given visitor A, who segments a photo through the API, and visitor B
        a = gradio_client.Client(server.url, verbose=False, download_files=str(tmp_path / "dl"))
        a.submit(gradio_client.handle_file(str(image)), 0.5,
                 api_name="/segment_image").result(timeout=120)
        a_cookie = f"{COOKIE}={a.cookies[COOKIE]}"
        b_cookie = visitor_cookie(server.url)
        results = sorted((tmp_path / "gradio").glob("slsnet-web-cache-*/jobs/*/*/*.png"))
        assert len(results) == 2  # overlay and mask
        # and an upload of A's
        status, body = upload(server.url, "a-photo.png", image.read_bytes(), cookie=a_cookie)
        assert status == 200
        (uploaded,) = json.loads(body)
        for path in [*results, uploaded]:
            # then B gets a 404 for each, and so does a client with no cookie at all
            assert get(file_url(server.url, path), cookie=b_cookie)[0] == 404, path
            assert get(file_url(server.url, path))[0] == 404, path
            # while A gets them
            assert get(file_url(server.url, path), cookie=a_cookie)[0] == 200, path
        # and a path that climbs out of A's folder into B's is still B's
        climb = Path(results[0]).parent / ".." / ".." / visitor_id(b_cookie.split("=", 1)[1])
        assert get(file_url(server.url, climb / "x.png"), cookie=a_cookie)[0] == 404


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_upload_names_and_sizes_from_the_browser_are_contained(tmp_path):
    with demo_server(tmp_path, *SERVER_ARGS, timeout=180) as server:
        cache = next((tmp_path / "gradio").glob("slsnet-web-cache-*"))
        # given uploads with names that climb, are absolute, hold a NUL or are very long
        for name in ("../../../../escaped.png", "/tmp/absolute.png", "nul\x00byte.png",
                     "x" * 5000 + ".png"):
            status, body = upload(server.url, name, b"\x89PNG not really")
            # then each is stored inside the server's cache, or refused, never elsewhere
            if status == 200:
                (path,) = json.loads(body)
                assert Path(path).resolve().is_relative_to(cache.resolve()), (name, path)
            else:
                assert status in (400, 413), (name, status)
        stray = [p for p in tmp_path.rglob("*") if p.name in ("escaped.png", "absolute.png")]
        assert all(p.resolve().is_relative_to(cache.resolve()) for p in stray)
        # when an upload larger than the limit comes without a Content-Length (chunked)
        host, port = server.url.removeprefix("http://").split(":")
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                f"filename=\"big.mp4\"\r\n\r\n").encode()

        def chunks():
            yield head
            for _ in range(6):  # 3 MB in 512 kB pieces, over the 2 MB limit
                yield b"\0" * (512 * 1024)
            yield f"\r\n--{boundary}--\r\n".encode()

        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/gradio_api/upload", body=chunks(), encode_chunked=True,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                              "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        # then it is refused as too large, and the server keeps serving
        assert response.status == 413, response.read()[:200]
        conn.close()
        assert get(server.url + "/config")[0] == 200
        assert not [p for p in cache.rglob("big.mp4") if p.stat().st_size > 2 * 2**20]


def test_names_from_the_browser_become_safe_stems():
    assert safe_stem("../../etc/passwd.png") == "passwd"
    assert safe_stem("/abs/dir/photo.jpg") == "photo"
    assert safe_stem("C:\\Users\\x\\scan.tif") == "scan"
    assert safe_stem("a\x00b.png") == "a_b"
    assert safe_stem("..") == "upload" and safe_stem("") == "upload" and safe_stem(None) == "upload"
    assert safe_stem(".hidden.png") == "hidden"
    assert len(safe_stem("y" * 5000 + ".png")) == MAX_STEM
    assert safe_stem("Läsion 1.jpg") == "L_sion 1"


@pytest.fixture(scope="module")
def engine():
    import torch

    from stream.engines import build_engine

    return build_engine(device=torch.device("cpu"), weights=None, threads=1)


def test_result_files_of_a_hostile_name_stay_in_the_visitors_folder(engine, tmp_path):
    from stream.web import Runtime, WebOptions
    from stream.web.files import segment_image

    # given a photo whose browser-side name climbs, holds a NUL and is very long
    image, _ = isic_pair(0)
    runtime = Runtime(engine, WebOptions(), cache=tmp_path / "cache")
    try:
        for name in ("../../../evil\x00.png", "/etc/" + "z" * 4000 + ".png"):
            photo = {"path": str(image), "orig_name": name}
            overlay, mask, _ = segment_image(photo, 0.5, runtime=runtime, owner="abc")
            # then both results are inside that visitor's folder, with short clean names
            for path in map(Path, (overlay, mask)):
                assert path.resolve().is_relative_to((runtime.jobs.root / "abc").resolve())
                assert "\x00" not in path.name and len(path.name) < 120
    finally:
        runtime.close()
    assert not (tmp_path / "cache").exists()


def test_a_visitors_files_go_when_its_last_page_closes(tmp_path):
    # given a visitor with two open pages, an upload and a result folder
    visitors = Visitors(tmp_path / "jobs")
    owner = visitor_id("secret")
    upload_dir = tmp_path / "cache" / "0123abc"
    upload_dir.mkdir(parents=True)
    upload_file = upload_dir / "photo.png"
    upload_file.write_bytes(b"x")
    visitors.uploaded(owner, [str(upload_file)])
    job = tmp_path / "jobs" / owner / "image-1"
    job.mkdir(parents=True)
    (job / "mask.png").write_bytes(b"x")
    visitors.page_opened(owner, "page-1")
    visitors.page_opened(owner, "page-2")
    # when one page closes, nothing goes; when the last closes, everything of it goes
    visitors.page_closed(owner, "page-1")
    assert upload_file.exists() and job.exists()
    visitors.page_closed(owner, "page-2")
    assert not upload_file.exists() and not upload_dir.exists()
    assert not (tmp_path / "jobs" / owner).exists()
    # and others may not read what an anonymous caller made
    assert not visitors.may_read(ANONYMOUS, str(tmp_path / "jobs" / ANONYMOUS / "x.png"))
