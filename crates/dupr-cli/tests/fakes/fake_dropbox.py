#!/usr/bin/env python3
"""A fake of the Dropbox API v2 HTTP endpoints, for dupr's tests (stdlib only).

Plain HTTP on 127.0.0.1. The code under test rewrites https://api.dropboxapi.com
and https://content.dropboxapi.com to this server's base URL. It implements the
requests OpenDAL 0.59.5's `dropbox` service makes, plus the upload-session
endpoints for big files:

  POST /oauth2/token                          refresh_token grant -> access token
  POST /2/users/get_current_account           minimal account
  POST /2/files/upload                        one shot, Dropbox-API-Arg header
  POST /2/files/upload_session/start          -> {"session_id"}
  POST /2/files/upload_session/append_v2      (and the old /append)
  POST /2/files/upload_session/finish         -> file metadata
  POST /2/files/download                      Range -> 206
  POST /2/files/get_metadata
  POST /2/files/create_folder_v2
  POST /2/files/delete_v2
  POST /2/files/list_folder                   real paging ...
  POST /2/files/list_folder/continue          ... with has_more / cursor
  POST /2/files/copy_v2, /2/files/move_v2

Paths are case-insensitive and case-preserving as on Dropbox; parent folders
are created implicitly by uploads. File contents live on disk under FAKE_DATA;
metadata is in memory (a restart forgets everything).

Debug endpoints (no auth, not logged, not counted by FAKE_FAIL):
  GET /__fake/health   -> "ok"
  GET /__fake/files    -> [[path_display, size], ...] of every stored file

usage: fake_dropbox.py [PORT]        (PORT 0 or absent: any free port)
Environment:
  PORT             listen port (the argument wins)
  FAKE_TOKEN       the accepted bearer token (default "fake-token")
  FAKE_REFRESH_TOKEN  if set, the only refresh token /oauth2/token accepts
  FAKE_DATA        directory for file contents (default: a new temp dir)
  FAKE_MAX_UPLOAD  largest body /2/files/upload accepts (default 150 MiB)
  FAKE_MAX_CHUNK   largest body an upload-session call accepts (default 150 MiB)
  FAKE_PAGE_SIZE   most entries per list_folder page (default 1000)
  FAKE_FAIL        "N:CODE[,N:CODE...]": the Nth request (1-based, counting
                   every request) fails once with HTTP CODE (429 adds
                   Retry-After: 0)

Every request is logged to stderr as one line "METHOD /path" (flushed);
error responses add a line "  -> CODE summary".
"""
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MiB = 1024 * 1024
IO_CHUNK = MiB
TOKEN = os.environ.get("FAKE_TOKEN", "fake-token")
REFRESH_TOKEN = os.environ.get("FAKE_REFRESH_TOKEN", "")
DATA = os.environ.get("FAKE_DATA") or tempfile.mkdtemp(prefix="fake-dropbox-")
MAX_UPLOAD = int(os.environ.get("FAKE_MAX_UPLOAD") or 150 * MiB)
MAX_CHUNK = int(os.environ.get("FAKE_MAX_CHUNK") or 150 * MiB)
PAGE_SIZE = max(1, int(os.environ.get("FAKE_PAGE_SIZE") or 1000))


def parse_fail(spec):
    out = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if item:
            n, code = item.split(":", 1)
            out[int(n)] = int(code)
    return out


FAIL = parse_fail(os.environ.get("FAKE_FAIL"))

LOCK = threading.RLock()
COUNT = [0]
NODES = {}  # path_lower ("" = root) -> node dict
SESSIONS = {}  # session id -> {"path", "size", "closed", "hasher"}
CURSORS = {}  # cursor -> {"entries", "pos"}
SEQ = [0]

BLOBS = os.path.join(DATA, "blobs")
SESS_DIR = os.path.join(DATA, "sessions")
TMP = os.path.join(DATA, "tmp")
for _d in (BLOBS, SESS_DIR, TMP):
    os.makedirs(_d, exist_ok=True)


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def next_seq():
    SEQ[0] += 1
    return SEQ[0]


