#!/usr/bin/env python3
"""A fake of the Google Drive v3 REST API (and Google's OAuth token endpoint),
for dupr's tests (stdlib only).

Plain HTTP on 127.0.0.1. The code under test rewrites https://www.googleapis.com
and https://oauth2.googleapis.com to this server's base URL. It implements what
OpenDAL 0.59.5's `gdrive` service sends, and a little more:

  POST   /token (also /oauth2/v4/token)     refresh_token grant (params in the query,
                                            as OpenDAL sends them, or a form body) and
                                            the service-account JWT grant
  GET    /drive/v3/files?q=&pageSize=&pageToken=&orderBy=&fields=
                                            search: name, mimeType, trashed,
                                            'ID' in parents, modifiedTime/createdTime;
                                            and/or/not/parentheses
  GET    /drive/v3/files/ID?fields=         metadata ("root" is the root folder's alias)
  GET    /drive/v3/files/ID?alt=media       content, Range -> 206
  POST   /drive/v3/files                    create folder / empty file (JSON metadata)
  PATCH  /drive/v3/files/ID                 metadata: name, trashed, parents
                                            (addParents/removeParents in the query or body)
  DELETE /drive/v3/files/ID                 permanent delete (with descendants)
  POST   /drive/v3/files/ID/copy
  GET    /drive/v3/about
  POST   /upload/drive/v3/files?uploadType=multipart     multipart/related or
                                            multipart/form-data (OpenDAL), JSON
                                            metadata part then the media part
  POST   /upload/drive/v3/files?uploadType=media
  PATCH  /upload/drive/v3/files/ID?uploadType=media|multipart   new content
  POST   /upload/drive/v3/files?uploadType=resumable  (PATCH .../files/ID for an
                                            update) -> Location with upload_id;
  PUT    <Location>                         Content-Range chunks (non-final ones
                                            >= 256 KiB, kept in 256 KiB multiples)
                                            -> 308 + Range, the last -> 200 + file

Like Drive, names are not unique in a folder: each create makes a new file.
Trash is a flag (a trashed folder hides its descendants from `trashed = false`).
File contents live on disk under FAKE_DATA; metadata is in memory.

Debug endpoints (no auth, not logged, not counted by FAKE_FAIL):
  GET /__fake/health   -> "ok"
  GET /__fake/files    -> [["/dir/name", size], ...] of every non-trashed,
                          non-folder file, by its first-parent path

usage: fake_gdrive.py [PORT]          (PORT 0 or absent: any free port)
Environment:
  PORT             listen port (the argument wins)
  FAKE_TOKEN       the accepted bearer token (default "fake-token")
  FAKE_REFRESH_TOKEN  if set, the only refresh token /token accepts
  FAKE_DATA        directory for file contents (default: a new temp dir)
  FAKE_PAGE_SIZE   most files per files.list page (default 1000)
  FAKE_PUBLIC_BASE base of the resumable-upload Location URLs
                   (default https://www.googleapis.com, as the real service)
  FAKE_FAIL        "N:CODE[,N:CODE...]": the Nth request (1-based, counting
                   every request) fails once with HTTP CODE (429 adds
                   Retry-After: 0; 403 is Drive's "User rate limit exceeded.")

Every request is logged to stderr as one line "METHOD /path?query" (flushed);
error responses add a line "  -> CODE message".
"""
import base64
import hashlib
import json
import mmap
import os
import re
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
RESUMABLE_UNIT = 256 * 1024
FOLDER = "application/vnd.google-apps.folder"
TOKEN = os.environ.get("FAKE_TOKEN", "fake-token")
REFRESH_TOKEN = os.environ.get("FAKE_REFRESH_TOKEN", "")
DATA = os.environ.get("FAKE_DATA") or tempfile.mkdtemp(prefix="fake-gdrive-")
PAGE_SIZE = max(1, int(os.environ.get("FAKE_PAGE_SIZE") or 1000))
PUBLIC_BASE = (os.environ.get("FAKE_PUBLIC_BASE") or "https://www.googleapis.com").rstrip("/")


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
FILES = {}  # id -> file dict
PAGES = {}  # page token -> {"files": [...], "pos": n, "size": n, "fields": spec}
UPLOADS = {}  # resumable upload id -> session dict
SEQ = [0]

BLOBS = os.path.join(DATA, "blobs")
TMP = os.path.join(DATA, "tmp")
for _d in (BLOBS, TMP):
    os.makedirs(_d, exist_ok=True)


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def now_rfc3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def new_id():
    SEQ[0] += 1
    # Drive ids are ~33 chars of [A-Za-z0-9_-]; a sequence keeps creation order visible
    return "1F%05d%s" % (SEQ[0], secrets.token_urlsafe(20)[:26])


