"""Who may open the web demo, and whose files are whose.

Logins (``--auth USER:PASSWORD``, ``--auth-file FILE``) go to Gradio's own authentication; this
module reads and checks them, and refuses to serve beyond this machine without one unless the
user says ``--no-auth``. Each browser gets a random cookie (:class:`VisitorGate`, an ASGI
middleware in front of Gradio); its uploads and its results belong to it: another visitor who
learns a file's URL gets a 404. A visitor's files are deleted when its last page closes
(:meth:`Visitors.page_closed`) and everything at shutdown. File names from the browser reach
the disk only through :func:`safe_stem`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Iterable
from http.cookies import SimpleCookie
from pathlib import Path

from stream.errors import ConfigError

COOKIE = "slsnet_visitor"
ANONYMOUS = "anonymous"  # a caller without the cookie (in-process calls): nobody can fetch these
MAX_STEM = 80  # characters of an uploaded file's name kept in result names


def parse_login(text: str) -> tuple[str, str]:
    """``USER:PASSWORD`` → (user, password).

    Raises:
        ConfigError: no colon, an empty user or an empty password.
    """
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise ConfigError(f"a login must be USER:PASSWORD with neither empty, not {text!r}"
                          if ":" in text else "a login must be USER:PASSWORD (no colon given)")
    return user.strip(), password


def read_auth_file(path: str | Path) -> list[tuple[str, str]]:
    """The logins of a ``user:password``-per-line file that only its owner may read.

    Blank lines and lines starting with ``#`` are skipped.

    Raises:
        ConfigError: missing or unreadable, readable by group or others, a bad line, no login.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"--auth-file {path} is not a file")
        if mode & 0o077:
            raise ConfigError(f"--auth-file {path} can be read by other users (mode "
                              f"{stat.S_IMODE(mode):o}); make it private: chmod 600 {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read --auth-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--auth-file {path} is not UTF-8 text") from None
    logins = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            logins.append(parse_login(line))
        except ConfigError:
            raise ConfigError(
                f"--auth-file {path}, line {number}: expected user:password") from None
    if not logins:
        raise ConfigError(f"--auth-file {path} holds no user:password line")
    return logins


def is_loopback(host: str) -> bool:
    """Whether ``host`` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything


def check_exposure(host: str, logins: list[tuple[str, str]], no_auth: bool) -> str | None:
    """Refuse an open server on the network; the warning to show when the user insists.

    Returns:
        None, or the warning for ``--no-auth`` on a non-loopback address.

    Raises:
        ConfigError: a non-loopback ``host`` without a login and without ``--no-auth``; logins
            together with ``--no-auth``.
    """
    if no_auth and logins:
        raise ConfigError("--no-auth contradicts --auth/--auth-file: choose one")
    if logins or is_loopback(host):
        return None
    if not no_auth:
        raise ConfigError(f"serving on {host} without a login would show the camera and every "
                          "upload to anyone on the network: add --auth USER:PASSWORD or "
                          "--auth-file FILE (or --no-auth to serve openly anyway)")
    return (f"NO LOGIN: anyone who can reach {host} on this network can open the page and see "
            "the video and the uploads (--no-auth)")


def safe_stem(name: str | None, default: str = "upload") -> str:
    """A file-name stem from a name the browser sent, safe to put in a path.

    Keeps the last path component's stem, turns NUL, control, separator and other unusual
    characters into ``_``, drops leading dots, and cuts it to :data:`MAX_STEM` characters.
    """
    base = re.split(r"[\\/]", str(name or ""))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = re.sub(r"[^\w.\- ]", "_", stem, flags=re.ASCII).strip(" .")
    return stem[:MAX_STEM].rstrip(" .") or default


def visitor_id(secret: str | None) -> str:
    """The public id of a cookie's secret: it names folders, and does not reveal the secret."""
    if not secret:
        return ANONYMOUS
    return hashlib.sha256(secret.encode()).hexdigest()[:24]