class ContentHasher:
    """Dropbox's content_hash: SHA-256 over the concatenated SHA-256 digests of
    each 4 MiB block, as hex."""

    BLOCK = 4 * MiB

    def __init__(self):
        self.overall = hashlib.sha256()
        self.block = hashlib.sha256()
        self.fill = 0

    def update(self, data):
        mv = memoryview(data)
        while len(mv):
            take = min(len(mv), self.BLOCK - self.fill)
            self.block.update(mv[:take])
            self.fill += take
            mv = mv[take:]
            if self.fill == self.BLOCK:
                self.overall.update(self.block.digest())
                self.block = hashlib.sha256()
                self.fill = 0

    def hexdigest(self):
        o = self.overall.copy()
        if self.fill:
            o.update(self.block.digest())
        return o.hexdigest()


ROOT = {"tag": "folder", "disp": "", "id": "id:root"}
NODES[""] = ROOT


def basename(disp):
    return disp.rsplit("/", 1)[-1]


def meta(lower):
    n = NODES[lower]
    m = {
        ".tag": n["tag"],
        "name": basename(n["disp"]),
        "path_lower": lower,
        "path_display": n["disp"],
        "id": n["id"],
    }
    if n["tag"] == "file":
        m.update(
            {
                "client_modified": n["client_modified"],
                "server_modified": n["server_modified"],
                "rev": n["rev"],
                "size": n["size"],
                "is_downloadable": True,
                "content_hash": n["hash"],
            }
        )
    return m


class ApiError(Exception):
    """An error response: code, JSON (or text) body, extra headers."""

    def __init__(self, code, body, headers=()):
        super().__init__(code)
        self.code = code
        self.body = body
        self.headers = list(headers)


def route_error(summary, error):
    """409 with Dropbox's error shape: error_summary "a/b/..", nested error."""
    return ApiError(409, {"error_summary": summary + "/..", "error": error})


def bad_request(route, text):
    return ApiError(400, 'Error in call to API function "%s": %s' % (route, text))


def not_found(tag):
    return route_error(tag + "/not_found", {".tag": tag, tag: {".tag": "not_found"}})


def check_path(route, p, allow_root=False):
    """Validate a Dropbox path argument; return (lower, display)."""
    if not isinstance(p, str):
        raise bad_request(route, 'request body: path: expected string, got %s' % type(p).__name__)
    if p == "":
        if allow_root:
            return "", ""
        raise bad_request(route, "request body: path: The root folder is unsupported.")
    if p == "/" and allow_root:
        raise bad_request(
            route, 'request body: path: Specify the root folder as an empty string rather than as "/".'
        )
    if p.startswith("id:"):
        with LOCK:
            for low, n in NODES.items():
                if n["id"] == p:
                    return low, n["disp"]
        raise not_found("path")
    if not p.startswith("/") or "//" in p:
        raise bad_request(
            route,
            "request body: path: '%s' did not match pattern '(/(.|[\\r\\n])*)|(ns:[0-9]+(/.*)?)|(id:.*)'" % p,
        )
    disp = p.rstrip("/") if p != "/" else p
    return disp.lower(), disp


def ensure_parents(disp, summary_root="path"):
    """Create the missing parent folders of disp (a file in the way is a
    conflict); return disp with the existing parents' casing, as Dropbox shows it."""
    parts = disp.strip("/").split("/")
    cur = ""
    for part in parts[:-1]:
        low = (cur + "/" + part).lower()
        n = NODES.get(low)
        if n is None:
            n = NODES[low] = {"tag": "folder", "disp": cur + "/" + part, "id": "id:f%07d" % next_seq()}
        elif n["tag"] != "folder":
            raise route_error(
                summary_root + "/conflict/file",
                {".tag": summary_root, summary_root: {".tag": "conflict", "conflict": {".tag": "file"}}},
            )
        cur = n["disp"]
    return cur + "/" + parts[-1]


def children(lower, recursive):
    pre = lower + "/" if lower else "/"
    out = []
    for k in sorted(NODES):
        if k and k.startswith(pre) and (recursive or "/" not in k[len(pre):]):
            out.append(k)
    return out


def remove_tree(lower):
    """Delete a node (and, for a folder, everything under it); unlink blobs."""
    n = NODES.pop(lower)
    blobs = [n["blob"]] if n["tag"] == "file" else []
    if n["tag"] == "folder":
        for k in [k for k in NODES if k.startswith(lower + "/")]:
            m = NODES.pop(k)
            if m["tag"] == "file":
                blobs.append(m["blob"])
    return blobs


