#!/usr/bin/env python3
"""Benchmark `dupr mount` (Python 3 stdlib only).

Usage (from the repository root, after `cargo build --release`):

    python3 bench/mount.py [--scale F] [--work DIR] [--dupr PATH] [--duplicity PATH]
                           [--markdown FILE]

Backs up the bench dataset (gen_dataset.py, the same tree as bench/run.py,
cached under WORK/dataset/) twice, symmetric encryption, local target: once
with dupr (seekable volumes with a block index) and once with stock
duplicity 3.2.1 (no index). Each archive gets a full backup, the mutate
step, and an incremental. Then, for each archive, `dupr mount` runs in the
foreground and these are timed (wall seconds):

  * mount: from start until the mount point is mounted (cache sync, key check);
  * list root: os.listdir of the mount root (the backup times);
  * list big dir: os.lstat of every entry of the largest directory of the
    newest time, cold (its tree is built from the signature files) and warm;
  * read small / large file: read the whole file (the middle file of code/
    in sorted order; large/big-text.log, a full plus a delta), cold (first
    open: rebuilt through the restore path) and warm (second open);
  * restore small / large: `dupr restore --path-to-restore` of the same file
    from the same archive, for comparison;
  * the mount process's peak RSS (VmHWM) at the end.

Every read is compared byte for byte with the source tree it was backed up
from. Nothing outside --work is deleted.
"""
import argparse
import datetime
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GEN = "/work/shared/bench/gen_dataset.py"
MUTATE = "/work/shared/bench/mutate_dataset.py"
PASSPHRASE = "dupr-bench-passphrase"


