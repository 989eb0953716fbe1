#!/usr/bin/env python3
"""Crash soak test for dupr's resume of interrupted backups (not run in CI).

The loop of crates/dupr-cli/tests/crash.rs, for as many seeded points as you
like (Python 3 stdlib only):

    python3 bench/soak.py --points 300 --seed 7 --size-mb 80
    python3 bench/soak.py --seed 7 --point 123 --keep     # replay one point

Every point is independent and reproducible from (seed, point) alone:

  1. a fresh copy of the seeded tree (--size-mb: small files in 16 dirs, big
     multi-volume files, symlinks, an empty dir, a hard-link pair, odd names);
  2. for an incremental point, a clean full backup first, then big changes;
  3. the backup (`full`, `incremental` or automatic; --volsize 2..5;
     PASSPHRASE or --no-encryption) killed with SIGKILL when its trigger
     fires: a seeded delay, the walk started, volume N begun / half written /
     stored, N records in the partial manifest, the signature file written or
     stored, the manifest stored, or blocked (a FIFO where dupr creates its
     staged file) opening volume N, the signature upload (plain) or the
     manifest upload;
  4. maybe a change to the source, before or after the end of the stored
     volumes (so the next run resumes or starts over), maybe a second kill;
  5. the same command again, which must exit 0 and say what it did (resuming
     after volume K / starting over / cannot be resumed) as predicted from
     what the kill left; a resume must not rewrite volumes 1..K;
  6. collection-status clean with the expected sets, restore == source,
     verify --compare-data clean, restore of the previous set == the previous
     tree, a clean cache; every --dup-every points stock duplicity restores it.

Failures are logged (--log, default soak-SEED.log) with the seed, point,
trigger, change, what the kill left, and the runs' stderr; their work dirs
are kept. The exit status is 1 if any point failed.
"""
import argparse
import glob
import hashlib
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PASS = "soak passphrase \u00e4 9"
MIB = 1 << 20
TRIGGERS = [
    "delay", "walkstart", "voltmp", "midvol", "volstored", "records",
    "sigwrite", "sigstored", "manifeststored", "fifovol", "fifosig",
    "fifomanifest",
]


class PointFailed(Exception):
    pass


# ------------------------------------------------------------------ tree