def unlink_all(paths):
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def commit_file(disp, tmp_path, size, hexhash, mode, client_modified=None):
    """Store an uploaded temp file at disp. Caller holds LOCK."""
    low = disp.lower()
    disp = ensure_parents(disp)
    old = NODES.get(low)
    if old is not None and old["tag"] == "folder":
        raise route_error(
            "path/conflict/folder",
            {".tag": "path", "reason": {".tag": "conflict", "conflict": {".tag": "folder"}}},
        )
    mode_tag = mode.get(".tag") if isinstance(mode, dict) else mode
    if old is not None and mode_tag == "add":
        raise route_error(
            "path/conflict/file",
            {".tag": "path", "reason": {".tag": "conflict", "conflict": {".tag": "file"}}},
        )
    seq = next_seq()
    blob = os.path.join(BLOBS, "%08d" % seq)
    os.replace(tmp_path, blob)
    ts = now_iso()
    NODES[low] = {
        "tag": "file",
        "disp": disp,
        "id": old["id"] if old else "id:f%07d" % seq,
        "blob": blob,
        "size": size,
        "hash": hexhash,
        "rev": "%015x" % (0x5E0000000 + seq),
        "client_modified": client_modified or ts,
        "server_modified": ts,
    }
    if old is not None:
        unlink_all([old["blob"]])
    return meta(low)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-dropbox/1"

    def log_message(self, fmt, *args):  # the request line is logged by us
        pass

    def log_error(self, fmt, *args):
        log("  !! " + (fmt % args))

    # ------------------------------------------------------------ plumbing
    def reply(self, code, body=b"", ctype="application/json", headers=()):
        if isinstance(body, (dict, list)) or body is None:
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
            if ctype == "application/json":
                ctype = "text/plain; charset=utf-8"
        if code >= 400:
            try:
                summary = json.loads(body).get("error_summary", "")
            except Exception:
                summary = body[:200].decode("utf-8", "replace")
            log("  -> %d %s" % (code, summary))
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body_chunks(self):
        """Yield the request body in pieces (Content-Length or chunked), once."""
        if self.body_done:
            return
        self.body_done = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(left, IO_CHUNK))
                    if not piece:
                        raise ConnectionError("short chunked body")
                    left -= len(piece)
                    yield piece
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                piece = self.rfile.read(min(left, IO_CHUNK))
                if not piece:
                    raise ConnectionError("short body")
                left -= len(piece)
                yield piece

    def discard_body(self):
        for _ in self.body_chunks():
            pass

    def small_body(self, limit=16 * MiB):
        buf = bytearray()
        for piece in self.body_chunks():
            buf += piece
            if len(buf) > limit:
                self.discard_body()
                raise bad_request(self.route(), "request body too large")
        return bytes(buf)

    def body_to_file(self, f, hasher, limit):
        """Stream the body into f; returns (bytes, too_big)."""
        n = 0
        too_big = False
        for piece in self.body_chunks():
            n += len(piece)
            if n > limit:
                too_big = True
            if not too_big:
                f.write(piece)
                if hasher is not None:
                    hasher.update(piece)
        return n, too_big

    def route(self):
        return urlsplit(self.path).path.lstrip("/").removeprefix("2/")

    def api_arg(self):
        raw = self.headers.get("Dropbox-API-Arg")
        if raw is None:
            q = parse_qs(urlsplit(self.path).query)
            raw = q.get("arg", [None])[0]
        if raw is None:
            raise bad_request(self.route(), 'Must provide HTTP header "Dropbox-API-Arg" or URL parameter "arg".')
        try:
            raw.encode("ascii")
        except UnicodeEncodeError:
            # http.server decodes header bytes as latin-1: anything >= 0x80 means the
            # client sent raw non-ASCII, which Dropbox rejects (it must be \\u-escaped).
            raise bad_request(
                self.route(), 'HTTP header "Dropbox-API-Arg": could not decode input as JSON (non-ASCII must be escaped)'
            )
        try:
            return json.loads(raw)
        except ValueError:
            raise bad_request(self.route(), 'HTTP header "Dropbox-API-Arg": could not decode input as JSON')

    def json_arg(self, body):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not body or body.strip() == b"null":
            return {}
        if ctype not in ("application/json", "text/plain"):
            raise bad_request(
                self.route(),
                'Bad HTTP "Content-Type" header: "%s".  Expecting one of "application/json", '
                '"application/json; charset=utf-8", "text/plain; charset=dropbox-cors-hack".'
                % self.headers.get("Content-Type"),
            )
        try:
            v = json.loads(body)
        except ValueError:
            raise bad_request(self.route(), "request body: could not decode input as JSON")
        if not isinstance(v, dict):
            raise bad_request(self.route(), "request body: expected object")
        return v

    def check_octet(self):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in ("application/octet-stream", "text/plain"):
            self.discard_body()
            raise bad_request(
                self.route(),
                'Bad HTTP "Content-Type" header: "%s".  Expecting one of "application/octet-stream", '
                '"text/plain; charset=dropbox-cors-hack".' % self.headers.get("Content-Type"),
            )

    # ------------------------------------------------------------ dispatch
    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def dispatch(self):
        path = urlsplit(self.path).path
        self.body_done = False
        if path.startswith("/__fake/"):
            return self.debug(path)
        log("%s %s" % (self.command, self.path))
        with LOCK:
            COUNT[0] += 1
            n = COUNT[0]
            fail = FAIL.pop(n, None)
        try:
            if fail is not None:
                self.discard_body()
                return self.injected(fail, n)
            if path != "/oauth2/token":
                auth = self.headers.get("Authorization", "")
                if auth != "Bearer " + TOKEN:
                    self.discard_body()
                    return self.reply(
                        401,
                        {
                            "error_summary": "invalid_access_token/..",
                            "error": {".tag": "invalid_access_token"},
                        },
                    )
            handler = ROUTES.get(path) if self.command == "POST" else None
            if handler is None:
                self.discard_body()
                return self.reply(404, "Unknown API function: %s %s" % (self.command, path), "text/plain")
            handler(self)
        except ApiError as e:
            self.discard_body()  # keep the connection in step: never answer over an unread body
            self.reply(e.code, e.body, headers=e.headers)
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def injected(self, code, n):
        log("  (FAKE_FAIL: request %d fails with %d)" % (n, code))
        if code == 429:
            return self.reply(
                429,
                {
                    "error_summary": "too_many_requests/..",
                    "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 0},
                },
                headers=[("Retry-After", "0")],
            )
        if code == 401:
            return self.reply(
                401, {"error_summary": "expired_access_token/..", "error": {".tag": "expired_access_token"}}
            )
        return self.reply(code, "fake dropbox: injected failure %d" % code, "text/plain")

    def debug(self, path):
        self.discard_body()
        if path == "/__fake/health":
            return self.reply(200, "ok", "text/plain")
        if path == "/__fake/files":
            with LOCK:
                out = [[n["disp"], n["size"]] for k, n in sorted(NODES.items()) if n["tag"] == "file"]
            return self.reply(200, out)
        return self.reply(404, "no such debug endpoint", "text/plain")

    # ------------------------------------------------------------ endpoints
    def token(self):
        form = parse_qs(self.small_body().decode("utf-8", "replace"))
        form.update(parse_qs(urlsplit(self.path).query))
        grant = form.get("grant_type", [""])[0]
        rt = form.get("refresh_token", [""])[0]
        if grant != "refresh_token":
            raise ApiError(400, {"error": "unsupported_grant_type", "error_description": "grant_type: " + grant})
        if not rt or (REFRESH_TOKEN and rt != REFRESH_TOKEN):
            raise ApiError(400, {"error": "invalid_grant", "error_description": "refresh token is invalid or revoked"})
        if not form.get("client_id", [""])[0]:
            raise ApiError(400, {"error": "invalid_client", "error_description": "client_id missing"})
        self.reply(200, {"access_token": TOKEN, "token_type": "bearer", "expires_in": 14400})

    def current_account(self):
        self.json_arg(self.small_body())
        self.reply(
            200,
            {
                "account_id": "dbid:AAfakeaccount000000000000000000000000",
                "name": {
                    "given_name": "Fake",
                    "surname": "User",
                    "familiar_name": "Fake",
                    "display_name": "Fake User",
                    "abbreviated_name": "FU",
                },
                "email": "fake@example.invalid",
                "email_verified": True,
                "disabled": False,
                "country": "US",
                "locale": "en",
                "account_type": {".tag": "basic"},
                "root_info": {".tag": "user", "root_namespace_id": "1", "home_namespace_id": "1"},
            },
        )

    def upload(self):
        arg = self.api_arg()
        self.check_octet()
        _, disp = check_path("files/upload", arg.get("path"))
        if arg.get("path", "").endswith("/"):
            self.discard_body()
            raise route_error("path/malformed_path", {".tag": "path", "reason": {".tag": "malformed_path"}})
        hasher = ContentHasher()
        fd, tmp = tempfile.mkstemp(dir=TMP)
        try:
            with os.fdopen(fd, "wb") as f:
                n, too_big = self.body_to_file(f, hasher, MAX_UPLOAD)
            if too_big:
                raise bad_request(
                    "files/upload",
                    "request body is too large (%d bytes); files/upload accepts at most %d bytes, "
                    "use upload sessions for larger files" % (n, MAX_UPLOAD),
                )
            with LOCK:
                m = commit_file(disp, tmp, n, hasher.hexdigest(), arg.get("mode", "add"), arg.get("client_modified"))
            tmp = None
        finally:
            if tmp:
                unlink_all([tmp])
        self.reply(200, m)

    def session_start(self):
        arg = self.api_arg()
        self.check_octet()
        sid = "pid_upload_session:" + secrets.token_hex(16)
        spath = os.path.join(SESS_DIR, sid.split(":")[1])
        hasher = ContentHasher()
        with open(spath, "wb") as f:
            n, too_big = self.body_to_file(f, hasher, MAX_CHUNK)
        if too_big:
            unlink_all([spath])
            raise bad_request("files/upload_session/start", "request body is too large (%d bytes)" % n)
        with LOCK:
            SESSIONS[sid] = {"path": spath, "size": n, "closed": bool(arg.get("close")), "hasher": hasher}
        self.reply(200, {"session_id": sid})

    def session_lookup(self, cursor, prefix, allow_closed=False):
        """Check a cursor {session_id, offset}; raise Dropbox's lookup errors."""
        if not isinstance(cursor, dict) or "session_id" not in cursor or "offset" not in cursor:
            self.discard_body()
            raise bad_request(self.route(), "request body: cursor: missing session_id/offset")
        s = SESSIONS.get(cursor["session_id"])

        def err(tag, extra=None):
            inner = {".tag": tag}
            inner.update(extra or {})
            if prefix:
                return route_error(prefix + "/" + tag, {".tag": prefix, prefix: inner})
            return route_error(tag, inner)

        if s is None:
            self.discard_body()
            raise err("not_found")
        if s.get("busy"):
            self.discard_body()
            raise err("concurrent_session_invalid_offset")
        if cursor["offset"] != s["size"]:
            self.discard_body()
            raise err("incorrect_offset", {"correct_offset": s["size"]})
        if s["closed"] and not allow_closed:
            self.discard_body()
            raise err("closed")
        return s

    def session_append(self, arg, prefix, allow_closed=False):
        with LOCK:
            s = self.session_lookup(arg, prefix, allow_closed)
            s["busy"] = True
        try:
            with open(s["path"], "ab") as f:
                n, too_big = self.body_to_file(f, s["hasher"], MAX_CHUNK)
            if too_big:
                # nothing of an over-long chunk is kept; the client may resend smaller
                with open(s["path"], "ab") as f:
                    f.truncate(s["size"])
                s["hasher"] = rehash(s["path"])
                raise bad_request(self.route(), "request body is too large (%d bytes)" % n)
            s["size"] += n
        finally:
            s["busy"] = False
        return s

    def session_append_v2(self):
        arg = self.api_arg()
        self.check_octet()
        s = self.session_append(arg.get("cursor"), None)
        if arg.get("close"):
            s["closed"] = True
        self.reply(200, None)

    def session_append_v1(self):
        arg = self.api_arg()
        self.check_octet()
        self.session_append(arg, None)
        self.reply(200, None)

    def session_finish(self):
        arg = self.api_arg()
        self.check_octet()
        commit = arg.get("commit") or {}
        _, disp = check_path("files/upload_session/finish", commit.get("path"))
        cursor = arg.get("cursor")
        # a closed session can be finished, but takes no more data
        empty = self.headers.get("Content-Length", "") == "0"
        s = self.session_append(cursor, "lookup_failed", allow_closed=empty)
        with LOCK:
            m = commit_file(
                disp, s["path"], s["size"], s["hasher"].hexdigest(), commit.get("mode", "add"), commit.get("client_modified")
            )
            SESSIONS.pop(cursor["session_id"], None)
        self.reply(200, m)

    def download(self):
        arg = self.api_arg()
        self.discard_body()
        low, _ = check_path("files/download", arg.get("path"))
        with LOCK:
            n = NODES.get(low)
            if n is None:
                raise not_found("path")
            if n["tag"] != "file":
                raise route_error("path/not_file", {".tag": "path", "path": {".tag": "not_file"}})
            m = meta(low)
            blob, size = n["blob"], n["size"]
            f = open(blob, "rb")  # open under the lock: a concurrent overwrite unlinks, not truncates
        with f:
            start, end = 0, size - 1
            code = 200
            headers = [("Dropbox-API-Result", json.dumps(m)), ("ETag", '"%s"' % m["rev"])]
            rng = self.headers.get("Range")
            if rng:
                r = parse_range(rng, size)
                if r is None:
                    raise ApiError(416, "", headers=[("Content-Range", "bytes */%d" % size)])
                if r != "ignore":
                    start, end = r
                    code = 206
                    headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
            send_file(self, code, f, start, end - start + 1, "application/octet-stream", headers)

    def get_metadata(self):
        arg = self.json_arg(self.small_body())
        low, _ = check_path("files/get_metadata", arg.get("path"))
        with LOCK:
            if low not in NODES:
                raise not_found("path")
            m = meta(low)
        self.reply(200, m)

    def create_folder(self):
        arg = self.json_arg(self.small_body())
        low, disp = check_path("files/create_folder_v2", arg.get("path"))
        with LOCK:
            if low in NODES:
                kind = "folder" if NODES[low]["tag"] == "folder" else "file"
                raise route_error(
                    "path/conflict/" + kind,
                    {".tag": "path", "path": {".tag": "conflict", "conflict": {".tag": kind}}},
                )
            disp = ensure_parents(disp)
            NODES[low] = {"tag": "folder", "disp": disp, "id": "id:f%07d" % next_seq()}
            m = meta(low)
        self.reply(200, {"metadata": m})

    def delete(self):
        arg = self.json_arg(self.small_body())
        low, _ = check_path("files/delete_v2", arg.get("path"))
        with LOCK:
            if low not in NODES:
                raise not_found("path_lookup")
            m = meta(low)
            blobs = remove_tree(low)
        unlink_all(blobs)
        self.reply(200, {"metadata": m})

    def list_folder(self):
        arg = self.json_arg(self.small_body())
        low, _ = check_path("files/list_folder", arg.get("path", ""), allow_root=True)
        limit = arg.get("limit", 2000)
        if not isinstance(limit, int) or not 1 <= limit <= 2000:
            raise bad_request("files/list_folder", "request body: limit: %r is not within 1..2000" % (limit,))
        recursive = bool(arg.get("recursive"))
        with LOCK:
            n = NODES.get(low)
            if n is None:
                raise not_found("path")
            if n["tag"] != "folder":
                raise route_error("path/not_folder", {".tag": "path", "path": {".tag": "not_folder"}})
            keys = children(low, recursive)
            if recursive and low:
                keys.insert(0, low)  # a recursive listing includes the folder itself
            entries = [meta(k) for k in keys]
            cursor = "AAH" + secrets.token_urlsafe(24)
            CURSORS[cursor] = {"entries": entries, "pos": 0, "page": min(limit, PAGE_SIZE)}
        self.reply(200, self.page(cursor))

    def list_continue(self):
        arg = self.json_arg(self.small_body())
        cursor = arg.get("cursor")
        with LOCK:
            if cursor not in CURSORS:
                raise bad_request("files/list_folder/continue", 'Invalid "cursor" parameter: %r' % (cursor,))
        self.reply(200, self.page(cursor))

    def page(self, cursor):
        with LOCK:
            c = CURSORS[cursor]
            out = c["entries"][c["pos"]: c["pos"] + c["page"]]
            c["pos"] += len(out)
            more = c["pos"] < len(c["entries"])
        return {"entries": out, "cursor": cursor, "has_more": more}

    def copy_or_move(self, move):
        route = "files/move_v2" if move else "files/copy_v2"
        arg = self.json_arg(self.small_body())
        flow, _ = check_path(route, arg.get("from_path"))
        tlow, tdisp = check_path(route, arg.get("to_path"))
        with LOCK:
            if flow not in NODES:
                raise not_found("from_lookup")
            if tlow in NODES:
                kind = NODES[tlow]["tag"]
                raise route_error("to/conflict/" + kind, {".tag": "to", "to": {".tag": "conflict", "conflict": {".tag": kind}}})
            if tlow == flow or tlow.startswith(flow + "/"):
                raise route_error("duplicated_or_nested_paths", {".tag": "duplicated_or_nested_paths"})
            tdisp = ensure_parents(tdisp, "to")
            moved = [flow] + [k for k in NODES if k.startswith(flow + "/")]
            for k in moved:
                n = dict(NODES[k])
                new_disp = tdisp + n["disp"][len(flow):]
                n["disp"] = new_disp
                if not move:
                    n["id"] = "id:f%07d" % next_seq()
                    if n["tag"] == "file":
                        seq = next_seq()
                        blob = os.path.join(BLOBS, "%08d" % seq)
                        shutil.copyfile(n["blob"], blob)
                        n["blob"] = blob
                        n["rev"] = "%015x" % (0x5E0000000 + seq)
                NODES[new_disp.lower()] = n
            if move:
                for k in moved:
                    NODES.pop(k)
            m = meta(tlow)
        self.reply(200, {"metadata": m})


