//! Damage corpus (issue 13, item 6): small archives (plain and encrypted,
//! two volumes, a full and two incrementals) get every kind of damage —
//! byte flips at seeded offsets, truncation, deletion, substitution by
//! another file of the chain, garbage appended, temporaries left — on each
//! kind of file (volume, manifest, signature file), with the cache or a
//! fresh one; then restore, verify, list-current-files, collection-status
//! and a new incremental (and a restore after it) run. Asserted: no panic,
//! no hang, nothing written beside the restore destination, restore never
//! exits 0 with bytes or metadata that differ from the source, and
//! `verify URL` reports every damage to a volume, a signature file, an
//! encrypted manifest, and every deletion, truncation or substitution.
//! `DUPR_CORPUS_SEED` changes the seed.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T0: i64 = 1_700_000_000;
const PASS: &str = "corpus passphrase";
const DEFAULT_SEED: u64 = 0x7275_7374_0013;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip,
    Truncate,
    Delete,
    Substitute,
    Append,
    Temporaries,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Volume,
    Manifest,
    Sigtar,
}

/// A pristine archive (target + cache) and the source states it holds.
struct Pristine {
    enc: bool,
    root: PathBuf,
    /// The source tree at the newest set.
    snap: PathBuf,
}

/// dupr with a timeout; panics on a hang.
fn dupr_run(enc: bool, cache: &Path, cwd: &Path, args: &[String]) -> Output {
    let mut c = Command::new(dupr_bin());
    for v in ["PASSPHRASE", "SIGN_PASSPHRASE", "GNUPGHOME"] {
        c.env_remove(v);
    }
    c.env("LC_ALL", "C.UTF-8")
        .env("XDG_CACHE_HOME", cwd.join("xdg"))
        .current_dir(cwd)
        .arg("--archive-dir")
        .arg(cache)
        // One cache subdirectory whatever the target's path (a copied
        // archive keeps its cache).
        .args(["--name", "corpus"]);
    if enc {
        c.env("PASSPHRASE", PASS);
    } else {
        c.arg("--no-encryption");
    }
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("dupr {args:?} hung (killed after 60 s)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn build(enc: bool, base: &Path) -> Pristine {
    let root = base.join(if enc { "enc" } else { "plain" });
    let src = root.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let big = pseudo_random_bytes(1_300_000, 5);
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("d/small.txt"), b"small file\n").unwrap();
    std::os::unix::fs::symlink("small.txt", src.join("d/link")).unwrap();
    for i in 0..3i64 {
        if i > 0 {
            let mut b = big.clone();
            b[i as usize * 400_000] ^= 0xff;
            fs::write(src.join("big.bin"), &b).unwrap();
            set_mtime(&src.join("big.bin"), T0 + i);
            fs::write(src.join(format!("d/new{i}.txt")), format!("new {i}\n")).unwrap();
        }
        let o = dupr_run(
            enc,
            &root.join("cache"),
            &root,
            &[
                if i == 0 { "full" } else { "incremental" }.to_string(),
                "--volsize".into(),
                "1".into(),
                "--current-time".into(),
                (T0 + i * 1000).to_string(),
                src.display().to_string(),
                file_url(&root.join("target")),
            ],
        );
        assert!(o.status.success(), "{}", out_text(&o));
    }
    let snap = root.join("snap");
    copy_dir(&src, &snap);
    Pristine { enc, root, snap }
}

/// Files of `kind` in the target (volumes of the full, which has two, and
/// of the newest incremental; manifests; signature files).
fn files_of(target: &Path, kind: Kind) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| match kind {
            Kind::Volume => n.contains(".difftar"),
            Kind::Manifest => n.contains(".manifest"),
            Kind::Sigtar => n.contains(".sigtar"),
        })
        .collect();
    v.sort();
    v
}

fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn no_panic(o: &Output, what: &str) {
    let e = lossy(&o.stderr);
    assert!(
        !matches!(o.status.code(), Some(101) | Some(134) | None) && !e.contains("panicked"),
        "{what}: {}",
        out_text(o)
    );
}

/// Apply `damage` to target file `name`; true when `verify URL` must see it.
fn apply(
    damage: Damage,
    kind: Kind,
    enc: bool,
    target: &Path,
    cache: &Path,
    name: &str,
    rng: &mut Rng,
) -> bool {
    let p = target.join(name);
    let data = fs::read(&p).unwrap();
    match damage {
        Damage::Flip => {
            let mut d = data.clone();
            let at = rng.below(d.len());
            d[at] ^= 1 << rng.below(8);
            fs::write(&p, d).unwrap();
            // A plain manifest's bytes are not hashed anywhere (a flip in a
            // Filelist path is harmless and invisible).
            kind != Kind::Manifest || enc
        }
        Damage::Truncate => {
            fs::write(&p, &data[..data.len() / 2]).unwrap();
            true
        }
        Damage::Delete => {
            fs::remove_file(&p).unwrap();
            true
        }
        Damage::Substitute => {
            let others: Vec<String> = files_of(target, kind)
                .into_iter()
                .filter(|n| n != name && fs::read(target.join(n)).unwrap() != data)
                .collect();
            let other = &others[rng.below(others.len())];
            fs::copy(target.join(other), &p).unwrap();
            true
        }
        Damage::Append => {
            let mut d = data.clone();
            d.extend_from_slice(b"\ngarbage appended\n\x00\x01");
            fs::write(&p, d).unwrap();
            kind != Kind::Manifest || enc
        }
        Damage::Temporaries => {
            fs::write(
                target.join(format!(".dupr-tmp.4242.{name}")),
                &data[..data.len() / 3],
            )
            .unwrap();
            for d in fs::read_dir(cache).unwrap().flatten() {
                fs::write(d.path().join(format!(".dupr-tmp.4242.{name}")), b"partial").unwrap();
            }
            false
        }
    }
}