def text_bytes(n, salt):
    line = ("line %d: the quick brown fox jumps over the lazy dog\n" % salt).encode()
    return (line * (n // len(line) + 1))[:n]


def build_tree(root, seed, size_mb):
    """A deterministic tree of about size_mb MB."""
    r = random.Random("tree:%d:%d" % (seed, size_mb))
    os.makedirs(root)
    total = size_mb * MIB
    big = [("a-big.bin", 0.15), ("d07/m-big.bin", 0.2), ("z-big.bin", 0.27)]
    small_budget = int(total * 0.3)
    ndirs = 16
    per_dir = max(5, small_budget // ndirs // 12_000)
    for d in range(ndirs):
        dd = os.path.join(root, "d%02d" % d)
        os.makedirs(dd)
        for f in range(per_dir):
            n = r.randint(200, 24_000)
            data = r.randbytes(n) if f % 3 == 0 else text_bytes(n, d * 1000 + f)
            with open(os.path.join(dd, "f%03d.txt" % f), "wb") as fh:
                fh.write(data)
    for name, share in big:
        with open(os.path.join(root, name), "wb") as fh:
            fh.write(r.randbytes(int(total * share)))
    with open(os.path.join(root, "q-text.txt"), "wb") as fh:
        fh.write(text_bytes(int(total * 0.06), 7))
    os.makedirs(os.path.join(root, "zz-tail"))
    for f in range(30):
        with open(os.path.join(root, "zz-tail", "t%02d.txt" % f), "wb") as fh:
            fh.write(text_bytes(r.randint(200, 8000), 90_000 + f))
    # A few awkward entries.
    m = os.path.join(root, "m-misc")
    os.makedirs(os.path.join(m, "empty-dir"))
    os.symlink("../q-text.txt", os.path.join(m, "link"))
    os.symlink("does/not/exist", os.path.join(m, "dangling"))
    with open(os.path.join(m, "hard-1"), "wb") as fh:
        fh.write(b"shared\n")
    os.link(os.path.join(m, "hard-1"), os.path.join(m, "hard-2"))
    p = os.path.join(m, "private")
    with open(p, "wb") as fh:
        fh.write(b"secret\n")
    os.chmod(p, 0o600)
    with open(os.path.join(m, "unicod\u00e9 \u540d\u524d 'q'.txt"), "wb") as fh:
        fh.write(b"name\n")
    with open(os.path.join(m, "new\nline"), "wb") as fh:
        fh.write(b"newline in name\n")


def rel_files(src):
    """Editable regular files (relative, bytes), sorted."""
    out = []
    for dirpath, dirs, files in os.walk(src):
        for f in files:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, src)
            if rel.startswith("m-misc") or not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            out.append(os.fsencode(rel))
    return sorted(out)


def evolve(src, r, big):
    """Changes for the incremental; returns about how many bytes it stores."""
    nbytes = 0
    if big:
        d = r.randrange(16)
        n = r.randint(4, 9) * MIB
        with open(os.path.join(src, "d%02d" % d, "new.bin"), "wb") as fh:
            fh.write(r.randbytes(n))
        nbytes += n
        zb = os.path.join(src, "z-big.bin")
        size = os.path.getsize(zb)
        ln = min(size // 2, r.randint(1, 3) * MIB)
        with open(zb, "r+b") as fh:
            fh.seek(r.randrange(max(1, size - ln)))
            fh.write(r.randbytes(ln))
        nbytes += ln + MIB // 4
    small = [f for f in rel_files(src) if f.endswith(b".txt")]
    for f in r.sample(small, 4):
        with open(os.path.join(src, os.fsdecode(f)), "ab") as fh:
            fh.write(b"appended\n")
    for f in r.sample(small, 2):
        touch(os.path.join(src, os.fsdecode(f)))
    for f in r.sample(small, 2):
        os.unlink(os.path.join(src, os.fsdecode(f)))
    d = r.randrange(16)
    for i in range(6):
        n = r.randint(100, 30_000)
        with open(os.path.join(src, "d%02d" % d, "added-%d.txt" % i), "wb") as fh:
            fh.write(text_bytes(n, i))
        nbytes += n
    return nbytes + 200_000


def touch(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))


def index_of(rel):
    """A path (bytes) as duplicity orders it: a tuple of components."""
    if rel in (b".", b""):
        return ()
    return tuple(rel.split(b"/"))


def tree_diffs(a, b):
    """Differences between trees a and b (types, modes, contents, link
    targets, whole-second mtimes except symlinks'), at most 20."""
    def listing(root):
        out = {}
        for dirpath, dirs, files in os.walk(root):
            for n in dirs + files:
                full = os.path.join(dirpath, n)
                out[os.path.relpath(full, root)] = full
        out["."] = root
        return out
    la, lb = listing(a), listing(b)
    diffs = ["only in %s: %r" % (a, k) for k in sorted(set(la) - set(lb))]
    diffs += ["only in %s: %r" % (b, k) for k in sorted(set(lb) - set(la))]
    for k in sorted(set(la) & set(lb)):
        sa, sb = os.lstat(la[k]), os.lstat(lb[k])
        if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
            diffs.append("%r: type" % k)
            continue
        if stat.S_ISLNK(sa.st_mode):
            if os.readlink(la[k]) != os.readlink(lb[k]):
                diffs.append("%r: link target" % k)
            continue
        if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
            diffs.append("%r: mode %o vs %o" % (k, stat.S_IMODE(sa.st_mode), stat.S_IMODE(sb.st_mode)))
        if int(sa.st_mtime) != int(sb.st_mtime):
            diffs.append("%r: mtime %d vs %d" % (k, sa.st_mtime, sb.st_mtime))
        if stat.S_ISREG(sa.st_mode):
            if sa.st_size != sb.st_size:
                diffs.append("%r: size %d vs %d" % (k, sa.st_size, sb.st_size))
            elif file_hash(la[k]) != file_hash(lb[k]):
                diffs.append("%r: content" % k)
        if len(diffs) >= 20:
            break
    return diffs


def file_hash(p):
    h = hashlib.sha1()
    with open(p, "rb") as fh:
        for blk in iter(lambda: fh.read(1 << 20), b""):
            h.update(blk)
    return h.digest()


# ------------------------------------------------------------------ names

TIME = r"\d{8}T\d{6}Z"
SET_RE = re.compile(r"^duplicity-(full|full-signatures|inc|new-signatures)\.(%s)(?:\.to\.(%s))?\." % (TIME, TIME))


def set_of(name):
    m = SET_RE.match(name)
    if not m:
        return None
    kind, t1, t2 = m.groups()
    if kind in ("full", "full-signatures") and t2 is None:
        return "full." + t1
    if kind in ("inc", "new-signatures") and t2:
        return "inc.%s.to.%s" % (t1, t2)
    return None


def set_end(s):
    return s[-16:]


def prefix(s):
    return "duplicity-" + s


def sig_prefix(s):
    if s.startswith("inc."):
        return "duplicity-new-signatures." + s[4:]
    return "duplicity-full-signatures." + s[5:]


def listdir(d):
    try:
        return set(os.listdir(d))
    except FileNotFoundError:
        return set()


def unquote(field):
    if len(field) >= 2 and field[:1] == b'"' and field[-1:] == b'"':
        inner, out, i = field[1:-1], bytearray(), 0
        while i < len(inner):
            if inner[i:i + 2] == b"\\x" and i + 3 < len(inner):
                out.append(int(inner[i + 2:i + 4], 16))
                i += 4
            else:
                out.append(inner[i])
                i += 1
        return bytes(out)
    return field


def part_records(text):
    """[(volume number, EndingPath index)] of the complete records."""
    recs, cur = [], None
    for line in text.split(b"\n"):
        w = line.split()
        if line.startswith(b"Volume "):
            cur = {"num": int(line[7:].rstrip(b":")), "end": None, "hash": False}
            recs.append(cur)
        elif cur is not None and w and w[0] == b"EndingPath":
            cur["end"] = index_of(unquote(w[1]))
        elif cur is not None and w and w[0] == b"Hash" and len(w) == 3 and len(w[2]) == 40:
            cur["hash"] = True
    return [(r["num"], r["end"]) for r in recs if r["hash"] and r["end"] is not None]


# ------------------------------------------------------------------ runner

class Point:
    def __init__(self, args, seed, idx, work):
        self.a = args
        self.seed, self.idx = seed, idx
        self.r = random.Random("point:%d:%d" % (seed, idx))
        self.dir = work
        self.src = os.path.join(work, "src")
        self.target = os.path.join(work, "target")
        self.url = "file://" + self.target
        self.ad = os.path.join(work, "ad")
        self.cache = os.path.join(self.ad, "soak")
        self.enc = self.r.random() < 0.75
        self.ext = "gpg" if self.enc else "gz"
        self.notes = []
        self.logs = []

    # dupr -------------------------------------------------------------
    def env(self):
        e = {k: v for k, v in os.environ.items()
             if k not in ("PASSPHRASE", "SIGN_PASSPHRASE", "GNUPGHOME", "FTP_PASSWORD")}
        e["LC_ALL"] = "C.UTF-8"
        if self.enc:
            e["PASSPHRASE"] = PASS
        return e

    def argv(self, args):
        base = [self.a.dupr, "--archive-dir", self.ad, "--name", "soak"]
        if not self.enc:
            base.append("--no-encryption")
        return base + list(args)

    def run(self, args, check=True):
        p = subprocess.run(self.argv(args), env=self.env(), capture_output=True, cwd=self.dir)
        err = p.stderr.decode("utf-8", "replace")
        self.logs.append("$ dupr %s -> %d\n%s" % (" ".join(args), p.returncode, err))
        if check and p.returncode != 0:
            raise PointFailed("dupr %s exited %d:\n%s%s" % (
                " ".join(args), p.returncode, p.stdout.decode("utf-8", "replace")[-2000:], err))
        return p

    def backup_args(self, cmd, volsize):
        words = {"full": ["full"], "incr": ["incremental"], "auto": []}[cmd]
        return words + ["--volsize", str(volsize), "--no-print-statistics", self.src, self.url]

    # state ------------------------------------------------------------
    def complete_sets(self):
        return {set_of(n) for n in listdir(self.target)
                if n.startswith("duplicity-") and ".manifest" in n and set_of(n)}

    def inspect(self, known):
        """What the killed run left of the newest set not in known."""
        tn, cn = listdir(self.target), listdir(self.cache)
        cands = {set_of(n) for n in tn if n.startswith("duplicity-")}
        cands |= {set_of(n) for n in cn if n.endswith(".manifest.part")}
        cands = {c for c in cands if c and c not in known}
        if not cands:
            return None
        s = max(cands, key=lambda c: (set_end(c), c))
        pre = prefix(s)
        left = {"set": s, "complete": any(n.startswith(pre + ".manifest") for n in tn),
                "stored": 0, "until": None,
                "journal": (".dupr-journal.%s.manifest" % pre) in cn,
                "sig_stored": any(n.startswith(sig_prefix(s)) for n in tn),
                "vols": sum(1 for n in tn if n.startswith(pre + ".vol"))}
        part = os.path.join(self.cache, pre + ".manifest.part")
        left["part"] = os.path.exists(part)
        if left["part"]:
            with open(part, "rb") as fh:
                text = fh.read()
            for i, (num, end) in enumerate(part_records(text)):
                if num != i + 1 or "%s.vol%d.difftar.%s" % (pre, num, self.ext) not in tn:
                    break
                left["stored"], left["until"] = num, end
        return left

    @staticmethod
    def expect(left, hits):
        if left is None or left["complete"] or not left["part"]:
            return ("fresh", 0)
        if left["stored"] == 0 or not left["journal"]:
            return ("giveup", 0)
        if hits:
            return ("startover", 0)
        return ("resume", left["stored"])

    def current_set(self, pid):
        cn = listdir(self.cache)
        if ".dupr-filelist.%d" % pid not in cn:
            return None
        parts = [set_of(n) for n in cn if n.endswith(".manifest.part")]
        parts = [p for p in parts if p]
        return max(parts, key=lambda c: (set_end(c), c)) if parts else None

    def fifo_path(self, trig, n, s, pid):
        if trig == "fifovol":
            name = "%s.vol%d.difftar.%s" % (prefix(s), n, self.ext)
        elif trig == "fifosig":
            name = "%s.sigtar.%s" % (sig_prefix(s), self.ext)
        else:
            name = "%s.manifest%s" % (prefix(s), ".gpg" if self.enc else "")
        return os.path.join(self.target, ".dupr-tmp.%d.%s" % (pid, name))

    @staticmethod
    def blocked(pid):
        for t in glob.glob("/proc/%d/task/*/wchan" % pid):
            try:
                with open(t) as fh:
                    w = fh.read()
            except OSError:
                continue
            if "wait_for_partner" in w or "fifo_open" in w:
                return True
        return False

    def run_and_kill(self, args, trig, n, delay_ms):
        """Run dupr; SIGKILL it when the trigger fires. Returns what fired,
        or None if it finished first."""
        before = listdir(self.target)
        log = open(os.path.join(self.dir, "run-%d.err" % len(self.logs)), "wb")
        p = subprocess.Popen(self.argv(args), env=self.env(), stdout=subprocess.DEVNULL,
                             stderr=log, cwd=self.dir)
        pid, t0 = p.pid, time.monotonic()
        tmp = ".dupr-tmp.%d." % pid
        fifo, fired = None, None
        while True:
            if p.poll() is not None:
                break
            if time.monotonic() - t0 > 300:
                p.kill()
                raise PointFailed("dupr ran 5 minutes under trigger %s" % trig)
            tn = lambda: listdir(self.target)
            if trig == "delay":
                if time.monotonic() - t0 >= delay_ms / 1000:
                    fired = "after %dms" % ((time.monotonic() - t0) * 1000)
            elif trig == "walkstart":
                if ".dupr-filelist.%d" % pid in listdir(self.cache):
                    fired = "filelist created"
            elif trig in ("voltmp", "midvol"):
                for x in tn():
                    if x.startswith(tmp) and (".vol%d.difftar" % n) in x:
                        try:
                            sz = os.path.getsize(os.path.join(self.target, x))
                        except OSError:
                            sz = 0
                        if trig == "voltmp" or sz > 0:
                            fired = "%s (%d bytes)" % (x, sz)
            elif trig == "volstored":
                for x in tn() - before:
                    if x.startswith("duplicity-") and (".vol%d.difftar" % n) in x:
                        fired = x
            elif trig == "records":
                s = self.current_set(pid)
                if s:
                    try:
                        with open(os.path.join(self.cache, prefix(s) + ".manifest.part"), "rb") as fh:
                            k = len(part_records(fh.read()))
                    except OSError:
                        k = 0
                    if k >= n:
                        fired = "%d records" % k
            elif trig == "sigwrite":
                for x in tn():
                    if x.startswith(tmp) and "signatures" in x:
                        try:
                            if os.path.getsize(os.path.join(self.target, x)) > 0:
                                fired = x
                        except OSError:
                            pass
                for x in listdir(self.cache):
                    if ".sigtar.part" in x:
                        try:
                            st = os.stat(os.path.join(self.cache, x))
                        except OSError:
                            continue
                        if st.st_size > 0 and st.st_mtime >= time.time() - (time.monotonic() - t0):
                            fired = x
            elif trig in ("sigstored", "manifeststored"):
                want = "signatures" if trig == "sigstored" else ".manifest"
                for x in tn() - before:
                    if x.startswith("duplicity-") and want in x:
                        fired = x
            else:  # fifo*
                s = self.current_set(pid)
                if s is not None:
                    if fifo and fifo[0] == s:
                        if self.blocked(pid):
                            fired = "blocked on " + os.path.basename(fifo[1])
                    else:
                        os.kill(pid, signal.SIGSTOP)
                        if fifo:
                            try:
                                os.unlink(fifo[1])
                            except OSError:
                                pass
                        path = self.fifo_path(trig, n, s, pid)
                        passed = trig == "fifovol" and any(
                            ("%s.vol%d.difftar.%s" % (prefix(s), k, self.ext)) in x
                            for x in tn() for k in range(n, n + 64))
                        ok = False
                        if not passed:
                            try:
                                os.mkfifo(path, 0o600)
                                ok = True
                            except OSError:
                                pass
                        os.kill(pid, signal.SIGCONT)
                        if ok:
                            fifo = (s, path)
                        else:
                            fired = "missed the fifo (passed)"
            if fired:
                p.kill()
                p.wait()
                break
            time.sleep(0.001)
        log.close()
        if fifo:
            try:
                os.unlink(fifo[1])
            except OSError:
                pass
            if fired:
                with open(fifo[1], "wb") as fh:
                    fh.write(os.urandom(3000))
        with open(log.name, "rb") as fh:
            self.logs.append("$ dupr %s (killed: %s)\n%s" % (" ".join(args), fired, fh.read().decode("utf-8", "replace")))
        if not fired and p.returncode != 0:
            raise PointFailed("run exited %d before its trigger fired" % p.returncode)
        return fired

    # changes ----------------------------------------------------------
    def mutate(self, cls, until):
        """A change before ('early') or after ('late') the end of the stored
        volumes; returns (description, hits-the-stored-volumes or None)."""
        if cls == "none":
            return "no change", None
        early = cls == "early"
        le = lambda ix: until is not None and ix <= until
        parent = lambda f: f.rsplit(b"/", 1)[0] if b"/" in f else b"."
        op = self.r.choice(["touch", "append", "add", "delete"])

        def fits(f):
            fi, pi = index_of(f), index_of(parent(f))
            if op in ("touch", "append", "delete") and early:
                return le(fi)
            if op in ("touch", "append"):
                return not le(fi)
            if op == "add" and early:
                return le(pi)
            return not le(pi) and pi != ()
        cands = [f for f in rel_files(self.src) if fits(f)]
        if not cands:
            return "%s %s: no candidate, no change" % (cls, op), None
        f = self.r.choice(cands)
        path = os.path.join(self.src, os.fsdecode(f))
        dir_mtime = lambda: int(os.stat(os.path.join(self.src, os.fsdecode(parent(f)))).st_mtime)
        dir_before = dir_mtime()
        if op == "touch":
            touch(path)
            touched = [index_of(f)]
        elif op == "append":
            with open(path, "ab") as fh:
                fh.write(b"late change\n")
            touched = [index_of(f)]
        elif op == "delete":
            os.unlink(path)
            touched = [index_of(parent(f)), index_of(f)]
        else:
            d = parent(f)
            new = b"soak-add.txt" if d == b"." else d + b"/soak-add.txt"
            with open(os.path.join(self.src, os.fsdecode(new)), "wb") as fh:
                fh.write(text_bytes(5000, 3))
            touched = [index_of(d), index_of(new)]
        # dupr keeps whole-second directory mtimes: a directory changed within
        # the same second is unchanged to it (and to its tar entry).
        if op in ("add", "delete") and dir_mtime() == dir_before:
            touched = touched[1:]
        hits = any(le(t) for t in touched)
        return "%s %s %s" % ("early" if hits else "late", op, f.decode("utf-8", "replace")), hits

    # checks -----------------------------------------------------------
    def restore(self, dest, t=None):
        args = ["restore"] + (["-t", t] if t else []) + [self.url, dest]
        self.run(args)

    def check(self, prev, snaps, dup):
        st = self.run(["collection-status", self.url]).stdout.decode("utf-8", "replace")
        if "No orphaned or incomplete backup sets found." not in st:
            raise PointFailed("collection-status reports problems:\n" + st)
        left = [n for n in listdir(self.cache)
                if ".part" in n or n.startswith(".dupr-") or n == "lockfile"]
        if left:
            raise PointFailed("left in the cache: %r" % left)
        r = os.path.join(self.dir, "restore")
        self.restore(r)
        d = tree_diffs(self.src, r)
        if d:
            raise PointFailed("restore of the latest time differs: %r" % d)
        shutil.rmtree(r)
        v = self.run(["verify", "--compare-data", self.url, self.src], check=False)
        if v.returncode != 0 or b" 0 difference(s)" not in v.stdout:
            raise PointFailed("verify --compare-data: %d\n%s%s" % (
                v.returncode, v.stdout.decode("utf-8", "replace"), v.stderr.decode("utf-8", "replace")))
        for t, tree in ([prev] if prev else []) + snaps:
            r = os.path.join(self.dir, "restore-" + t)
            self.restore(r, t)
            d = tree_diffs(tree, r)
            if d:
                raise PointFailed("restore -t %s differs from the tree then: %r" % (t, d))
            shutil.rmtree(r)
        if dup:
            r = os.path.join(self.dir, "restore-dup")
            cmd = [self.a.duplicity, "restore", "--archive-dir", os.path.join(self.dir, "dup-ad")]
            if not self.enc:
                cmd.append("--no-encryption")
            gh = os.path.join(self.dir, "gnupg")
            os.makedirs(gh, mode=0o700, exist_ok=True)
            env = dict(self.env(), GNUPGHOME=gh, PYTHONWARNINGS="ignore")
            p = subprocess.run(cmd + [self.url, r], env=env, capture_output=True)
            subprocess.run(["gpgconf", "--homedir", gh, "--kill", "gpg-agent"], capture_output=True)
            if p.returncode != 0:
                raise PointFailed("duplicity restore failed %d:\n%s" % (p.returncode, p.stderr.decode("utf-8", "replace")[-3000:]))
            d = tree_diffs(self.src, r)
            if d:
                raise PointFailed("duplicity restore differs: %r" % d)

    # the point ----------------------------------------------------------
    def play(self, template):
        r = self.r
        shutil.copytree(template, self.src, symlinks=True)
        cmd = r.choice(["full", "incr", "auto", "incr", "auto"])
        triggers = [t for t in self.a.triggers if not (t == "fifosig" and self.enc)]
        trig = r.choice(triggers)
        cls = r.choice(["none", "early", "late", "late"])
        second = r.choice(triggers) if r.random() < 0.2 else None
        inc = cmd != "full"
        volsize = r.randint(2, 3) if inc else r.randint(2, 5)
        self.desc = "enc=%s cmd=%s volsize=%d trigger=%s change=%s second=%s" % (
            "gpg" if self.enc else "plain", cmd, volsize, trig, cls, second)
        known, prev = set(), None
        if inc:
            self.run(self.backup_args("full", 4))
            known = self.complete_sets()
            prev_tree = os.path.join(self.dir, "prev")
            shutil.copytree(self.src, prev_tree, symlinks=True)
            prev = (set_end(max(known)), prev_tree)
            nbytes = evolve(self.src, r, True)
        else:
            nbytes = sum(os.path.getsize(os.path.join(self.src, os.fsdecode(f))) for f in rel_files(self.src))
        est = max(1, nbytes // (volsize * MIB - 66 * 1024))

        def pick_n(after, share):
            lo = after + (2 if trig in ("fifovol", "voltmp") else 1)
            return r.randint(lo, max(lo, est * share // 100))
        n = pick_n(0, 35 if second else 60)
        delay = r.randint(20, min(600, 120 + 30 * est))
        args = self.backup_args(cmd, volsize)
        fired = self.run_and_kill(args, trig, n, delay)
        self.notes.append("trigger %s n=%d delay=%dms: %s" % (trig, n, delay, fired or "NOT interrupted"))
        left = self.inspect(known)
        self.notes.append("left %r" % left)
        snaps = []
        if left and left["complete"] and cls != "none":
            snap = os.path.join(self.dir, "snap")
            shutil.copytree(self.src, snap, symlinks=True)
            snaps.append((set_end(left["set"]), snap))
        until = left["until"] if left and not left["complete"] else None
        mdesc, hits = self.mutate(cls, until)
        self.notes.append("change: " + mdesc)
        exp = self.expect(left, hits)
        completed = {left["set"]} if left and left["complete"] else set()
        if second:
            after = exp[1] if exp[0] == "resume" else 0
            n2 = pick_n(after, 90)
            fired2 = self.run_and_kill(args, second, n2, r.randint(20, 600))
            self.notes.append("second trigger %s n=%d: %s" % (second, n2, fired2 or "NOT interrupted"))
            left2 = self.inspect(known | completed)
            self.notes.append("rerun left %r" % left2)
            exp = self.expect(left2, None)
        # The set to resume and its stored volumes.
        ids = None
        if exp[0] == "resume":
            cur = self.inspect(known | self.complete_sets())
            ids = (cur["set"], [self.vol_id(cur["set"], k) for k in range(1, exp[1] + 1)])
        self.notes.append("expect %s %d" % exp)
        p = self.run(args)
        err = p.stderr.decode("utf-8", "replace")
        resuming = "Resuming the interrupted backup after volume" in err
        over = "starting it over" in err
        gave_up = "it cannot be resumed" in err
        ok = {"fresh": not resuming and not over and not gave_up,
              "giveup": gave_up and not resuming,
              "resume": ("Resuming the interrupted backup after volume %d " % exp[1]) in err and not over and not gave_up,
              "startover": over and not gave_up}[exp[0]]
        if not ok:
            raise PointFailed("expected %s after the kill; stderr:\n%s" % (exp, err))
        if ids:
            s, before = ids
            after = [self.vol_id(s, k) for k in range(1, len(before) + 1)]
            if after != before:
                raise PointFailed("resumed volumes were rewritten: %r -> %r" % (before, after))
        new = sorted(self.complete_sets() - known, key=set_end)
        want_full = cmd == "full" or not inc
        if not new or new[-1].startswith("full.") != want_full or not (1 + len(completed) <= len(new) <= 3):
            raise PointFailed("unexpected new sets %r (want the last %s)" % (new, "full" if want_full else "inc"))
        dup = bool(self.a.duplicity) and self.a.dup_every > 0 and self.idx % self.a.dup_every == 0
        self.check(prev if inc else None, snaps, dup)
        return exp

    def vol_id(self, s, k):
        st = os.stat(os.path.join(self.target, "%s.vol%d.difftar.%s" % (prefix(s), k, self.ext)))
        return (k, st.st_ino, st.st_mtime_ns, st.st_size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size-mb", type=int, default=80)
    ap.add_argument("--point", type=int, help="run only this point (replay)")
    ap.add_argument("--first", type=int, default=0, help="first point number")
    ap.add_argument("--triggers", default=",".join(TRIGGERS),
                    help="comma-separated subset of: " + ",".join(TRIGGERS))
    ap.add_argument("--dupr", default=os.path.join(REPO, "target", "release", "dupr"))
    ap.add_argument("--duplicity", default=os.environ.get("DUPR_DUPLICITY3", ""),
                    help="stock duplicity 3.2.1 for restore checks (default $DUPR_DUPLICITY3)")
    ap.add_argument("--dup-every", type=int, default=10)
    ap.add_argument("--work", help="work directory (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep passing points' dirs")
    ap.add_argument("--log")
    a = ap.parse_args()
    a.triggers = [t for t in a.triggers.split(",") if t]
    bad = set(a.triggers) - set(TRIGGERS)
    if bad:
        ap.error("unknown trigger(s) %s" % ",".join(sorted(bad)))
    if not os.access(a.dupr, os.X_OK):
        ap.error("no dupr binary at %s (cargo build --release -p dupr-cli)" % a.dupr)
    work = a.work or tempfile.mkdtemp(prefix="dupr-soak-")
    os.makedirs(work, exist_ok=True)
    log = open(a.log or "soak-%d.log" % a.seed, "a")
    template = os.path.join(work, "template-%d-%d" % (a.seed, a.size_mb))
    if not os.path.exists(template):
        build_tree(template, a.seed, a.size_mb)
    points = [a.point] if a.point is not None else range(a.first, a.first + a.points)
    fails, outcomes, t_all = [], {}, time.monotonic()

    def say(line):
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()
    say("soak: seed %d, %d point(s), %d MB tree, dupr %s, work %s" % (
        a.seed, len(points), a.size_mb, a.dupr, work))
    for i in points:
        d = os.path.join(work, "p%05d" % i)
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        pt = Point(a, a.seed, i, d)
        t0 = time.monotonic()
        try:
            exp = pt.play(template)
            outcomes[exp[0]] = outcomes.get(exp[0], 0) + 1
            say("point %5d ok   %5.1fs %s | %s -> %s" % (
                i, time.monotonic() - t0, pt.desc, pt.notes[0], exp[0] + (" %d" % exp[1] if exp[1] else "")))
            if not a.keep:
                shutil.rmtree(d)
        except Exception as e:  # noqa: BLE001 -- every failure is logged
            fails.append(i)
            detail = e.args[0] if isinstance(e, PointFailed) else traceback.format_exc()
            say("point %5d FAIL %5.1fs %s | %s" % (i, time.monotonic() - t0, getattr(pt, "desc", "?"),
                                                   str(detail).splitlines()[0] if str(detail) else ""))
            log.write("---- FAILURE seed=%d point=%d (replay: %s --seed %d --size-mb %d --point %d --keep)\n" % (
                a.seed, i, sys.argv[0], a.seed, a.size_mb, i))
            log.write("%s\nnotes:\n  %s\ndetail:\n%s\nruns:\n%s\n---- kept in %s\n" % (
                getattr(pt, "desc", "?"), "\n  ".join(pt.notes), detail, "\n".join(pt.logs), d))
            log.flush()
    say("soak: %d/%d passed (%s), %d failed%s; %.0fs" % (
        len(points) - len(fails), len(points),
        ", ".join("%s %d" % kv for kv in sorted(outcomes.items())),
        len(fails), (" (points %s)" % ",".join(map(str, fails))) if fails else "",
        time.monotonic() - t_all))
    if not a.work and not fails and not a.keep:
        shutil.rmtree(work)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
