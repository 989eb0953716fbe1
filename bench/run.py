#!/usr/bin/env python3
"""Benchmark dupr against stock duplicity 3.2.1 (Python 3 stdlib only).

Usage (from the repository root):

    python3 bench/run.py [--scale F] [--rounds N] [--mode no-encryption|symmetric]
                         [--tools dupr,duplicity3] [--steps full,incr-noop,...]
                         [--work DIR] [--dupr PATH] [--duplicity PATH]
                         [--million] [--markdown BENCHMARKS.md]

Each round:
  * copies the pristine dataset (made once by /work/shared/bench/gen_dataset.py
    and kept under WORK/dataset/) to WORK/round/src and reads it once to warm
    the page cache (dropping the page cache is not possible here);
  * runs every step for every tool, interleaved per step (duplicity first,
    then dupr), each tool with its own target and its own archive dir (cache).
    The full backup starts from an empty cache; every later step uses the
    cache the earlier steps left, as it would in real life;
  * mutates the source with mutate_dataset.py after the no-change incremental,
    so both tools back up the very same trees.

Every step is timed with time.perf_counter (wall seconds) and its peak RSS is
os.wait4's ru_maxrss of the tool's own process (which includes children it
waited for, e.g. gpg). A failing step is recorded as "n/a" with the first line
of its error and never stops the other steps. Restores are verified (file
count and total size of the restored tree; single files byte for byte)
against the tree the tool last backed up successfully.

Nothing outside --work is ever deleted; --work must be empty, absent, or a
directory this script made before (it holds a .dupr-bench marker).
"""
import argparse
import datetime
import filecmp
import json
import os
import platform
import resource
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = "/work/shared"
GEN = os.path.join(SHARED, "bench", "gen_dataset.py")
MUTATE = os.path.join(SHARED, "bench", "mutate_dataset.py")
SHARED_README = os.path.join(SHARED, "README.md")
MARKER = ".dupr-bench"
PASSPHRASE = "dupr-bench-passphrase"

# (key, label; the label's start matches the row of /work/shared/README.md's table)
STEPS = [
    ("full", "full backup"),
    ("incr-noop", "incremental, no change"),
    ("incr-mutate", "incremental after the mutate step"),
    ("restore-all", "restore all"),
    ("restore-small", "restore one small file"),
    ("restore-large", "restore one large file"),
    ("list", "list files"),
]
STEP_KEYS = [k for k, _ in STEPS]
LABEL = dict(STEPS)
LARGE_FILE = os.path.join("large", "big-text.log")  # 300 MB at scale 1; 1 MiB appended by mutate

TOOL_ORDER = ["duplicity3", "dupr"]  # interleaving order within a step
TOOL_TITLE = {"duplicity3": "duplicity 3.2.1", "dupr": "dupr"}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- safety

class Work:
    """The work directory; the only place anything is ever deleted."""

    def __init__(self, path):
        self.root = os.path.realpath(path)
        if self.root in ("/", os.path.realpath(os.path.expanduser("~")), REPO):
            sys.exit(f"refusing to use {self.root} as --work")
        if os.path.exists(self.root):
            if not os.path.isdir(self.root):
                sys.exit(f"--work {self.root} is not a directory")
            if os.listdir(self.root) and not os.path.exists(os.path.join(self.root, MARKER)):
                sys.exit(f"--work {self.root} is not empty and was not made by bench/run.py "
                         f"(no {MARKER}); pick another directory")
        os.makedirs(self.root, exist_ok=True)
        open(os.path.join(self.root, MARKER), "a").close()

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def inside(self, p):
        rp = os.path.realpath(p)
        return rp != self.root and rp.startswith(self.root + os.sep)

    def rm(self, p):
        """Remove p (file or tree) if it exists; p must lie strictly inside the work dir."""
        if not os.path.lexists(p):
            return
        # Check the path itself, not where a symlink leads: we remove the link, not its target.
        parent = os.path.realpath(os.path.dirname(os.path.abspath(p)))
        full = os.path.join(parent, os.path.basename(p))
        if not (full.startswith(self.root + os.sep) and parent.startswith(self.root)):
            raise RuntimeError(f"refusing to delete {p}: outside {self.root}")
        if os.path.islink(full) or not os.path.isdir(full):
            os.unlink(full)
            return

        def onerror(func, path, exc):
            # a restored tree may contain read-only dirs: make them writable and retry
            try:
                os.chmod(os.path.dirname(path), 0o700)
                if os.path.isdir(path) and not os.path.islink(path):
                    os.chmod(path, 0o700)
                    shutil.rmtree(path)
                else:
                    func(path)
            except OSError:
                raise exc[1]
        shutil.rmtree(full, onerror=onerror)

    def fresh(self, *parts):
        p = self.path(*parts)
        self.rm(p)
        os.makedirs(p)
        return p


# ---------------------------------------------------------------- running tools

class Result:
    def __init__(self, **kw):
        self.ok = False
        self.wall = None
        self.cpu = None
        self.rss_mib = None
        self.error = None
        self.note = None
        self.__dict__.update(kw)

    def to_json(self):
        return dict(self.__dict__)


