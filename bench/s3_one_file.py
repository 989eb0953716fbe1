#!/usr/bin/env python3
"""Restore one small file out of a 200 MB volume over a slow S3 link, for
dupr with its block index, dupr without it, and stock duplicity 3.2.1
(boto3), side by side in one run (issue 16). Python 3 stdlib only.

Usage (from the repository root, with the test cache's Garage and venv):

    python3 bench/s3_one_file.py [--rtt-ms 30] [--mbit 200] [--markdown FILE]

It starts Garage on 127.0.0.1 (stopped by its PID at the end) and, in front
of it, a userspace TCP proxy of this script that delays every chunk by half
the round-trip time in each direction and caps each direction's rate, all
connections together, as one link would (this kernel has no `tc netem`). A source tree of one ~200 MB volume is made: 95
MB of random files, 1,000 small text files, 95 MB of random files, so the
wanted file sits in the middle of the volume. Each tool backs up straight to
Garage, then restores `m/small-0500.txt` through the proxy with an empty
cache; the script reports seconds and the bytes that came down the proxy.
"dupr without index" is the same dupr archive with its `.dupr-blocks` object
deleted (removed with the venv's boto3), which dupr then reads as it reads
duplicity's archives: the whole volume.
"""
import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import s3  # noqa: E402  (start_garage, run, the keys)

WANT = "m/small-0500.txt"


class DelayProxy:
    """Forward 127.0.0.1:port to the target, each chunk held for `delay`
    seconds and each direction of the link (all connections together)
    paced to `rate` bytes per second."""

    def __init__(self, target_port, delay, rate):
        self.target = ("127.0.0.1", target_port)
        self.delay = delay
        self.rate = rate
        self.down = 0  # bytes server -> client
        self.up = 0
        self.lock = threading.Lock()
        # When each direction's link is free again (shared pacing).
        self.free_at = {True: 0.0, False: 0.0}
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            for a, b, down in ((c, s, False), (s, c, True)):
                q = []
                cv = threading.Condition()
                threading.Thread(target=self.read, args=(a, q, cv), daemon=True).start()
                threading.Thread(target=self.write, args=(b, q, cv, down), daemon=True).start()

    def read(self, src, q, cv):
        while True:
            try:
                d = src.recv(65536)
            except OSError:
                d = b""
            with cv:
                q.append((time.monotonic() + self.delay, d))
                cv.notify()
            if not d:
                return

    def write(self, dst, q, cv, down):
        while True:
            with cv:
                while not q:
                    cv.wait()
                due, d = q.pop(0)
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            if not d:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            # Pace: this chunk leaves when the link (shared by every
            # connection, one per direction) is free again.
            with self.lock:
                start = max(self.free_at[down], time.monotonic())
                self.free_at[down] = start + len(d) / self.rate
                wait = self.free_at[down] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(d)
            except OSError:
                return
            with self.lock:
                if down:
                    self.down += len(d)
                else:
                    self.up += len(d)

    def reset(self):
        with self.lock:
            self.down = self.up = 0


def make_tree(src):
    rnd = random.Random(16)
    for d in ("a", "m", "z"):
        os.makedirs(os.path.join(src, d))
    for d in ("a", "z"):
        for i in range(95):
            with open(os.path.join(src, d, f"r{i:03}.bin"), "wb") as f:
                f.write(rnd.randbytes(1 << 20))
    for i in range(1000):
        with open(os.path.join(src, "m", f"small-{i:04}.txt"), "w") as f:
            f.write("".join(f"line {j} of small file {i}: some text\n" for j in range(60)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rtt-ms", type=float, default=30.0)
    ap.add_argument("--mbit", type=float, default=200.0)
    ap.add_argument("--dupr", default=os.path.join(s3.REPO, "target/release/dupr"))
    ap.add_argument("--markdown")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="dupr-s3-one-")
    src = os.path.join(work, "src")
    make_tree(src)
    garage, endpoint = s3.start_garage(os.path.join(work, "garage"))
    port = int(endpoint.rsplit(":", 1)[1])
    proxy = DelayProxy(port, a.rtt_ms / 2000.0, a.mbit * 1e6 / 8)
    slow = f"http://127.0.0.1:{proxy.port}"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3.KEY_ID, AWS_SECRET_ACCESS_KEY=s3.SECRET,
               AWS_DEFAULT_REGION="garage", PASSPHRASE=s3.PASS,
               AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
               AWS_RESPONSE_CHECKSUM_VALIDATION="when_required", PYTHONWARNINGS="ignore")
    rows = []
    try:
        def args(ep):
            return ["--s3-endpoint-url", ep, "--s3-region-name", "garage"]

        dupr_url = "s3://backup/dupr"
        dup_url = "boto3+s3://backup/duplicity"
        s3.run([a.dupr, "full", src, dupr_url, "--archive-dir", os.path.join(work, "c1")]
               + args(endpoint), env)
        s3.run([s3.DUP3, "full", src, dup_url, "--archive-dir", os.path.join(work, "c2")]
               + args(endpoint), env)
        # A copy of dupr's archive without its block index.
        py = os.path.join(os.path.dirname(s3.DUP3), "python3")
        copy = f"""
import boto3
c = boto3.client("s3", endpoint_url="{endpoint}", region_name="garage")
for o in c.list_objects_v2(Bucket="backup", Prefix="dupr/")["Contents"]:
    k = o["Key"]
    if ".dupr-blocks" not in k:
        c.copy_object(Bucket="backup", Key="dupr-noidx/" + k[len("dupr/"):],
                      CopySource={{"Bucket": "backup", "Key": k}})
"""
        subprocess.run([py, "-c", copy], env=env, check=True)
        with open(os.path.join(src, WANT), "rb") as f:
            want = f.read()
        for label, binary, url in (
            ("dupr, block index", a.dupr, dupr_url),
            ("dupr, no index (whole volume)", a.dupr, "s3://backup/dupr-noidx"),
            ("duplicity 3.2.1", s3.DUP3, dup_url),
        ):
            dest = os.path.join(work, "out-" + str(len(rows)))
            cache = os.path.join(work, "fresh-" + str(len(rows)))
            proxy.reset()
            t, rss = s3.run([binary, "restore", "--path-to-restore", WANT, url, dest,
                             "--archive-dir", cache] + args(slow), env)
            with open(dest, "rb") as f:
                if f.read() != want:
                    sys.exit(f"{label}: wrong bytes restored")
            rows.append((label, t, proxy.down, proxy.up, rss))
            print(f"{label}: {t:.2f} s, {proxy.down:,} bytes down", file=sys.stderr)
    finally:
        s3.stop_garage(garage)
        shutil.rmtree(work, ignore_errors=True)
    out = ["## One small file from a 200 MB volume over slow S3", "",
           f"`python3 bench/s3_one_file.py`, {time.strftime('%Y-%m-%d %H:%M')} UTC: Garage on "
           f"127.0.0.1 behind a userspace delay proxy ({a.rtt_ms:g} ms round trip, "
           f"{a.mbit:g} Mbit/s each way); one full backup (symmetric) of 190 MB of random files "
           f"around 1,000 small text files (one 200 MB volume); restore of `{WANT}` with an "
           "empty cache. Bytes are what came down the proxy (manifests, block index, volume "
           "ranges or volumes; duplicity also fetches its signature files).", "",
           "| restore of one small file | seconds | bytes downloaded | bytes uploaded | peak RSS |",
           "|---|---|---|---|---|"]
    for label, t, down, up, rss in rows:
        out.append(f"| {label} | {t:.2f} | {down:,} | {up:,} | {rss:.0f} MiB |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