ROOT_ID = "0AFakeRootFolderUk9PVA"
_t0 = now_rfc3339()
FILES[ROOT_ID] = {
    "id": ROOT_ID,
    "name": "My Drive",
    "mimeType": FOLDER,
    "parents": [],
    "createdTime": _t0,
    "modifiedTime": _t0,
    "trashed": False,
    "version": 1,
}


class ApiError(Exception):
    def __init__(self, code, body, headers=()):
        super().__init__(code)
        self.code = code
        self.body = body
        self.headers = list(headers)


def gerror(code, message, reason, location=None, location_type="parameter", domain="global", status=None):
    e = {"domain": domain, "reason": reason, "message": message}
    if location:
        e.update({"location": location, "locationType": location_type})
    body = {"error": {"code": code, "message": message, "errors": [e]}}
    if status:
        body["error"]["status"] = status
    return ApiError(code, body)


def file_not_found(fid, location="fileId"):
    return gerror(404, "File not found: %s." % fid, "notFound", location)


def invalid(message, location=None):
    return gerror(400, message, "invalid" if location else "badRequest", location)


# ------------------------------------------------------------------ queries
TOKEN_RE = re.compile(
    r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<=|>=|=|<|>)|(?P<paren>[()])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<num>-?\d+))"""
)


def tokenize(q):
    out = []
    pos = 0
    q = q.strip()
    while pos < len(q):
        m = TOKEN_RE.match(q, pos)
        if not m or m.end() == pos:
            raise ValueError("bad query near %r" % q[pos: pos + 20])
        pos = m.end()
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "str":
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        out.append((kind, val))
        while pos < len(q) and q[pos].isspace():
            pos += 1
    return out


class Parser:
    """Drive's search grammar, the parts a client uses:
    expr := and ('or' and)* ; and := unary ('and' unary)* ;
    unary := 'not' unary | '(' expr ')' | term"""

    def __init__(self, q):
        self.toks = tokenize(q)
        self.i = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, kind=None, val=None):
        k, v = self.peek()
        if k is None or (kind and k != kind) or (val and (v or "").lower() != val):
            raise ValueError("expected %s %s at token %d, got %r" % (kind, val, self.i, v))
        self.i += 1
        return v

    def parse(self):
        e = self.expr()
        if self.i != len(self.toks):
            raise ValueError("trailing tokens: %r" % (self.toks[self.i:],))
        return e

    def expr(self):
        e = self.and_()
        while self.peek()[0] == "word" and self.peek()[1].lower() == "or":
            self.i += 1
            r = self.and_()
            e = (lambda a, b: lambda f: a(f) or b(f))(e, r)
        return e

    def and_(self):
        e = self.unary()
        while self.peek()[0] == "word" and self.peek()[1].lower() == "and":
            self.i += 1
            r = self.unary()
            e = (lambda a, b: lambda f: a(f) and b(f))(e, r)
        return e

    def unary(self):
        k, v = self.peek()
        if k == "word" and v.lower() == "not":
            self.i += 1
            inner = self.unary()
            return lambda f: not inner(f)
        if k == "paren" and v == "(":
            self.i += 1
            e = self.expr()
            self.take("paren", ")")
            return e
        return self.term()

    def term(self):
        k, v = self.peek()
        if k == "str":  # 'X' in parents
            self.i += 1
            self.take("word", "in")
            coll = self.take("word")
            if coll != "parents":
                raise ValueError("unsupported collection %r" % coll)
            pid = ROOT_ID if v == "root" else v
            return lambda f: pid in f["parents"]
        field = self.take("word")
        k2, op = self.peek()
        if k2 == "word" and op.lower() == "contains":
            self.i += 1
            val = self.take("str")
            if field == "name":  # Drive: prefix match on names
                return lambda f: f["name"].startswith(val)
            if field == "mimeType":
                return lambda f: val in f["mimeType"]
            raise ValueError("unsupported contains on %r" % field)
        op = self.take("op")
        k3, val = self.peek()
        self.i += 1
        if field in ("name", "mimeType"):
            if k3 != "str" or op not in ("=", "!="):
                raise ValueError("bad %s term" % field)
            if op == "=":
                return lambda f: f[field] == val
            return lambda f: f[field] != val
        if field == "trashed":
            if k3 != "word" or val.lower() not in ("true", "false") or op not in ("=", "!="):
                raise ValueError("bad trashed term")
            want = (val.lower() == "true") == (op == "=")
            return lambda f: is_trashed(f) == want
        if field in ("modifiedTime", "createdTime"):
            if k3 != "str":
                raise ValueError("bad time term")
            cmp = {
                "=": lambda a, b: a == b,
                "!=": lambda a, b: a != b,
                "<": lambda a, b: a < b,
                "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b,
            }[op]
            key = norm_time(val)
            return lambda f: cmp(norm_time(f[field]), key)
        raise ValueError("unsupported field %r" % field)


def norm_time(s):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", s)
    if not m:
        raise ValueError("bad time %r" % s)
    return m.group(1) + (m.group(2) or ".0").ljust(7, "0")


def is_trashed(f):
    """Trashed explicitly or through a trashed ancestor folder."""
    seen = set()
    while f is not None and f["id"] not in seen:
        if f.get("trashed"):
            return True
        seen.add(f["id"])
        f = FILES.get(f["parents"][0]) if f["parents"] else None
    return False


# ------------------------------------------------------------------ fields
def split_top(spec):
    out, depth, cur = [], 0, ""
    for ch in spec:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_fields(spec):
    """'a,b(c,d),e/f' -> {"a": None, "b": {"c": None, "d": None}, "e": {"f": None}}; None = all."""
    if spec is None or spec.strip() in ("", "*"):
        return None
    out = {}
    for part in split_top(spec):
        if "(" in part and part.endswith(")"):
            name, inner = part[:-1].split("(", 1)
            out[name.strip()] = parse_fields(inner)
        elif "/" in part:
            name, rest = part.split("/", 1)
            out[name] = parse_fields(rest)
        else:
            out[part] = None
    return out


def select(obj, fields):
    if fields is None:
        return obj
    if isinstance(obj, list):
        return [select(o, fields) for o in obj]
    out = {}
    for k, sub in fields.items():
        if k in obj:
            out[k] = select(obj[k], sub) if sub is not None and isinstance(obj[k], (dict, list)) else obj[k]
    return out


DEFAULT_FILE_FIELDS = parse_fields("kind,id,name,mimeType")
DEFAULT_LIST_FIELDS = parse_fields("kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)")


def resource(f):
    r = {
        "kind": "drive#file",
        "id": f["id"],
        "name": f["name"],
        "mimeType": f["mimeType"],
        "parents": list(f["parents"]),
        "createdTime": f["createdTime"],
        "modifiedTime": f["modifiedTime"],
        "trashed": is_trashed(f),
        "explicitlyTrashed": bool(f.get("trashed")),
        "version": str(f["version"]),
        "starred": False,
        "ownedByMe": True,
        "capabilities": {"canEdit": True, "canDelete": True, "canTrash": True, "canDownload": True},
    }
    if f["mimeType"] != FOLDER:
        r.update(
            {
                "size": str(f["size"]),
                "quotaBytesUsed": str(f["size"]),
                "md5Checksum": f["md5"],
                "sha256Checksum": f["sha256"],
                "headRevisionId": "0B%x" % f["version"],
                "originalFilename": f["name"],
            }
        )
    if not f["parents"]:
        r.pop("parents")
    return r


def lookup(fid):
    if fid == "root":
        fid = ROOT_ID
    f = FILES.get(fid)
    if f is None:
        raise file_not_found(fid)
    return f


def check_parents(parents, location="parents"):
    out = []
    for p in parents:
        pid = ROOT_ID if p == "root" else p
        f = FILES.get(pid)
        if f is None:
            raise file_not_found(p, location)
        if f["mimeType"] != FOLDER:
            raise gerror(400, "The specified parent is not a folder.", "invalidParent", location)
        out.append(pid)
    return out


def descendants(fid):
    out, todo = [], [fid]
    while todo:
        cur = todo.pop()
        for f in FILES.values():
            if cur in f["parents"]:
                out.append(f["id"])
                if f["mimeType"] == FOLDER:
                    todo.append(f["id"])
    return out


def unlink_all(paths):
    for p in paths:
        if p:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


class Hashes:
    def __init__(self):
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256()
        self.n = 0

    def update(self, b):
        self.md5.update(b)
        self.sha256.update(b)
        self.n += len(b)


def new_file(meta, media_type=None):
    """A new file record from request metadata (caller holds LOCK, puts content)."""
    if not isinstance(meta, dict):
        raise invalid("Invalid JSON metadata")
    parents = meta.get("parents") or [ROOT_ID]
    if not isinstance(parents, list):
        raise invalid("Invalid value for parents", "parents")
    parents = check_parents(parents)
    t = now_rfc3339()
    return {
        "id": new_id(),
        "name": meta.get("name") or "Untitled",
        "mimeType": meta.get("mimeType") or media_type or "application/octet-stream",
        "parents": parents,
        "createdTime": meta.get("createdTime") or t,
        "modifiedTime": meta.get("modifiedTime") or t,
        "trashed": bool(meta.get("trashed")),
        "version": 1,
        "size": 0,
        "blob": None,
        "md5": hashlib.md5().hexdigest(),
        "sha256": hashlib.sha256().hexdigest(),
    }


def set_content(f, tmp_path, hashes):
    """Point f at new content (caller holds LOCK); returns the old blob to unlink."""
    SEQ[0] += 1
    blob = os.path.join(BLOBS, "%08d" % SEQ[0])
    os.replace(tmp_path, blob)
    old = f.get("blob")
    f.update({"blob": blob, "size": hashes.n, "md5": hashes.md5.hexdigest(), "sha256": hashes.sha256.hexdigest()})
    return old


def apply_metadata(f, meta, query):
    """files.update's metadata part (caller holds LOCK)."""
    if not isinstance(meta, dict):
        raise invalid("Invalid JSON metadata")
    if "name" in meta:
        f["name"] = meta["name"]
    if "mimeType" in meta and meta["mimeType"]:
        f["mimeType"] = meta["mimeType"]
    if "trashed" in meta:
        f["trashed"] = bool(meta["trashed"])
    if "modifiedTime" in meta:
        f["modifiedTime"] = meta["modifiedTime"]
    if "parents" in meta:
        raise gerror(
            403,
            "The parents field is not directly writable in update requests. Use the addParents and removeParents parameters instead.",
            "fieldNotWritable",
        )
    add = query.get("addParents", [""])[0].split(",") if "addParents" in query else meta.get("addParents") or []
    rem = query.get("removeParents", [""])[0].split(",") if "removeParents" in query else meta.get("removeParents") or []
    add = check_parents([p for p in add if p], "addParents")
    for p in rem:
        pid = ROOT_ID if p == "root" else p
        if pid in f["parents"]:
            f["parents"].remove(pid)
    for pid in add:
        if pid == f["id"] or pid in descendants(f["id"]):
            raise gerror(403, "A folder cannot be its own descendant.", "cannotAddParent")
        if pid not in f["parents"]:
            f["parents"].append(pid)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-gdrive/1"

    def log_message(self, fmt, *args):
        pass

    def log_error(self, fmt, *args):
        log("  !! " + (fmt % args))

    # ------------------------------------------------------------ plumbing
    def reply(self, code, body=b"", ctype="application/json; charset=UTF-8", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
            ctype = "text/plain; charset=UTF-8"
        if code >= 400:
            try:
                msg = json.loads(body)["error"]
                msg = msg["message"] if isinstance(msg, dict) else msg
            except Exception:
                msg = body[:200].decode("utf-8", "replace")
            log("  -> %d %s" % (code, msg))
        self.send_response(code, "Resume Incomplete" if code == 308 else None)
        if body or code not in (204, 308):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body_chunks(self):
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
                raise invalid("request body too large")
        return bytes(buf)

    def json_body(self):
        b = self.small_body()
        if not b.strip():
            return {}
        try:
            v = json.loads(b)
        except ValueError:
            raise invalid("Invalid JSON payload received.")
        if not isinstance(v, dict):
            raise invalid("Invalid JSON payload received.")
        return v

    def body_to_tmp(self, hashes=None):
        fd, tmp = tempfile.mkstemp(dir=TMP)
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in self.body_chunks():
                    out.write(piece)
                    if hashes is not None:
                        hashes.update(piece)
        except BaseException:
            unlink_all([tmp])
            raise
        return tmp

    # ------------------------------------------------------------ dispatch
    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def dispatch(self):
        u = urlsplit(self.path)
        path, self.query = u.path, parse_qs(u.query, keep_blank_values=True)
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
            if path in ("/token", "/oauth2/v4/token"):
                if self.command != "POST":
                    raise gerror(405, "Method Not Allowed", "methodNotAllowed")
                return self.token()
            auth = self.headers.get("Authorization", "")
            if auth != "Bearer " + TOKEN:
                e = gerror(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                    "cookie or other valid authentication credential.",
                    "authError",
                    "Authorization",
                    "header",
                    status="UNAUTHENTICATED",
                )
                e.headers.append(("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"'))
                raise e
            self.route(path)
        except ApiError as e:
            self.discard_body()
            self.reply(e.code, e.body, headers=e.headers)
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def route(self, path):
        m, c = self.command, None
        parts = path.strip("/").split("/")
        if parts[:3] == ["drive", "v3", "files"]:
            rest = parts[3:]
            if not rest:
                c = {"GET": self.list_files, "POST": self.create_metadata}.get(m)
            elif len(rest) == 1:
                c = {"GET": self.get_file, "PATCH": self.update_metadata, "DELETE": self.delete_file}.get(m)
            elif len(rest) == 2 and rest[1] == "copy" and m == "POST":
                c = self.copy_file
        elif parts[:4] == ["upload", "drive", "v3", "files"]:
            rest = parts[4:]
            if len(rest) <= 1:
                c = self.upload
        elif parts == ["drive", "v3", "about"] and m == "GET":
            c = self.about
        if c is None:
            raise gerror(404, "Not Found: %s %s" % (m, path), "notFound")
        fid = parts[3] if parts[:3] == ["drive", "v3", "files"] and len(parts) > 3 else None
        if parts[:4] == ["upload", "drive", "v3", "files"] and len(parts) > 4:
            fid = parts[4]
        c(fid)

    def injected(self, code, n):
        log("  (FAKE_FAIL: request %d fails with %d)" % (n, code))
        if code == 429:
            e = gerror(429, "Rate Limit Exceeded", "rateLimitExceeded", domain="usageLimits")
            return self.reply(429, e.body, headers=[("Retry-After", "0")])
        if code == 403:
            e = gerror(403, "User rate limit exceeded.", "userRateLimitExceeded", domain="usageLimits")
            return self.reply(403, e.body)
        if code == 401:
            e = gerror(401, "Invalid Credentials", "authError", "Authorization", "header", status="UNAUTHENTICATED")
            return self.reply(401, e.body)
        e = gerror(code, "Backend Error" if code >= 500 else "Injected failure", "backendError")
        return self.reply(code, e.body)

    def debug(self, path):
        self.discard_body()
        if path == "/__fake/health":
            return self.reply(200, "ok")
        if path == "/__fake/files":
            with LOCK:
                out = sorted(
                    [full_path(f), f["size"]]
                    for f in FILES.values()
                    if f["mimeType"] != FOLDER and not is_trashed(f)
                )
            return self.reply(200, out)
        return self.reply(404, "no such debug endpoint")

    def fields(self, default):
        spec = self.query.get("fields", [None])[0]
        return default if spec is None else parse_fields(spec)

    # ------------------------------------------------------------ endpoints
    def token(self):
        params = parse_qs(self.small_body().decode("utf-8", "replace"))
        for k, v in self.query.items():
            params.setdefault(k, v)
        grant = params.get("grant_type", [""])[0]
        if grant == "refresh_token":
            rt = params.get("refresh_token", [""])[0]
            if not params.get("client_id", [""])[0] or not params.get("client_secret", [""])[0]:
                raise ApiError(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
            if not rt or (REFRESH_TOKEN and rt != REFRESH_TOKEN):
                raise ApiError(400, {"error": "invalid_grant", "error_description": "Bad Request"})
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            if not valid_jwt(params.get("assertion", [""])[0]):
                raise ApiError(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        else:
            raise ApiError(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: " + grant})
        self.reply(
            200,
            {
                "access_token": TOKEN,
                "expires_in": 3599,
                "scope": "https://www.googleapis.com/auth/drive",
                "token_type": "Bearer",
            },
        )

    def about(self, _fid):
        self.discard_body()
        with LOCK:
            used = sum(f.get("size", 0) for f in FILES.values())
        about = {
            "kind": "drive#about",
            "user": {
                "kind": "drive#user",
                "displayName": "Fake User",
                "emailAddress": "fake@example.invalid",
                "me": True,
                "permissionId": "00000000000000000000",
            },
            "storageQuota": {"limit": str(15 * 1024**3), "usage": str(used), "usageInDrive": str(used)},
        }
        self.reply(200, select(about, self.fields(parse_fields("kind,user,storageQuota"))))

    def list_files(self, _fid):
        self.discard_body()
        fields = self.fields(DEFAULT_LIST_FIELDS)
        token = self.query.get("pageToken", [""])[0]
        with LOCK:
            if token:
                page = PAGES.get(token)
                if page is None:
                    raise invalid("Invalid Value", "pageToken")
            else:
                q = self.query.get("q", [""])[0]
                try:
                    pred = Parser(q).parse() if q.strip() else (lambda f: True)
                except (ValueError, KeyError) as e:
                    log("  query %r: %s" % (q, e))
                    raise invalid("Invalid Value", "q")
                try:
                    size = int(self.query.get("pageSize", ["100"])[0])
                except ValueError:
                    raise invalid("Invalid value for pageSize", "pageSize")
                if not 1 <= size <= 1000:
                    raise invalid("Invalid value '%d'. Values must be within the range: [1, 1000]" % size, "pageSize")
                hits = [f for f in FILES.values() if f["id"] != ROOT_ID and pred(f)]
                order_files(hits, self.query.get("orderBy", [""])[0])
                page = {"files": [resource(f) for f in hits], "pos": 0, "size": min(size, PAGE_SIZE)}
                token = secrets.token_urlsafe(18)
                PAGES[token] = page
            out = page["files"][page["pos"]: page["pos"] + page["size"]]
            page["pos"] += len(out)
            more = page["pos"] < len(page["files"])
            if not more:
                PAGES.pop(token, None)
        resp = {"kind": "drive#fileList", "incompleteSearch": False, "files": out}
        if more:
            resp["nextPageToken"] = token
        self.reply(200, select(resp, fields))

    def get_file(self, fid):
        self.discard_body()
        alt = self.query.get("alt", ["json"])[0]
        with LOCK:
            f = lookup(fid)
            r = resource(f)
            blob, size = f.get("blob"), f.get("size", 0)
            fh = open(blob, "rb") if alt == "media" and blob else None
        if alt != "media":
            return self.reply(200, select(r, self.fields(DEFAULT_FILE_FIELDS)))
        if r["mimeType"] == FOLDER or r["mimeType"].startswith("application/vnd.google-apps."):
            raise gerror(
                403,
                "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
                "fileNotDownloadable",
                "alt",
            )
        code, start, length = 200, 0, size
        headers = [("ETag", '"%s"' % r["md5Checksum"]), ("X-Goog-Hash", "md5=" + base64.b64encode(bytes.fromhex(r["md5Checksum"])).decode())]
        rng = self.headers.get("Range")
        if rng:
            rr = parse_range(rng, size)
            if rr is None:
                if fh:
                    fh.close()
                raise ApiError(
                    416,
                    {"error": {"code": 416, "message": "Request range not satisfiable"}},
                    [("Content-Range", "bytes */%d" % size)],
                )
            if rr != "ignore":
                start, end = rr
                code, length = 206, end - start + 1
                headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        self.send_response(code)
        self.send_header("Content-Type", r["mimeType"])
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if fh is None:
            return
        with fh:
            fh.seek(start)
            left = length
            while left:
                b = fh.read(min(left, IO_CHUNK))
                if not b:
                    break
                self.wfile.write(b)
                left -= len(b)

    def create_metadata(self, _fid):
        meta = self.json_body()
        with LOCK:
            f = new_file(meta)
            FILES[f["id"]] = f
            r = resource(f)
        self.reply(200, select(r, self.fields(DEFAULT_FILE_FIELDS)))

    def update_metadata(self, fid):
        meta = self.json_body()
        with LOCK:
            f = lookup(fid)
            if f["id"] == ROOT_ID:
                raise gerror(403, "The user does not have sufficient permissions for this file.", "insufficientFilePermissions")
            apply_metadata(f, meta, self.query)
            f["modifiedTime"] = meta.get("modifiedTime") or now_rfc3339()
            f["version"] += 1
            r = resource(f)
        self.reply(200, select(r, self.fields(DEFAULT_FILE_FIELDS)))

    def delete_file(self, fid):
        self.discard_body()
        with LOCK:
            f = lookup(fid)
            if f["id"] == ROOT_ID:
                raise gerror(403, "The user does not have sufficient permissions for this file.", "insufficientFilePermissions")
            gone = [f["id"]] + descendants(f["id"])
            blobs = [FILES.pop(i).get("blob") for i in gone]
        unlink_all(blobs)
        self.reply(204, b"")

    def copy_file(self, fid):
        meta = self.json_body()
        with LOCK:
            src = lookup(fid)
            if src["mimeType"] == FOLDER:
                raise gerror(403, "This file cannot be copied by the user.", "cannotCopyFile")
            m = {"name": meta.get("name") or "Copy of " + src["name"], "mimeType": src["mimeType"]}
            m["parents"] = meta.get("parents") or list(src["parents"])
            f = new_file(m)
            fd, tmp = tempfile.mkstemp(dir=TMP)
            os.close(fd)
            h = Hashes()
            if src.get("blob"):
                shutil.copyfile(src["blob"], tmp)
            h.n, h.md5, h.sha256 = src["size"], hashlib.md5(), hashlib.sha256()
            set_content(f, tmp, h)
            f["md5"], f["sha256"] = src["md5"], src["sha256"]
            FILES[f["id"]] = f
            r = resource(f)
        self.reply(200, select(r, self.fields(DEFAULT_FILE_FIELDS)))

    # ------------------------------------------------------------ uploads
    def upload(self, fid):
        kind = self.query.get("uploadType", [""])[0]
        if self.command == "PUT" and "upload_id" in self.query:
            return self.resumable_put(self.query["upload_id"][0])
        if self.command not in ("POST", "PATCH") or (self.command == "PATCH") != (fid is not None):
            raise gerror(404, "Not Found", "notFound")
        if kind == "multipart":
            return self.upload_multipart(fid)
        if kind == "media":
            return self.upload_media(fid)
        if kind == "resumable":
            return self.resumable_start(fid)
        raise invalid("Invalid Value", "uploadType")

    def finish_upload(self, fid, meta, tmp, hashes, media_type):
        """Create (fid None) or update a file with new content; reply with it."""
        old_blob = None
        with LOCK:
            if fid is None:
                f = new_file(meta, media_type)
                FILES[f["id"]] = f
            else:
                f = lookup(fid)
                if f["mimeType"] == FOLDER:
                    raise gerror(400, "A folder cannot have content.", "invalidContent")
                apply_metadata(f, meta, self.query)
                f["modifiedTime"] = meta.get("modifiedTime") or now_rfc3339()
                f["version"] += 1
            old_blob = set_content(f, tmp, hashes)
            r = resource(f)
        unlink_all([old_blob])
        self.reply(200, select(r, self.fields(DEFAULT_FILE_FIELDS)))

    def upload_media(self, fid):
        h = Hashes()
        tmp = self.body_to_tmp(h)
        try:
            media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip() or None
            self.finish_upload(fid, {}, tmp, h, media_type)
            tmp = None
        finally:
            unlink_all([tmp])

    def upload_multipart(self, fid):
        ctype = self.headers.get("Content-Type") or ""
        mt = ctype.split(";")[0].strip().lower()
        bm = re.search(r'boundary="?([^";]+)"?', ctype)
        if mt not in ("multipart/related", "multipart/form-data") or not bm:
            raise invalid("Bad content type. Please use multipart.")
        raw = self.body_to_tmp()
        out = None
        try:
            meta, media_type, out, h = split_multipart(raw, bm.group(1).encode())
            self.finish_upload(fid, meta, out, h, media_type)
            out = None
        finally:
            unlink_all([raw, out])

    def resumable_start(self, fid):
        meta = self.json_body()
        with LOCK:
            if fid is not None:
                lookup(fid)
            else:
                new_file(meta)  # validate parents now, as Drive does
            total = self.headers.get("X-Upload-Content-Length")
            uid = "ABPt" + secrets.token_urlsafe(30)
            fd, tmp = tempfile.mkstemp(dir=TMP)
            os.close(fd)
            UPLOADS[uid] = {
                "fid": fid,
                "meta": meta,
                "query": {k: v for k, v in self.query.items() if k in ("addParents", "removeParents", "fields")},
                "media_type": self.headers.get("X-Upload-Content-Type"),
                "total": int(total) if total else None,
                "tmp": tmp,
                "hashes": Hashes(),
                "busy": False,
            }
        path = "/upload/drive/v3/files" + ("/" + fid if fid else "")
        loc = "%s%s?uploadType=resumable&upload_id=%s" % (PUBLIC_BASE, path, uid)
        self.reply(200, b"", headers=[("Location", loc), ("X-GUploader-UploadID", uid)])

    def resumable_put(self, uid):
        with LOCK:
            s = UPLOADS.get(uid)
            if s is None:
                raise gerror(404, "Upload session not found or expired.", "notFound")
            if s["busy"]:
                raise gerror(400, "Concurrent upload requests for the same session.", "badRequest")
            s["busy"] = True
        try:
            self.resumable_chunk(uid, s)
        finally:
            s["busy"] = False

    def resumable_chunk(self, uid, s):
        have = s["hashes"].n
        cr = (self.headers.get("Content-Range") or "").strip()
        length = int(self.headers.get("Content-Length") or 0)
        total = s["total"]
        if cr:
            m = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\*|\d+)", cr)
            if not m:
                raise invalid("Failed to parse Content-Range header.")
            if m.group(4) != "*":
                if total is not None and total != int(m.group(4)):
                    raise invalid("Content-Range total does not match the upload's length.")
                total = s["total"] = int(m.group(4))
            if m.group(1) == "*":  # status query (or an empty final request)
                self.discard_body()
                if total is not None and have == total:
                    return self.resumable_done(uid, s)
                return self.reply(308, b"", headers=[("Range", "bytes=0-%d" % (have - 1))] if have else [])
            start, end = int(m.group(2)), int(m.group(3))
            if end - start + 1 != length:
                raise invalid("Content-Range length does not match Content-Length.")
        else:
            start = have
            total = s["total"] = have + length
        if start != have:
            # Drive answers an out-of-step chunk with what it has, so the client can resume
            self.discard_body()
            return self.reply(308, b"", headers=[("Range", "bytes=0-%d" % (have - 1))] if have else [])
        final = total is not None and start + length >= total
        if not final and length < RESUMABLE_UNIT:
            raise invalid(
                "Invalid request.  The number of bytes uploaded is required to be equal or greater than 262144, "
                "except for the final request (it's recommended to be the exact multiple of 262144).  The "
                "received request contained %d bytes, which does not meet this requirement." % length
            )
        keep = length if final else length - length % RESUMABLE_UNIT
        with open(s["tmp"], "ab") as out:
            n = 0
            for piece in self.body_chunks():
                if n < keep:
                    part = piece[: keep - n]
                    out.write(part)
                    s["hashes"].update(part)
                n += len(piece)
        have = s["hashes"].n
        if total is not None and have >= total:
            return self.resumable_done(uid, s)
        self.reply(308, b"", headers=[("Range", "bytes=0-%d" % (have - 1))] if have else [])

    def resumable_done(self, uid, s):
        with LOCK:
            UPLOADS.pop(uid, None)
        self.query = dict(s["query"])
        self.finish_upload(s["fid"], s["meta"], s["tmp"], s["hashes"], s["media_type"])


def split_multipart(raw, boundary):
    """Split a two-part upload body stored in file raw: returns (metadata dict,
    media type, temp file with the media content, Hashes)."""
    delim = b"--" + boundary
    with open(raw, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise invalid("Malformed multipart body.")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            parts = []
            pos = mm.find(delim)
            if pos < 0:
                raise invalid("Malformed multipart body.")
            while True:
                pos += len(delim)
                if mm[pos: pos + 2] == b"--":
                    break
                if mm[pos: pos + 2] == b"\r\n":
                    pos += 2
                hend = mm.find(b"\r\n\r\n", pos)
                if hend < 0:
                    raise invalid("Malformed multipart body.")
                headers = {}
                for line in mm[pos:hend].decode("utf-8", "replace").split("\r\n"):
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                cstart = hend + 4
                nxt = mm.find(b"\r\n" + delim, cstart)
                if nxt < 0:
                    raise invalid("Malformed multipart body: no closing boundary.")
                parts.append((headers, cstart, nxt))
                pos = nxt + 2
            if len(parts) != 2:
                raise invalid("Multipart upload needs exactly 2 parts (metadata, media), got %d." % len(parts))
            (mh, ms, me), (dh, ds, de) = parts
            try:
                meta = json.loads(mm[ms:me]) if me > ms else {}
            except ValueError:
                raise invalid("Invalid JSON in the metadata part.")
            media_type = (dh.get("content-type") or "").split(";")[0].strip() or None
            fd, out = tempfile.mkstemp(dir=TMP)
            h = Hashes()
            with os.fdopen(fd, "wb") as o:
                p = ds
                while p < de:
                    b = mm[p: min(de, p + IO_CHUNK)]
                    o.write(b)
                    h.update(b)
                    p += len(b)
            return meta, media_type, out, h
        finally:
            mm.close()


def order_files(files, spec):
    keys = [k.strip() for k in spec.split(",") if k.strip()] if spec else ["folder", "name"]
    for key in reversed(keys):
        name, _, direction = key.partition(" ")
        rev = direction.strip().lower() == "desc"
        if name == "folder":
            files.sort(key=lambda f: f["mimeType"] != FOLDER, reverse=rev)
        elif name in ("name", "name_natural"):
            files.sort(key=lambda f: f["name"], reverse=rev)
        elif name in ("modifiedTime", "createdTime", "modifiedByMeTime", "viewedByMeTime", "recency"):
            field = name if name in ("modifiedTime", "createdTime") else "modifiedTime"
            files.sort(key=lambda f: (norm_time(f[field]), f["id"]), reverse=rev)
        elif name == "quotaBytesUsed":
            files.sort(key=lambda f: f.get("size", 0), reverse=rev)
        else:
            raise invalid("Invalid Value", "orderBy")


def full_path(f):
    names, seen = [], set()
    while f is not None and f["id"] != ROOT_ID and f["id"] not in seen:
        seen.add(f["id"])
        names.append(f["name"])
        f = FILES.get(f["parents"][0]) if f["parents"] else None
    if f is None:
        names.append("?")
    return "/" + "/".join(reversed(names))


def b64url_json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def valid_jwt(assertion):
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        return False
    try:
        header, claims = b64url_json(parts[0]), b64url_json(parts[1])
    except (ValueError, TypeError):
        return False
    return isinstance(header, dict) and "alg" in header and isinstance(claims, dict) and "iss" in claims


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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT") or 0)
    srv = Server(("127.0.0.1", port), Handler)
    log("fake-gdrive listening on 127.0.0.1:%d data=%s" % (srv.server_address[1], DATA))
    srv.serve_forever()


if __name__ == "__main__":
    main()