def first_error_line(path_err, path_out, rc):
    for path in (path_err, path_out):
        if path and os.path.exists(path):
            with open(path, "rb") as f:
                lines = [l.strip() for l in f.read().decode("utf-8", "replace").splitlines()]
            lines = [l for l in lines if l]
            # duplicity prints a traceback; its last line is the error itself
            if lines and lines[0].startswith("Traceback"):
                return lines[-1][:300]
            if lines:
                return lines[0][:300]
    return f"exit status {rc}"


def run_timed(argv, env, out_path, err_path, timeout):
    """Run argv as a direct child; return (rc, wall s, user+sys s, peak RSS MiB)."""
    with open(out_path, "wb") if out_path != os.devnull else open(os.devnull, "wb") as so, \
            open(err_path, "wb") as se:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se, env=env,
                             start_new_session=True)
        killed = []

        def kill():
            killed.append(True)
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the session we made for this child only
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = rc = os.waitstatus_to_exitcode(status)
    if killed:
        rc = "timeout"
    return rc, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0


class Tool:
    def __init__(self, name, exe, mode):
        self.name = name
        self.exe = exe
        self.mode = mode

    def crypto(self):
        return ["--no-encryption"] if self.mode == "no-encryption" else []

    def env(self):
        env = dict(os.environ)
        env.pop("DUPR_ARCHIVE_DIR", None)
        if self.mode == "symmetric":
            env["PASSPHRASE"] = PASSPHRASE
        else:
            env.pop("PASSPHRASE", None)
        env["LC_ALL"] = "C.UTF-8"
        return env

    def argv(self, command, cache, *rest, extra=()):
        return [self.exe, command, *self.crypto(), "--archive-dir", cache, *extra, *rest]


# ---------------------------------------------------------------- trees

def file_kind(name):
    for key, kind in ((".difftar", "volumes"), (".sigtar", "signatures"),
                      (".manifest", "manifests")):
        if key in name:
            return kind
    return "other"


def dir_bytes(root, by_kind=None):
    """Total size of the regular files below root (what a target stores);
    with by_kind, also added up per kind of file."""
    n = 0
    for dp, _, fs in os.walk(root):
        for f in fs:
            try:
                st = os.lstat(os.path.join(dp, f))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                n += st.st_size
                if by_kind is not None:
                    k = file_kind(f)
                    by_kind[k] = by_kind.get(k, 0) + st.st_size
    return n


def tree_stats(root):
    """(regular files, dirs, symlinks, total regular bytes) below root (root itself excluded)."""
    files = dirs = links = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                links += 1
            else:
                dirs += 1
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            if os.path.islink(os.path.join(dirpath, f)):
                links += 1
            else:
                files += 1
                size += st.st_size
    return {"files": files, "dirs": dirs, "symlinks": links, "bytes": size}


def warm(root):
    buf = bytearray(1 << 20)
    n = 0
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                continue
            with open(p, "rb", buffering=0) as fh:
                while True:
                    k = fh.readinto(buf)
                    if not k:
                        break
                    n += k
    return n


def pick_small_file(tree):
    code = os.path.join(tree, "code")
    cands = []
    for dirpath, dirnames, filenames in os.walk(code):
        dirnames.sort()
        for f in sorted(filenames):
            cands.append(os.path.relpath(os.path.join(dirpath, f), tree))
    cands = [c for c in cands if not os.path.basename(c).startswith("added_")]
    return cands[len(cands) // 2] if cands else None


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024.0


# ---------------------------------------------------------------- the benchmark

def journaled(path):
    """Whether the ext4 holding `path` has a journal (jbd2 lists it)."""
    src = subprocess.run(["findmnt", "-no", "SOURCE", "--target", path],
                         capture_output=True, text=True).stdout.strip()
    dev = os.path.basename(src)
    try:
        return any(e.startswith(dev + "-") for e in os.listdir("/proc/fs/jbd2"))
    except OSError:
        return False


class FreshFs:
    """A new ext4 file system in a sparse image, loop-mounted at `mnt`
    (root only), with a journal only if the file system the image lives on
    has one (so it measures what the other steps run on). Inode tables and
    the journal are written by mkfs, so no lazy-init thread runs beside the
    timed step."""

    def __init__(self, image, mnt, size):
        self.image, self.mnt = image, mnt
        with open(image, "wb") as f:
            f.truncate(size)
        opts = [] if journaled(os.path.dirname(image)) else ["-O", "^has_journal"]
        subprocess.run(["mkfs.ext4", "-q", "-F", *opts,
                        "-E", "lazy_itable_init=0,lazy_journal_init=0", image], check=True)
        os.makedirs(mnt, exist_ok=True)
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True)

    def close(self):
        subprocess.run(["umount", self.mnt], check=True)
        os.unlink(self.image)