class Visitors:
    """Which files belong to which visitor, and the pages each has open.

    Args:
        jobs_root: where results are written, one folder per visitor id (inside Gradio's cache,
            so that Gradio serves them where they are).
    """

    def __init__(self, jobs_root: Path) -> None:
        self.jobs_root = Path(jobs_root)
        self._lock = threading.Lock()
        self._uploads: dict[str, str] = {}  # real path of an upload -> owner id
        self._pages: dict[str, set[str]] = {}  # owner id -> its open pages' session hashes

    def owner(self, request) -> str:
        """The visitor id of a Gradio request (``gr.Request``), or :data:`ANONYMOUS`."""
        cookies = getattr(request, "cookies", None) or {}
        return visitor_id(cookies.get(COOKIE))

    def uploaded(self, owner: str, paths: Iterable[str]) -> None:
        """Record the files Gradio stored for an upload of ``owner``."""
        with self._lock:
            for path in paths:
                self._uploads[os.path.realpath(path)] = owner

    def may_read(self, owner: str, path: str) -> bool:
        """Whether ``owner`` may fetch ``path``: not another visitor's result or upload."""
        real = os.path.realpath(path)
        root = os.path.realpath(self.jobs_root)
        if real == root or real.startswith(root + os.sep):
            parts = Path(os.path.relpath(real, root)).parts
            return bool(parts) and parts[0] == owner and owner != ANONYMOUS
        with self._lock:
            return self._uploads.get(real, owner) == owner

    def page_opened(self, owner: str, session: str) -> None:
        """A page of ``owner`` loaded (Gradio's ``load`` event)."""
        with self._lock:
            self._pages.setdefault(owner, set()).add(session)

    def page_closed(self, owner: str, session: str) -> None:
        """A page closed: with the visitor's last page, its uploads and results go."""
        with self._lock:
            pages = self._pages.get(owner, set())
            pages.discard(session)
            if pages:
                return
            self._pages.pop(owner, None)
            uploads = [p for p, o in self._uploads.items() if o == owner]
            for path in uploads:
                del self._uploads[path]
        for path in uploads:
            Path(path).unlink(missing_ok=True)
            try:
                Path(path).parent.rmdir()  # Gradio's per-upload folder, once empty
            except OSError:
                pass
        if owner != ANONYMOUS:
            shutil.rmtree(self.jobs_root / owner, ignore_errors=True)


class VisitorGate:
    """ASGI middleware: a cookie per browser, and each visitor's files kept to it.

    Sets :data:`COOKIE` (a random secret, HttpOnly, SameSite=Strict, Secure under TLS) on any
    response to a request without it; answers 404 to ``/file=`` requests for another visitor's
    files; records the paths Gradio's ``/upload`` returns as the uploader's.

    Args:
        app: the ASGI app behind it (Gradio's).
        visitors: the registry of owners.
        secure: the page is served over TLS.
    """

    def __init__(self, app, *, visitors: Visitors, secure: bool = False) -> None:
        self.app, self.visitors, self.secure = app, visitors, secure

    async def __call__(self, scope, receive, send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secret = _cookie(scope, COOKIE)
        fresh = None
        if not secret:
            fresh = secret = secrets.token_urlsafe(32)
            scope = dict(scope)
            scope["headers"] = _with_cookie(scope["headers"], f"{COOKIE}={secret}".encode())
        owner = visitor_id(secret)
        path = scope.get("path", "")
        if "/file=" in path:
            target = path.split("/file=", 1)[1]
            if not self.visitors.may_read(owner, target):
                await _not_found(send)
                return
        upload = scope.get("method") == "POST" and path.rstrip("/").endswith("/upload")
        body: list[bytes] = []
        status = 0

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if fresh is not None:
                    cookie = (f"{COOKIE}={fresh}; Path=/; HttpOnly; SameSite=Strict"
                              + ("; Secure" if self.secure else ""))
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"set-cookie", cookie.encode())]}
            elif message["type"] == "http.response.body" and upload and status == 200:
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._record_upload(owner, b"".join(body))
            await send(message)

        await self.app(scope, receive, sending)

    def _record_upload(self, owner: str, body: bytes) -> None:
        try:
            paths = json.loads(body)
        except ValueError:
            return
        if isinstance(paths, list):
            self.visitors.uploaded(owner, [p for p in paths if isinstance(p, str)])


def _cookie(scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is no cookie
                continue
            if name in jar:
                return jar[name].value
    return None


def _with_cookie(headers, pair: bytes) -> list:
    """``headers`` with ``pair`` added to the one Cookie header (Starlette reads only the first)."""
    merged, done = [], False
    for key, value in headers:
        if key == b"cookie" and not done:
            value, done = value + b"; " + pair, True
        merged.append((key, value))
    return merged if done else [*merged, (b"cookie", pair)]


async def _not_found(send) -> None:
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": b"Not found"})
