#!/usr/bin/env python3
"""Benchmark backup and restore to S3 (a local Garage) for dupr and stock
duplicity 3.2.1 (boto3), side by side in one run (Python 3 stdlib only).

Usage (from the repository root, after `bench/run.py` made the dataset):

    python3 bench/s3.py [--dataset DIR] [--concurrency 1,4] [--markdown FILE]

It starts Garage 2.5.0 (the test cache's build) on 127.0.0.1 in a temp dir,
then for each tool: a full backup of the dataset (symmetric encryption,
default --volsize), then a restore of everything into an empty directory
with a fresh cache (so all signatures and manifests come back over S3 too).
dupr runs once per --concurrency value. Restores are checked (file count and
bytes). Garage is stopped by its PID at the end. Prints a Markdown section
(also appended to --markdown when given).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CACHE = os.environ.get("DUPR_TEST_CACHE", os.path.expanduser("~/.cache/dupr-test"))
GARAGE = os.environ.get("DUPR_GARAGE", os.path.join(CACHE, "tools/bin/garage"))
DUP3 = os.path.join(CACHE, "venv-duplicity-3.2.1/bin/duplicity")
KEY_ID = "GK31c2f218a2e44f485b94239e"
SECRET = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835"
PASS = "dupr-bench-passphrase"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_garage(d):
    rpc, s3, admin = free_port(), free_port(), free_port()
    for sub in ("meta", "data"):
        os.makedirs(os.path.join(d, sub))
    cfg = os.path.join(d, "garage.toml")
    with open(cfg, "w") as f:
        f.write(f'''metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "4f1c1d5e0b9a7c3e2d6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "bench-admin-token"
''')
    env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=KEY_ID, GARAGE_DEFAULT_SECRET_KEY=SECRET,
               GARAGE_DEFAULT_BUCKET="backup")
    log = open(os.path.join(d, "server.log"), "w")
    p = subprocess.Popen([GARAGE, "-c", cfg, "server", "--single-node", "--default-bucket"],
                         env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=1).status == 200:
                return p, f"http://127.0.0.1:{s3}"
        except Exception:
            time.sleep(0.05)
    p.kill()
    sys.exit("garage did not start; see " + log.name)


def stop_garage(p):
    """Stop the server started by start_garage (by its PID)."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run(cmd, env):
    """Wall seconds and peak RSS (MiB) of one command; exits on failure."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        if status != 0:
            out.seek(0)
            sys.exit(f"failed ({status}): {' '.join(cmd)}\n"
                     f"{out.read().decode(errors='replace')[-3000:]}")
    return dt, ru.ru_maxrss / 1024


def tree_stats(d):
    n = b = 0
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                n += 1
                b += os.path.getsize(p)
    return n, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default=os.path.join(HERE, "out/dataset/scale1-seeddefault"))
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--dupr", default=os.path.join(REPO, "target/release/dupr"))
    ap.add_argument("--markdown")
    a = ap.parse_args()
    src = a.dataset
    if not os.path.isdir(src):
        sys.exit(f"no dataset at {src}: run bench/run.py once")
    want = tree_stats(src)
    work = tempfile.mkdtemp(prefix="dupr-s3-bench-")
    garage, endpoint = start_garage(os.path.join(work, "garage"))
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_DEFAULT_REGION="garage", PASSPHRASE=PASS,
               AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
               AWS_RESPONSE_CHECKSUM_VALIDATION="when_required", PYTHONWARNINGS="ignore")
    s3args = ["--s3-endpoint-url", endpoint, "--s3-region-name", "garage"]
    rows = []
    try:
        runs = [("duplicity 3.2.1", DUP3, "boto3+s3://backup/duplicity", [])]
        for c in a.concurrency.split(","):
            runs.append((f"dupr --concurrency {c}", a.dupr, f"s3://backup/dupr-c{c}",
                         ["--concurrency", c]))
        for label, binary, url, extra in runs:
            cache = os.path.join(work, "cache-" + url.rsplit("/", 1)[1])
            t_full, m_full = run([binary, "full", src, url, "--archive-dir", cache] + s3args + extra, env)
            dest = os.path.join(work, "restore")
            cache2 = cache + "-fresh"
            t_rest, m_rest = run([binary, "restore", url, dest, "--archive-dir", cache2] + s3args + extra,
                         env)
            got = tree_stats(dest)
            if got != want:
                sys.exit(f"{label}: restored {got}, want {want}")
            shutil.rmtree(dest)
            rows.append((label, t_full, t_rest, m_full, m_rest))
            print(f"{label}: full {t_full:.1f} s, restore {t_rest:.1f} s", file=sys.stderr)
    finally:
        stop_garage(garage)
        shutil.rmtree(work, ignore_errors=True)
    mib = want[1] / 2**20
    base = rows[0]
    out = ["## S3 (Garage 2.5.0 on loopback)", "",
           f"`python3 bench/s3.py`, {time.strftime('%Y-%m-%d')}: the bench dataset "
           f"({want[0]} files, {mib:.0f} MiB), symmetric encryption, default --volsize (200 MB), "
           "to one single-node Garage on 127.0.0.1 (client and server share the 2 cores). "
           "Restore starts from an empty cache, so signatures and manifests come over S3 too. "
           "duplicity 3.2.1 uses its boto3 backend against the same server.", "",
           "| tool | full backup | MiB/s | ratio | peak RSS | restore all | MiB/s | ratio | peak RSS |",
           "|---|---|---|---|---|---|---|---|---|"]
    for label, f, r, mf, mr in rows:
        out.append(f"| {label} | {f:.1f} s | {mib / f:.0f} | {f / base[1]:.2f} | {mf:.0f} MiB | "
                   f"{r:.1f} s | {mib / r:.0f} | {r / base[2]:.2f} | {mr:.0f} MiB |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