class Bench:
    def __init__(self, args, work, tools):
        self.a = args
        self.work = work
        self.tools = tools  # ordered list of Tool
        self.results = []   # dicts: round, step, tool, result
        self.mutated_stats = None
        self.fs_bytes = 1 << 30  # --fresh-fs image size, set from the dataset
        self.logs = work.path("logs")
        os.makedirs(self.logs, exist_ok=True)

    def dataset(self):
        seed = self.a.seed
        name = f"scale{self.a.scale:g}-seed{seed if seed is not None else 'default'}"
        d = self.work.path("dataset", name)
        done = d + ".complete"
        if os.path.exists(done):
            log(f"dataset {d} (cached)")
            return d
        self.work.rm(d)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        cmd = [sys.executable, GEN, d, "--scale", str(self.a.scale)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        log("generating dataset: " + " ".join(cmd))
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        open(done, "w").close()
        log(f"dataset generated in {time.perf_counter() - t0:.1f} s")
        return d

    def record(self, rnd, step, tool, res):
        self.results.append({"round": rnd, "step": step, "tool": tool, **res.to_json()})
        if res.ok:
            extra = f" ({res.note})" if res.note else ""
            log(f"  {step:14s} {tool:10s} {res.wall:8.2f} s  cpu {res.cpu:7.2f} s  "
                f"rss {res.rss_mib:7.1f} MiB{extra}")
        else:
            w = f"{res.wall:.2f} s" if res.wall is not None else "-"
            log(f"  {step:14s} {tool:10s} FAILED after {w}: {res.error}")

    def run_step(self, rnd, step, tool, argv, out=None, check=None):
        base = os.path.join(self.logs, f"r{rnd}-{tool.name}-{step}")
        out_path = out if out is not None else base + ".out"
        err_path = base + ".err"
        try:
            rc, wall, cpu, rss = run_timed(argv, tool.env(), out_path, err_path, self.a.timeout)
        except Exception as e:  # e.g. the executable is missing
            return Result(error=f"{type(e).__name__}: {e}")
        res = Result(wall=wall, cpu=cpu, rss_mib=rss, rc=rc, argv=argv)
        if rc != 0:
            res.error = (f"timeout after {self.a.timeout} s" if rc == "timeout" else
                         first_error_line(err_path, None if out_path == os.devnull else out_path, rc))
            return res
        res.ok = True
        if check:
            try:
                problem = check()
            except Exception as e:
                problem = f"verification raised {type(e).__name__}: {e}"
            if problem:
                res.ok = False
                res.error = "verification failed: " + problem
        return res

    def one_round(self, rnd, pristine, pristine_stats, selected):
        w = self.work
        rdir = w.fresh("round")
        src = os.path.join(rdir, "src")
        log(f"round {rnd}: copying dataset")
        subprocess.run(["cp", "-a", "--reflink=auto", pristine, src], check=True)
        log(f"round {rnd}: warming source ({human_bytes(warm(src))})")
        # warm the tools' own files too (Python imports, the binary)
        for t in self.tools:
            subprocess.run([t.exe, "--version"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=t.env())

        tdirs = {}
        for t in self.tools:
            d = os.path.join(rdir, t.name)
            os.makedirs(os.path.join(d, "target"))
            os.makedirs(os.path.join(d, "cache"))
            tdirs[t.name] = d
        url = {t.name: "file://" + os.path.join(tdirs[t.name], "target") for t in self.tools}
        cache = {t.name: os.path.join(tdirs[t.name], "cache") for t in self.tools}
        # the tree each tool's latest successful backup holds (for verifying restores)
        state = {t.name: None for t in self.tools}
        mutated_stats = None

        # steps needed as setup even when not reported
        need = set(selected)
        if need & {"incr-noop", "incr-mutate", "restore-all", "restore-small",
                   "restore-large", "list"}:
            need.add("full")

        for key in STEP_KEYS:
            if key not in need:
                continue
            if key == "incr-mutate":
                log(f"round {rnd}: mutating source")
                subprocess.run([sys.executable, MUTATE, src], check=True)
                mutated_stats = self.mutated_stats = tree_stats(src)
                warm(src)
            for t in self.tools:
                res = self.do(rnd, key, t, src, url[t.name], cache[t.name], tdirs[t.name],
                              state, pristine, pristine_stats, mutated_stats)
                if key in selected:
                    self.record(rnd, key, t.name, res)
                else:
                    log(f"  (setup) {key} {t.name}: {'ok' if res.ok else res.error}")
        log(f"round {rnd}: cleaning up")
        w.rm(rdir)

    def do(self, rnd, key, t, src, url, cache, tdir, state, pristine, pristine_stats,
           mutated_stats):
        n = t.name
        if key in ("full", "incr-noop", "incr-mutate"):
            cmd = "full" if key == "full" else "incremental"
            tgt = url[len("file://"):]
            kinds_before, kinds_after = {}, {}
            before = dir_bytes(tgt, kinds_before)
            res = self.run_step(rnd, key, t, t.argv(cmd, cache, src, url))
            # Everything the step added to the target: volumes, signatures,
            # manifests (and dupr's lock, which is gone again by now).
            res.bytes_added = dir_bytes(tgt, kinds_after) - before
            res.bytes_by_kind = {k: kinds_after.get(k, 0) - kinds_before.get(k, 0)
                                 for k in sorted(set(kinds_before) | set(kinds_after))}
            if res.ok:
                state[n] = (src, mutated_stats) if key == "incr-mutate" else (pristine, pristine_stats)
            elif key == "incr-mutate" and state[n] is not None:
                res.note = "restores below hold the pre-mutation tree"
            return res

        expected = state[n]
        note = None
        if expected is None:
            note = "no successful backup to verify against"
        elif expected[0] == pristine and mutated_stats is not None:
            note = "verified against the pre-mutation tree (the incremental failed)"

        if key == "restore-all":
            dest = os.path.join(tdir, "restore-all")
            fs = None
            if self.a.fresh_fs:
                # A new ext4 for each restore (made and mounted before the
                # clock starts): neither tool inherits the other's, or the
                # last round's, freed inodes (see below).
                fs = FreshFs(os.path.join(tdir, "restore-fs.img"), dest, self.fs_bytes)
                dest = os.path.join(dest, "tree")

            def check():
                if expected is None:
                    return None
                got = tree_stats(dest)
                want = expected[1]
                if got != want:
                    return f"restored {got}, expected {want}"
                return None
            try:
                res = self.run_step(rnd, key, t, t.argv("restore", cache, url, dest), check=check)
            finally:
                if fs:
                    fs.close()
            if res.ok:
                res.note = res.note or note
            # Kept until the round's clean-up: on ext4 without a journal
            # (this machine kind), inodes freed in the last minute (six
            # while their table blocks are unwritten) are skipped by a
            # linear scan when new ones are allocated, so the tool that
            # restored right after the other's 28,000 files were deleted
            # paid for them (a third of its time in perf).
            return res

        if key in ("restore-small", "restore-large"):
            ref_tree = expected[0] if expected else src
            rel = pick_small_file(ref_tree) if key == "restore-small" else LARGE_FILE
            if rel is None:
                return Result(error="no small file to restore")
            dest = os.path.join(tdir, key + "-" + os.path.basename(rel))

            def check():
                if expected is None:
                    return None
                if not os.path.isfile(dest):
                    return f"{dest} was not restored"
                if not filecmp.cmp(os.path.join(ref_tree, rel), dest, shallow=False):
                    return f"{rel} restored with different contents"
                return None
            res = self.run_step(rnd, key, t, t.argv("restore", cache, url, dest,
                                                    extra=("--path-to-restore", rel)),
                                check=check)
            if res.ok:
                res.note = res.note or note
            res.path = rel
            self.work.rm(dest)
            return res

        if key == "list":
            return self.run_step(rnd, key, t, t.argv("list-current-files", cache, url),
                                 out=os.devnull)
        raise AssertionError(key)

    # ------------------------------------------------------------ million files

    def million(self):
        n = self.a.million_files
        d = self.work.path("million", f"tree-{n}")
        done = d + ".complete"
        if not os.path.exists(done):
            self.work.rm(d)
            log(f"million: creating {n} empty-or-tiny files")
            t0 = time.perf_counter()
            per_dir = 1000
            for i in range(n):
                if i % per_dir == 0:
                    sub = os.path.join(d, f"d{i // (per_dir * 100):03d}", f"s{(i // per_dir) % 100:02d}")
                    os.makedirs(sub, exist_ok=True)
                p = os.path.join(sub, f"f{i:07d}")
                size = (i * 2654435761) % 5  # 0..4: a fifth empty, the rest 1-4 bytes... scaled
                with open(p, "wb") as f:
                    if size:
                        f.write(b"x" * (size * 8))
                os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))
            open(done, "w").close()
            log(f"million: created in {time.perf_counter() - t0:.1f} s")
        st = tree_stats(d)
        warm(d)
        out = []
        dupr = [t for t in self.tools if t.name == "dupr"]
        if not dupr:
            log("million: dupr not among --tools; skipped")
            return {"files": st, "results": out}
        t = dupr[0]
        base = self.work.fresh("million", "run")
        cache = os.path.join(base, "cache")
        url = "file://" + os.path.join(base, "target")
        os.makedirs(cache)
        for key, argv, o in (("full", t.argv("full", cache, d, url), None),
                             ("list", t.argv("list-current-files", cache, url), os.devnull)):
            res = self.run_step(0, "million-" + key, t, argv, out=o)
            out.append({"step": key, **res.to_json()})
            if res.ok:
                log(f"  million {key:5s} dupr {res.wall:8.2f} s  rss {res.rss_mib:7.1f} MiB")
            else:
                log(f"  million {key:5s} dupr FAILED: {res.error}")
        self.work.rm(base)
        return {"files": st, "results": out}