fn run_case(p: &Pristine, id: usize, kind: Kind, damage: Damage, fresh: bool, rng: &mut Rng) {
    let case = p.root.join(format!("case{id}"));
    fs::create_dir_all(&case).unwrap();
    let target = case.join("target");
    let cache = case.join("cache");
    copy_dir(&p.root.join("target"), &target);
    copy_dir(&p.root.join("cache"), &cache);
    let names = files_of(&target, kind);
    let name = names[rng.below(names.len())].clone();
    let visible = apply(damage, kind, p.enc, &target, &cache, &name, rng);
    let what = format!(
        "case {id} [{} {kind:?} {damage:?} {name} cache={}]",
        if p.enc { "gpg" } else { "plain" },
        if fresh { "fresh" } else { "kept" }
    );
    let cache = if fresh {
        let f = case.join("fresh");
        fs::create_dir_all(&f).unwrap();
        f
    } else {
        cache
    };
    let url = file_url(&target);
    let run = |args: &[&str]| -> Output {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let o = dupr_run(p.enc, &cache, &case, &a);
        no_panic(&o, &format!("{what} {args:?}"));
        o
    };

    // Restore of now: nothing beside the destination, exact or failing.
    let out = case.join("out");
    fs::create_dir_all(&out).unwrap();
    let dest = out.join("dest");
    let o = run(&["restore", &url, dest.to_str().unwrap()]);
    let beside: Vec<String> = listing(&out).into_iter().filter(|n| n != "dest").collect();
    assert!(
        beside.is_empty(),
        "{what}: restore left {beside:?} beside its destination"
    );
    if o.status.success() {
        let diffs = tree_diffs(&p.snap, &dest);
        assert!(
            diffs.is_empty(),
            "{what}: restore exited 0 with differences {:?}\n{}",
            &diffs[..diffs.len().min(5)],
            out_text(&o)
        );
    }
    let _ = fs::remove_dir_all(&dest);

    // verify URL sees what it can see.
    let o = run(&["verify", &url]);
    if visible {
        assert!(
            !o.status.success() && lossy(&o.stdout).contains("Problem: "),
            "{what}: verify did not report the damage:\n{}",
            out_text(&o)
        );
    }
    run(&["list-current-files", &url]);
    run(&["collection-status", &url]);

    // A new incremental; if it succeeds, "now" restores the new source
    // exactly or fails.
    let src = case.join("src");
    copy_dir(&p.snap, &src);
    fs::write(src.join("d/after.txt"), b"after the damage\n").unwrap();
    let o = run(&[
        "incremental",
        "--volsize",
        "1",
        "--current-time",
        &(T0 + 5000).to_string(),
        src.to_str().unwrap(),
        &url,
    ]);
    if o.status.success() {
        let o = run(&["restore", &url, dest.to_str().unwrap()]);
        if o.status.success() {
            let diffs = tree_diffs(&src, &dest);
            assert!(
                diffs.is_empty(),
                "{what}: restore after the incremental exited 0 with differences {:?}",
                &diffs[..diffs.len().min(5)]
            );
        }
    }
    // Nothing was written outside the case directory's own files.
    let _ = fs::remove_dir_all(&case);
}

#[test]
fn damage_corpus_never_passes_wrong_data() {
    let seed = std::env::var("DUPR_CORPUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let base = tempfile::Builder::new()
        .prefix("dupr-corpus-")
        .tempdir()
        .unwrap();
    let start = Instant::now();
    let mut rng = Rng(seed | 1);
    let mut id = 0;
    let outside_before = listing(base.path());
    for enc in [false, true] {
        let p = build(enc, base.path());
        for kind in [Kind::Volume, Kind::Manifest, Kind::Sigtar] {
            for damage in [
                Damage::Flip,
                Damage::Flip,
                Damage::Truncate,
                Damage::Delete,
                Damage::Substitute,
                Damage::Append,
                Damage::Temporaries,
            ] {
                let fresh = id % 2 == 1;
                run_case(&p, id, kind, damage, fresh, &mut rng);
                id += 1;
            }
        }
    }
    // Only the two archive roots were created at the top.
    let now: BTreeSet<String> = listing(base.path())
        .difference(&outside_before)
        .cloned()
        .collect();
    assert_eq!(
        now,
        ["enc".to_string(), "plain".to_string()]
            .into_iter()
            .collect(),
        "files written outside the archives"
    );
    eprintln!(
        "damage corpus: {id} cases, seed {seed:#x}, {:.1}s",
        start.elapsed().as_secs_f64()
    );
}