def rehash(path):
    h = ContentHasher()
    with open(path, "rb") as f:
        while True:
            b = f.read(IO_CHUNK)
            if not b:
                return h
            h.update(b)


def parse_range(value, size):
    """(start, end) inclusive, None if unsatisfiable, "ignore" if not a bytes range."""
    value = value.strip()
    if not value.startswith("bytes=") or "," in value:
        return "ignore"
    a, _, b = value[6:].partition("-")
    try:
        if a == "":
            n = int(b)
            if n <= 0:
                return None
            return (max(0, size - n), size - 1) if size else None
        start = int(a)
        end = int(b) if b else size - 1
    except ValueError:
        return "ignore"
    if size == 0 and start == 0:
        return "ignore"
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def send_file(h, code, f, start, length, ctype, headers):
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(length))
    h.send_header("Accept-Ranges", "bytes")
    for k, v in headers:
        h.send_header(k, v)
    h.end_headers()
    f.seek(start)
    left = length
    while left:
        b = f.read(min(left, IO_CHUNK))
        if not b:
            break
        h.wfile.write(b)
        left -= len(b)


ROUTES = {
    "/oauth2/token": Handler.token,
    "/2/users/get_current_account": Handler.current_account,
    "/2/files/upload": Handler.upload,
    "/2/files/upload_session/start": Handler.session_start,
    "/2/files/upload_session/append_v2": Handler.session_append_v2,
    "/2/files/upload_session/append": Handler.session_append_v1,
    "/2/files/upload_session/finish": Handler.session_finish,
    "/2/files/download": Handler.download,
    "/2/files/get_metadata": Handler.get_metadata,
    "/2/files/create_folder_v2": Handler.create_folder,
    "/2/files/delete_v2": Handler.delete,
    "/2/files/list_folder": Handler.list_folder,
    "/2/files/list_folder/continue": Handler.list_continue,
    "/2/files/copy_v2": lambda h: h.copy_or_move(False),
    "/2/files/move_v2": lambda h: h.copy_or_move(True),
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT") or 0)
    srv = Server(("127.0.0.1", port), Handler)
    log("fake-dropbox listening on 127.0.0.1:%d data=%s" % (srv.server_address[1], DATA))
    srv.serve_forever()


if __name__ == "__main__":
    main()
