#!/usr/bin/env python3
"""Encrypt/decrypt throughput of dupr's OpenPGP layer against gpg on 300 MB files.

Usage: bench/crypt.py [--dataset DIR] [--markdown FILE]
Uses large/big-text.log (compressible) and large/big-random.img (incompressible)
from the bench dataset (bench/run.py makes it), symmetric mode, passphrase
"bench"; each tool encrypts, then decrypts its own output (checked byte for
byte). gpg runs with its defaults (AES-256, ZIP level 6), as duplicity calls it.
"""
import argparse, hashlib, os, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv, env=None):
    t = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, ru = os.wait4(p.pid, 0)[1:]
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, err


def digest(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default=os.path.join(ROOT, "bench/out/dataset/scale1-seeddefault"))
    ap.add_argument("--markdown")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--example", "crypt_bench", "-p", "dupr-core"],
                   cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target/release/examples/crypt_bench")
    rows = []
    with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, "bench")) as tmp:
        home = os.path.join(tmp, "gnupg")
        os.makedirs(home, mode=0o700)
        env = dict(os.environ, PASSPHRASE="bench", GNUPGHOME=home)
        for name in ["large/big-text.log", "large/big-random.img"]:
            src = os.path.join(a.dataset, name)
            size = os.path.getsize(src)
            want = digest(src)
            for tool in ["gpg", "dupr"]:
                enc = os.path.join(tmp, tool + ".gpg")
                dec = os.path.join(tmp, tool + ".out")
                if tool == "gpg":
                    e = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "bench",
                         "-c", "-o", enc, src]
                    d = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "bench",
                         "-d", "-o", dec, enc]
                else:
                    e = [exe, "encrypt", src, enc]
                    d = [exe, "decrypt", enc, dec]
                we, ce, re_, erre = run(e, env)
                wd, cd, rd, errd = run(d, env)
                ok = os.path.exists(dec) and digest(dec) == want
                rows.append((name, tool, size, os.path.getsize(enc), we, ce, re_, wd, cd, rd, ok))
                for p in (enc, dec):
                    if os.path.exists(p):
                        os.remove(p)
    lines = ["| file | tool | stored MB | encrypt s (MB/s) | encrypt CPU s | decrypt s (MB/s) | decrypt CPU s | peak RSS enc/dec MiB | round trip |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (name, tool, size, esize, we, ce, re_, wd, cd, rd, ok) in rows:
        mb = size / 1e6
        lines.append(f"| {os.path.basename(name)} | {tool} | {esize/1e6:.1f} | {we:.2f} ({mb/we:.0f}) | {ce:.2f} | "
                     f"{wd:.2f} ({mb/wd:.0f}) | {cd:.2f} | {re_:.0f} / {rd:.0f} | {'ok' if ok else 'FAILED'} |")
    table = "\n".join(lines)
    print(table)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write("\n## OpenPGP layer: dupr vs gpg on 300 MB files\n\n")
            f.write(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `bench/crypt.py`; "
                    "symmetric, each tool's defaults (gpg: AES-256, ZIP level 6; dupr: AES-256, deflate level 6 "
                    "with stored blocks for data that does not compress). MB/s = input size / wall seconds.\n\n")
            f.write(table + "\n")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