def log(msg):
    print(f"[mount-bench {datetime.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def env():
    e = dict(os.environ)
    e["PASSPHRASE"] = PASSPHRASE
    e["LC_ALL"] = "C.UTF-8"
    e.pop("DUPR_ARCHIVE_DIR", None)
    return e


def run(argv, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(argv)}\n{p.stderr.decode(errors='replace')}")
    return dt


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(l.split(" ")[4] == path for l in f)


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def read_all(path):
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return n
            n += len(b)


def largest_dir(root):
    best, size = root, -1
    for d, dirs, files in os.walk(root):
        n = len(dirs) + len(files)
        if n > size:
            best, size = d, n
    return os.path.relpath(best, root), size


def pick_small(src):
    code = os.path.join(src, "code")
    files = []
    for d, _, fs in os.walk(code):
        files += [os.path.join(d, f) for f in fs]
    files.sort()
    return os.path.relpath(files[len(files) // 2], src)


def dataset(work, scale):
    # The work directory is shared with bench/run.py, which only works in a
    # directory holding its marker.
    os.makedirs(work, exist_ok=True)
    open(os.path.join(work, ".dupr-bench"), "a").close()
    d = os.path.join(work, "dataset", f"scale{scale:g}-seeddefault")
    if os.path.exists(d + ".complete"):
        return d
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(os.path.dirname(d), exist_ok=True)
    log(f"generating the dataset at {d}")
    subprocess.run([sys.executable, GEN, d, "--scale", str(scale)], check=True)
    open(d + ".complete", "w").close()
    return d


def bench_archive(label, dupr, url, mnt, scratch, cache, small, large, bigdir, src):
    os.makedirs(mnt, exist_ok=True)
    r = {"archive": label}
    argv = [dupr, "mount", "--archive-dir", cache, "--tempdir", scratch, url, mnt]
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not mounted(mnt):
        if p.poll() is not None:
            raise SystemExit(f"dupr mount failed: {p.stderr.read().decode(errors='replace')}")
        time.sleep(0.01)
    r["mount"] = time.perf_counter() - t0
    try:
        r["list root"], names = timed(lambda: os.listdir(mnt))
        latest = os.path.join(mnt, "latest")
        d = os.path.join(latest, bigdir)
        for k in ("cold", "warm"):
            r[f"list big dir {k}"], _ = timed(lambda: [os.lstat(os.path.join(d, n)) for n in os.listdir(d)])
        for what, rel in (("small", small), ("large", large)):
            f = os.path.join(latest, rel)
            for k in ("cold", "warm"):
                r[f"read {what} {k}"], n = timed(lambda: read_all(f))
            if not filecmp.cmp(f, os.path.join(src, rel), shallow=False):
                raise SystemExit(f"{label}: {rel} read through the mount differs from the source")
        with open(f"/proc/{p.pid}/status") as st:
            for line in st:
                if line.startswith("VmHWM:"):
                    r["peak RSS MiB"] = int(line.split()[1]) / 1024
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    for what, rel in (("small", small), ("large", large)):
        dest = os.path.join(os.path.dirname(scratch), f"restore-{label}-{what}")
        if os.path.exists(dest):
            os.remove(dest)
        r[f"restore {what}"] = run([dupr, "restore", "--archive-dir", cache, "--path-to-restore", rel, url, dest])
        if not filecmp.cmp(dest, os.path.join(src, rel), shallow=False):
            raise SystemExit(f"{label}: restored {rel} differs from the source")
        os.remove(dest)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--work", default=os.path.join(HERE, "out"))
    ap.add_argument("--dupr", default=os.path.join(REPO, "target", "release", "dupr"))
    cache = os.environ.get("DUPR_TEST_CACHE", os.path.expanduser("~/.cache/dupr-test"))
    ap.add_argument("--duplicity", default=os.path.join(cache, "venv-duplicity-3.2.1", "bin", "duplicity"))
    ap.add_argument("--markdown", help="write the results table here")
    a = ap.parse_args()
    pristine = dataset(a.work, a.scale)
    w = os.path.join(a.work, "mount")
    if os.path.exists(w):
        shutil.rmtree(w)
    os.makedirs(w)
    src = os.path.join(w, "src")
    log("copying the dataset")
    shutil.copytree(pristine, src, symlinks=True)
    small, large = pick_small(src), os.path.join("large", "big-text.log")
    bigdir, n = largest_dir(src)
    log(f"small file {small}, large file {large}, largest dir {bigdir} ({n} entries)")
    tools = {
        "dupr": [a.dupr, "full"],
        "duplicity": [a.duplicity, "full"],
    }
    for k, base in tools.items():
        url = "file://" + os.path.join(w, f"target-{k}")
        log(f"{k}: full backup")
        run([base[0], "full", "--archive-dir", os.path.join(w, f"cache-{k}"), src, url])
    log("mutating the source")
    subprocess.run([sys.executable, MUTATE, src], check=True, stdout=subprocess.DEVNULL)
    time.sleep(1.1)
    for k, base in tools.items():
        url = "file://" + os.path.join(w, f"target-{k}")
        log(f"{k}: incremental")
        run([base[0], "incremental", "--archive-dir", os.path.join(w, f"cache-{k}"), src, url])
    rows = []
    for k in tools:
        log(f"mounting the {k}-written archive")
        url = "file://" + os.path.join(w, f"target-{k}")
        scratch = os.path.join(w, f"scratch-{k}")
        os.makedirs(scratch)
        # dupr's own cache for reading either archive.
        rows.append(bench_archive(f"written by {k}", a.dupr, url, os.path.join(w, f"mnt-{k}"),
                                  scratch, os.path.join(w, "cache-dupr-read"), small, large, bigdir, src))
    keys = ["mount", "list root", "list big dir cold", "list big dir warm", "read small cold",
            "read small warm", "restore small", "read large cold", "read large warm", "restore large",
            "peak RSS MiB"]
    lines = [
        f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC with `bench/mount.py --scale {a.scale:g}`; "
        f"symmetric encryption, local target, full + mutate + incremental; reads from `latest/`. "
        f"Small file `{small}`, large file `{large}` ({os.path.getsize(os.path.join(src, large)):,} bytes), "
        f"largest directory `{bigdir}` ({n} entries). Seconds, wall.",
        "",
        "| step | " + " | ".join(r["archive"] for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    for key in keys:
        cells = []
        for r in rows:
            v = r.get(key)
            cells.append("-" if v is None else (f"{v:.0f}" if key == "peak RSS MiB" else f"{v:.3f}"))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