# ---------------------------------------------------------------- machine, targets

def read_targets():
    """Target ratios (and the RSS target) from /work/shared/README.md's table."""
    targets = {}
    try:
        with open(SHARED_README) as f:
            for line in f:
                if not line.startswith("|"):
                    continue
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) < 2:
                    continue
                label, last = cells[0], cells[-1]
                for key, lab in STEPS:
                    if label.startswith(lab):
                        targets[key] = last
                if label.startswith("peak RSS"):
                    targets["rss"] = last
    except OSError:
        pass
    return targets


def parse_le(s):
    """'≤ 0.12' -> 0.12, '≤ 40 MiB' -> 40.0."""
    if not s:
        return None
    t = s.replace("≤", "").replace("<=", "").replace("MiB", "").strip()
    try:
        return float(t)
    except ValueError:
        return None


def machine_info():
    info = {"nproc": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["mem_gib"] = int(line.split()[1]) / (1024 * 1024)
    except OSError:
        pass
    return info


def cpu_busy_seconds():
    """Seconds of CPU time all processes on the machine have used (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def git_commit():
    try:
        h = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"],
                           capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return h + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def tool_version(t):
    try:
        r = subprocess.run([t.exe, "--version"], capture_output=True, text=True, env=t.env(),
                           timeout=60)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception as e:
        return f"? ({e})"


# ---------------------------------------------------------------- report

def code(text):
    """Markdown inline code that survives backticks inside text."""
    text = text.replace("\n", " ")
    if "`" in text:
        return "`` " + text + " ``"
    return "`" + text + "`"


def fmt_s(x):
    if x is None:
        return "n/a"
    return f"{x:.2f}" if x < 100 else f"{x:.1f}"


def fmt_mib(x):
    return "n/a" if x is None else f"{x:.0f}"


def summarize(results, tools, selected, targets):
    rows = []
    names = [t.name for t in tools]
    rounds = sorted({r["round"] for r in results})
    max_rss = {n: None for n in names}
    for key in STEP_KEYS:
        if key not in selected:
            continue
        row = {"step": key, "label": LABEL[key], "target": targets.get(key)}
        errs = {}
        for n in names:
            rs = [r for r in results if r["step"] == key and r["tool"] == n]
            ok = [r for r in rs if r["ok"]]
            row[n + "_s"] = statistics.median([r["wall"] for r in ok]) if ok else None
            row[n + "_rss"] = max([r["rss_mib"] for r in ok]) if ok else None
            row[n + "_ok"] = f"{len(ok)}/{len(rs)}"
            added = [r["bytes_added"] for r in ok if r.get("bytes_added") is not None]
            row[n + "_bytes"] = int(statistics.median(added)) if added else None
            if row[n + "_rss"] is not None:
                max_rss[n] = max(max_rss[n] or 0, row[n + "_rss"])
            bad = [r for r in rs if not r["ok"]]
            if bad:
                errs[n] = bad[0]["error"]
            notes = sorted({r["note"] for r in rs if r.get("note")})
            if notes:
                row[n + "_notes"] = notes
        ratios = []
        for rnd in rounds:
            d = [r for r in results if r["step"] == key and r["round"] == rnd
                 and r["tool"] == "dupr" and r["ok"]]
            p = [r for r in results if r["step"] == key and r["round"] == rnd
                 and r["tool"] == "duplicity3" and r["ok"]]
            if d and p and p[0]["wall"] > 0:
                ratios.append(d[0]["wall"] / p[0]["wall"])
        row["ratio"] = statistics.median(ratios) if ratios else None
        cratios = []
        for rnd in rounds:
            d = [r for r in results if r["step"] == key and r["round"] == rnd
                 and r["tool"] == "dupr" and r["ok"]]
            p = [r for r in results if r["step"] == key and r["round"] == rnd
                 and r["tool"] == "duplicity3" and r["ok"]]
            if d and p and p[0]["cpu"] > 0:
                cratios.append(d[0]["cpu"] / p[0]["cpu"])
        row["cpu_ratio"] = statistics.median(cratios) if cratios else None
        lim = parse_le(row["target"])
        row["met"] = (None if row["ratio"] is None or lim is None
                      else row["ratio"] <= lim)
        row["errors"] = errs
        rows.append(row)
    rss_row = {"max_rss": max_rss, "target": targets.get("rss")}
    lim = parse_le(rss_row["target"])
    rss_row["met"] = (None if max_rss.get("dupr") is None or lim is None
                      else max_rss["dupr"] <= lim)
    return rows, rss_row


def table(rows, rss_row, names):
    has_p = "duplicity3" in names
    has_d = "dupr" in names
    head = ["step"]
    if has_p:
        head.append("duplicity s")
    if has_d:
        head.append("dupr s")
    head += ["dupr/duplicity", "target", "met?", "CPU ratio"]
    if has_p:
        head.append("duplicity bytes added")
    if has_d:
        head.append("dupr bytes added")
    if has_p and has_d:
        head.append("bytes ratio")
    if has_p:
        head.append("duplicity RSS MiB")
    if has_d:
        head.append("dupr RSS MiB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell_s(row, n):
        v = row[n + "_s"]
        if v is None:
            return "n/a"
        s = fmt_s(v)
        ok = row[n + "_ok"]
        if not ok.startswith(ok.split("/")[1] + "/"):  # some rounds failed
            s += f" ({ok} ok)"
        return s

    def met(m):
        return "n/a" if m is None else ("yes" if m else "**no**")

    for row in rows:
        c = [row["label"]]
        if has_p:
            c.append(cell_s(row, "duplicity3"))
        if has_d:
            c.append(cell_s(row, "dupr"))
        c += ["n/a" if row["ratio"] is None else f"{row['ratio']:.3f}",
              row["target"] or "-", met(row["met"]),
              "n/a" if row.get("cpu_ratio") is None else f"{row['cpu_ratio']:.3f}"]
        pb, db = row.get("duplicity3_bytes"), row.get("dupr_bytes")
        if has_p:
            c.append("-" if pb is None else f"{pb:,}")
        if has_d:
            c.append("-" if db is None else f"{db:,}")
        if has_p and has_d:
            c.append(f"{db / pb:.3f}" if pb and db is not None else "-")
        if has_p:
            c.append(fmt_mib(row["duplicity3_rss"]))
        if has_d:
            c.append(fmt_mib(row["dupr_rss"]))
        lines.append("| " + " | ".join(c) + " |")
    mr = rss_row["max_rss"]
    c = ["peak RSS, max over steps (MiB)"]
    if has_p:
        c.append(fmt_mib(mr.get("duplicity3")))
    if has_d:
        c.append(fmt_mib(mr.get("dupr")))
    c += ["", rss_row["target"] or "-", met(rss_row["met"]), ""]
    c += [""] * ((1 if has_p else 0) + (1 if has_d else 0) + (1 if has_p and has_d else 0))
    if has_p:
        c.append("")
    if has_d:
        c.append("")
    lines.append("| " + " | ".join(c) + " |")
    return "\n".join(lines)


def detail_table(results):
    lines = ["| round | step | tool | wall s | user+sys s | peak RSS MiB | bytes added "
             "(volumes / signatures / manifests / other) | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["ok"]:
            status = "ok" + (f" ({r['note']})" if r.get("note") else "")
        else:
            status = "n/a: " + code(r["error"] or "").replace("|", "\\|")
        k = r.get("bytes_by_kind")
        added = "-" if r.get("bytes_added") is None else (
            f"{r['bytes_added']:,}" + ("" if not k else " (" + " / ".join(
                f"{k.get(x, 0):,}" for x in ("volumes", "signatures", "manifests", "other"))
                + ")"))
        lines.append(f"| {r['round']} | {r['step']} | {r['tool']} | {fmt_s(r['wall'])} | "
                     f"{fmt_s(r['cpu'])} | {fmt_mib(r['rss_mib'])} | {added} | {status} |")
    return "\n".join(lines)


def command_line(a):
    cmd = ["python3", "bench/run.py", "--scale", f"{a.scale:g}", "--rounds", str(a.rounds),
           "--mode", a.mode, "--tools", a.tools]
    if a.steps != ",".join(STEP_KEYS):
        cmd += ["--steps", a.steps]
    if a.seed is not None:
        cmd += ["--seed", str(a.seed)]
    if a.million:
        cmd += ["--million"]
        if a.million_files != 1_000_000:
            cmd += ["--million-files", str(a.million_files)]
    if a.markdown:
        cmd += ["--markdown", os.path.relpath(os.path.abspath(a.markdown), REPO)]
    return " ".join(cmd)


def markdown(meta, rows, rss_row, names, results, million, notes, a):
    m = meta["machine"]
    ds = meta["dataset"]
    out = []
    out.append("# dupr benchmarks\n")
    out.append(f"Measured {meta['date']} with `bench/run.py`; dupr at commit `{meta['commit']}` "
               f"(`{meta['versions'].get('dupr', '-')}`, binary built {meta.get('dupr_built') or '-'}), against "
               f"`{meta['versions'].get('duplicity3', '-')}`.\n")
    out.append("## Machine\n")
    out.append(f"- CPU: {m.get('cpu', '?')}, {m['nproc']} cores (nproc)")
    out.append(f"- memory: {m.get('mem_gib', 0):.1f} GiB; kernel {m['kernel']}; Python {m['python']}")
    out.append(f"- load: other processes used {meta['busy']['other_cores']:.2f} cores on average "
               f"during the run ({meta['busy']['other_pct']:.0f}% of the machine); "
               f"loadavg at start {meta['busy']['loadavg_start']}, at end {meta['busy']['loadavg_end']}")
    out.append("")
    out.append("## Setup\n")
    out.append(f"- dataset: `gen_dataset.py --scale {a.scale:g}`"
               f"{'' if a.seed is None else f' --seed {a.seed}'}: {ds['files']} files, "
               f"{ds['dirs']} dirs, {ds['symlinks']} symlinks, {human_bytes(ds['bytes'])} "
               f"({ds['bytes']} bytes); after `mutate_dataset.py`: "
               + (f"{meta['mutated']['files']} files, {human_bytes(meta['mutated']['bytes'])}"
                  if meta.get("mutated") else "not run"))
    out.append(f"- mode: `{a.mode}`"
               + (" (`--no-encryption`, gzip volumes)" if a.mode == "no-encryption"
                  else " (PASSPHRASE set, symmetric OpenPGP)")
               + "; local `file://` target; each tool has its own target and archive dir")
    out.append(f"- rounds: {a.rounds}; seconds are the median over rounds of wall time, "
               "the ratio is the median of the per-round dupr/duplicity ratios, peak RSS is the "
               "maximum over rounds of the tool process's `ru_maxrss` (from `wait4`, so it "
               "includes children such as gpg)")
    out.append("- the source is copied fresh and read once per round (page cache warm; dropping "
               "it is not possible here); the full backup starts with an empty archive dir, every "
               "later step uses the cache the earlier steps left; tools run interleaved per step, "
               "duplicity first")
    if getattr(a, "fresh_fs", False):
        out.append("- restore all writes into a new ext4 (sparse image, loop-mounted, inode tables "
                   "written by mkfs; journaled only if the work directory's file system is) made "
                   "before each tool's step and removed after it")
    out.append("- restore all is checked by file/dir/symlink count and total size; the single-file "
               f"restores byte for byte (small file: the middle one of `code/` in sorted order; "
               f"large file: `{LARGE_FILE}`, i.e. its full backup plus the mutate step's delta)")
    out.append("- CPU ratio: dupr's user+sys CPU seconds over duplicity's (from `wait4`), "
               "less sensitive than wall time to other load on the machine")
    out.append("- targets: the `dupr target ratio` column of /work/shared/README.md (measured there "
               "with symmetric encryption)")
    out.append("")
    out.append("## Results\n")
    out.append(table(rows, rss_row, names))
    out.append("")
    if notes:
        out.append("## Notes\n")
        for n in notes:
            out.append(f"- {n}")
        out.append("")
    if million is not None:
        out.append(f"## {million['files']['files']:,} tiny files (dupr only)\n")
        st = million["files"]
        out.append(f"Tree: {st['files']} files (a fifth empty, the rest 8-32 bytes) in "
                   f"{st['dirs']} dirs, {human_bytes(st['bytes'])}.\n")
        out.append("| step | dupr s | peak RSS MiB | status |")
        out.append("|---|---|---|---|")
        for r in million["results"]:
            status = "ok" if r["ok"] else "n/a: " + code(r["error"] or "").replace("|", "\\|")
            out.append(f"| {r['step']} | {fmt_s(r['wall'])} | {fmt_mib(r['rss_mib'])} | {status} |")
        out.append("")
    out.append("## Every run\n")
    out.append(detail_table(results))
    out.append("")
    out.append("## How to run\n")
    out.append("From the repository root (needs duplicity 3.2.1 from `scripts/install-test-deps`; "
               "the script builds `target/release/dupr` only if it is missing, so build first to "
               "measure the current tree; it runs a private copy of the binary; work files go to "
               "`bench/out/`, which is gitignored; the generated dataset is cached there):\n")
    out.append("```sh")
    out.append("cargo build --release")
    out.append(command_line(a))
    out.append("```\n")
    out.append("Useful options: `--scale 0.05` for a quick end-to-end check, `--rounds 5` for "
               "medians, `--steps full,list`, `--tools dupr`, `--mode symmetric`, `--million` "
               "(dupr's peak RSS on 1,000,000 tiny files), `--dupr PATH`, `--duplicity PATH`, "
               "`--drop-dataset` to delete the cached dataset at the end, `--from-json FILE` to "
               "rebuild the table from a saved results file (with extra `--note`s). "
               "Raw results: `bench/out/results.json`; each step's output: `bench/out/logs/`.")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def main():
    default_dup = os.path.join(os.environ.get("DUPR_TEST_CACHE")
                               or os.path.join(os.path.expanduser("~"), ".cache", "dupr-test"),
                               "venv-duplicity-3.2.1", "bin", "duplicity")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None, help="gen_dataset.py seed (default: its own)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--mode", choices=["no-encryption", "symmetric"], default="no-encryption")
    ap.add_argument("--work", default=os.path.join(HERE, "out"))
    ap.add_argument("--tools", default="dupr,duplicity3")
    ap.add_argument("--steps", default=",".join(STEP_KEYS),
                    help="comma-separated subset of: " + ",".join(STEP_KEYS))
    ap.add_argument("--dupr", default=os.path.join(REPO, "target", "release", "dupr"))
    ap.add_argument("--duplicity", default=default_dup)
    ap.add_argument("--million", action="store_true",
                    help="also time dupr full + list on 1,000,000 empty-or-tiny files (slow)")
    ap.add_argument("--million-files", type=int, default=1_000_000, help=argparse.SUPPRESS)
    ap.add_argument("--markdown", metavar="FILE")
    ap.add_argument("--note", action="append", default=[],
                    help="extra line for the Notes section (repeatable)")
    ap.add_argument("--timeout", type=float, default=3600, help="per step, seconds")
    ap.add_argument("--fresh-fs", action="store_true",
                    help="restore all into a new loop-mounted ext4 each time (needs root): "
                         "takes the previous restores' deleted inodes out of the timing")
    ap.add_argument("--drop-dataset", action="store_true",
                    help="delete the cached dataset when done")
    ap.add_argument("--from-json", metavar="FILE",
                    help="run nothing: rebuild the table/--markdown from a results.json "
                         "(its options are used; --markdown and --note from this command line)")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            saved = json.load(f)
        b = argparse.Namespace(**saved["args"])
        b.markdown, b.note = a.markdown, list(saved["args"].get("note") or []) + a.note
        names = [n.strip() for n in b.tools.split(",") if n.strip()]
        selected = [s.strip() for s in b.steps.split(",") if s.strip()]
        report(saved["meta"], b, saved["results"], saved.get("million"), names, selected,
               read_targets())
        return

    names = [n.strip() for n in a.tools.split(",") if n.strip()]
    for n in names:
        if n not in TOOL_ORDER:
            sys.exit(f"unknown tool {n!r}: use dupr and/or duplicity3")
    selected = [s.strip() for s in a.steps.split(",") if s.strip()]
    for s in selected:
        if s not in STEP_KEYS:
            sys.exit(f"unknown step {s!r}: use {','.join(STEP_KEYS)}")
    if a.rounds < 1:
        sys.exit("--rounds must be at least 1")

    if "dupr" in names and not os.path.exists(a.dupr):
        if os.path.abspath(a.dupr) == os.path.join(REPO, "target", "release", "dupr"):
            log("building dupr: cargo build --release")
            subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
        else:
            sys.exit(f"--dupr {a.dupr} does not exist")
    if "duplicity3" in names and not os.path.exists(a.duplicity):
        sys.exit(f"duplicity 3.2.1 not found at {a.duplicity}: run scripts/install-test-deps "
                 "or pass --duplicity")

    exe = {"dupr": os.path.abspath(a.dupr), "duplicity3": os.path.abspath(a.duplicity)}
    work = Work(a.work)
    dupr_built = None
    if "dupr" in names:
        # Run a private copy, so a concurrent `cargo build` cannot swap the binary mid-run.
        dupr_built = datetime.datetime.fromtimestamp(os.path.getmtime(exe["dupr"])).astimezone()
        snap = work.path("bin", "dupr")
        os.makedirs(os.path.dirname(snap), exist_ok=True)
        work.rm(snap)
        shutil.copy2(exe["dupr"], snap)
        exe["dupr"] = snap
    tools = [Tool(n, exe[n], a.mode) for n in TOOL_ORDER if n in names]
    bench = Bench(a, work, tools)
    targets = read_targets()

    meta = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "commit": git_commit(), "machine": machine_info(),
            "versions": {t.name: tool_version(t) for t in tools},
            "dupr_built": dupr_built.strftime("%Y-%m-%d %H:%M %Z") if dupr_built else None}
    with open("/proc/loadavg") as f:
        load0 = " ".join(f.read().split()[:3])
    busy0, own0, t0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()

    pristine = bench.dataset()
    pristine_stats = tree_stats(pristine)
    meta["dataset"] = pristine_stats
    log(f"dataset: {pristine_stats}")
    # Room for the tree twice over (the mutated one is bigger), sparse.
    bench.fs_bytes = max(1 << 30, 2 * pristine_stats["bytes"] + (512 << 20))
    if a.fresh_fs and os.geteuid() != 0:
        sys.exit("--fresh-fs mounts file systems: run as root")

    try:
        if selected:
            for rnd in range(1, a.rounds + 1):
                bench.one_round(rnd, pristine, pristine_stats, selected)
        million = bench.million() if a.million else None
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        work.rm(work.path("round"))
        work.rm(work.path("million", "run"))
        raise
    finally:
        if a.drop_dataset:
            work.rm(pristine)
            work.rm(pristine + ".complete")

    elapsed = time.perf_counter() - t0
    other = max(0.0, (cpu_busy_seconds() - busy0) - (own_cpu_seconds() - own0))
    with open("/proc/loadavg") as f:
        load1 = " ".join(f.read().split()[:3])
    ncpu = os.cpu_count() or 1
    meta["busy"] = {"other_cores": other / elapsed, "other_pct": 100 * other / (elapsed * ncpu),
                    "loadavg_start": load0, "loadavg_end": load1, "elapsed_s": elapsed}
    meta["mutated"] = bench.mutated_stats  # the mutated tree's stats, if the mutate step ran

    with open(work.path("results.json"), "w") as f:
        json.dump({"meta": meta, "args": vars(a), "results": bench.results, "million": million},
                  f, indent=1, default=str)
    report(meta, a, bench.results, million, names, selected, targets)


def report(meta, a, results, million, names, selected, targets):
    """Print the table and write --markdown (also used by --from-json)."""
    ncpu = meta["machine"]["nproc"] or 1
    pristine_stats = meta["dataset"]
    tools = [t for t in TOOL_ORDER if t in names]
    rows, rss_row = summarize(results, [Tool(n, "", a.mode) for n in tools], selected, targets)
    notes = list(a.note)
    if meta["busy"]["other_pct"] >= 10:
        notes.append(f"busy machine: other processes used {meta['busy']['other_cores']:.2f} of "
                     f"{ncpu} cores on average during the run; absolute seconds are inflated, "
                     "ratios less so")
    for row in rows:
        for n, e in row["errors"].items():
            notes.append(f"{row['label']}, {TOOL_TITLE[n]}: n/a — {code(e)}")
        for n in names:
            for nt in row.get(n + "_notes", []):
                notes.append(f"{row['label']}, {TOOL_TITLE[n]}: {nt}")
    if a.mode == "no-encryption":
        notes.append("unencrypted mode: duplicity's time here is gzip in Python, not gpg; "
                     "the README's targets were set for symmetric encryption")

    report = table(rows, rss_row, names)
    print()
    print(f"dataset {human_bytes(pristine_stats['bytes'])}, {pristine_stats['files']} files; "
          f"mode {a.mode}; {a.rounds} round(s); dupr {meta['commit']}")
    print(report)
    for n in notes:
        print("- " + n)
    if million is not None:
        for r in million["results"]:
            print(f"million {r['step']}: " + (f"{r['wall']:.2f} s, {r['rss_mib']:.1f} MiB"
                                              if r["ok"] else f"n/a: {r['error']}"))

    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(markdown(meta, rows, rss_row, names, results, million, notes, a))
        log(f"wrote {a.markdown}")


if __name__ == "__main__":
    main()
