//! Issue 16/18: seekable volumes and per-block compression.
//!
//! * A backup writes a block index (`*.dupr-blocks.gpg` / `.gz`) beside the
//!   manifest; restoring one path reads only the blocks holding it: a
//!   damaged block elsewhere in the same volume does not stop it (while a
//!   whole restore fails on it), a damaged block holding it fails it with
//!   the volume named and nothing written.
//! * Files rebuilt from deltas restore through the index too.
//! * A damaged or missing index falls back to reading whole volumes.
//! * Stock duplicity (0.8.22, 3.2.1) restores the same archive, and its
//!   collection-status and remove-all-but-n-full work with the index there;
//!   dupr's cleanup removes an index whose set duplicity removed.
//! * An incremental whose data starts incompressible and goes on with text
//!   is compressed per block (issue 18).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const PASS: &str = "seek passphrase";

struct Arch {
    env: Env,
    enc: bool,
}

impl Arch {
    fn new(enc: bool) -> Arch {
        let a = Arch {
            env: Env::new(),
            enc,
        };
        make_tree(&a.env.src());
        a
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.env.dupr();
        c.arg("--archive-dir").arg(self.env.cache().join("arch"));
        if self.enc {
            c.env("PASSPHRASE", PASS);
        } else {
            c.arg("--no-encryption");
        }
        c.args(args);
        c.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(o.status.success(), "dupr {args:?} failed: {}", out_text(&o));
        o
    }

    fn backup(&self, kind: &str) {
        let src = self.env.src();
        let url = self.env.target_url();
        self.ok(&[kind, src.to_str().unwrap(), &url]);
    }

    fn restore_path(&self, path: &str, to: &Path, cache: Option<&Path>) -> Output {
        let url = self.env.target_url();
        let mut c = self.env.dupr();
        let default = self.env.cache().join("arch");
        c.arg("--archive-dir").arg(cache.unwrap_or(&default));
        if self.enc {
            c.env("PASSPHRASE", PASS);
        } else {
            c.arg("--no-encryption");
        }
        c.args(["restore", "--path-to-restore", path, &url]).arg(to);
        c.output().unwrap()
    }

    fn target_file(&self, suffix: &str) -> PathBuf {
        let mut v: Vec<PathBuf> = fs::read_dir(self.env.target())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().ends_with(suffix))
            .collect();
        v.sort();
        v.pop()
            .unwrap_or_else(|| panic!("no *{suffix} on the target"))
    }
}

/// 3 MiB of random data between two runs of small text files, so the
/// volume has blocks before, inside and after it.
fn make_tree(src: &Path) {
    for d in ["a", "m", "z"] {
        fs::create_dir_all(src.join(d)).unwrap();
        for i in 0..300 {
            let text: String = (0..40)
                .map(|l| format!("{d} file {i} line {l}: some text that compresses\n"))
                .collect();
            fs::write(src.join(d).join(format!("f{i:03}.txt")), text).unwrap();
        }
    }
    fs::write(src.join("m/big.bin"), pseudo_random_bytes(3 << 20, 7)).unwrap();
}

/// Flip one byte of `p` at `at`.
fn flip_at(p: &Path, at: u64) {
    let mut b = fs::read(p).unwrap();
    b[at as usize] ^= 0x55;
    fs::write(p, b).unwrap();
}

fn check_one_file_restores(a: &Arch, ext: &str) {
    a.backup("full");
    let blocks = a.target_file(&format!(".dupr-blocks.{ext}"));
    assert!(blocks.is_file());
    let vol = a.target_file(&format!(".vol1.difftar.{ext}"));
    let src = a.env.src();

    // One file: right bytes.
    let to = a.env.restore_dir("one");
    let o = a.restore_path("z/f123.txt", &to, None);
    assert!(o.status.success(), "{}", out_text(&o));
    assert_eq!(
        fs::read(&to).unwrap(),
        fs::read(src.join("z/f123.txt")).unwrap()
    );

    // Damage a byte in the middle of the random file's blocks: the whole
    // restore fails, a file from the start or the end of the volume still
    // restores (its blocks are not read), without the cache's copy of the
    // index too (fetched from the target, then cached again).
    let size = fs::metadata(&vol).unwrap().len();
    let pristine = fs::read(&vol).unwrap();
    flip_at(&vol, size / 2);
    let all = a.env.restore_dir("all");
    let o = a.run(&["restore", &a.env.target_url(), all.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(21),
        "a damaged volume: {}",
        out_text(&o)
    );
    for (i, (path, cache)) in [
        ("a/f001.txt", None),
        ("z/f299.txt", None),
        ("z/f200.txt", Some(a.env.path().join("fresh-cache"))),
    ]
    .into_iter()
    .enumerate()
    {
        let to = a.env.restore_dir(&format!("after-damage-{i}"));
        let o = a.restore_path(path, &to, cache.as_deref());
        assert!(o.status.success(), "{path}: {}", out_text(&o));
        assert_eq!(
            fs::read(&to).unwrap(),
            fs::read(src.join(path)).unwrap(),
            "{path}"
        );
    }
    // The random file itself sits on the damaged block: refused, named,
    // nothing written.
    let to = a.env.restore_dir("big");
    let o = a.restore_path("m/big.bin", &to, None);
    assert_eq!(
        o.status.code(),
        Some(21),
        "a damaged block: {}",
        out_text(&o)
    );
    let text = out_text(&o);
    assert!(text.contains(".vol1.difftar"), "{text}");
    assert!(!to.exists(), "damaged data reached the target");
    fs::write(&vol, &pristine).unwrap();

    // A damaged index: a warning, then the whole volume is read (and checked).
    let idx = fs::read(&blocks).unwrap();
    let mid = idx.len() as u64 / 2;
    flip_at(&blocks, mid);
    let fresh = a.env.path().join("fresh-cache-2");
    let to = a.env.restore_dir("bad-index");
    let o = a.restore_path("m/f150.txt", &to, Some(&fresh));
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(out_text(&o).contains("block index"), "{}", out_text(&o));
    assert_eq!(
        fs::read(&to).unwrap(),
        fs::read(src.join("m/f150.txt")).unwrap()
    );
    fs::write(&blocks, &idx).unwrap();

    // A directory, then a file rebuilt from a delta, through the index.
    let mut big = fs::read(src.join("m/big.bin")).unwrap();
    big[1000..5000].copy_from_slice(&[9u8; 4000]);
    fs::write(src.join("m/big.bin"), &big).unwrap();
    fs::write(src.join("m/f010.txt"), "changed\n").unwrap();
    a.backup("incremental");
    let to = a.env.restore_dir("dir");
    let o = a.restore_path("m", &to, None);
    assert!(o.status.success(), "{}", out_text(&o));
    assert_same_tree(&src.join("m"), &to);
    let to = a.env.restore_dir("delta");
    let o = a.restore_path("m/big.bin", &to, None);
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(fs::read(&to).unwrap() == big);
}

#[test]
fn one_path_reads_only_its_blocks_encrypted() {
    check_one_file_restores(&Arch::new(true), "gpg");
}

#[test]
fn one_path_reads_only_its_blocks_gzip() {
    check_one_file_restores(&Arch::new(false), "gz");
}

/// duplicity reads dupr's block-compressed volumes, ignores the index in
/// collection-status and remove-all-but-n-full; dupr's cleanup then removes
/// the index duplicity left behind, and dupr still restores.
#[test]
fn stock_duplicity_lives_with_the_index() {
    for v in Dup::ALL {
        let a = Arch::new(true);
        a.backup("full");
        let url = a.env.target_url();
        let env = [("PASSPHRASE", PASS)];
        let ad = a.env.archive_dir(v);
        let to = a.env.restore_dir(&format!("dup-{}", v.label()));
        run_duplicity(
            v,
            [
                "restore".as_ref(),
                "--archive-dir".as_ref(),
                ad.as_os_str(),
                url.as_ref(),
                to.as_os_str(),
            ],
            &env,
        );
        assert_same_tree(&a.env.src(), &to);
        let o = run_duplicity(
            v,
            [
                "collection-status".as_ref(),
                "--archive-dir".as_ref(),
                ad.as_os_str(),
                url.as_ref(),
            ],
            &env,
        );
        let status = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(!status.contains("dupr-blocks"), "{status}");
        // A second full, then duplicity removes the first set.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        a.backup("full");
        let before = a.target_file(".dupr-blocks.gpg");
        run_duplicity(
            v,
            [
                "remove-all-but-n-full".as_ref(),
                "1".as_ref(),
                "--force".as_ref(),
                "--archive-dir".as_ref(),
                ad.as_os_str(),
                url.as_ref(),
            ],
            &env,
        );
        let left: Vec<String> = fs::read_dir(a.env.target())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".dupr-blocks."))
            .collect();
        assert_eq!(left.len(), 2, "duplicity left both indexes: {left:?}");
        // dupr: status fine, cleanup removes the stray index, restore works.
        a.ok(&["collection-status", &url]);
        a.ok(&["cleanup", "--force", &url]);
        let left: Vec<String> = fs::read_dir(a.env.target())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".dupr-blocks."))
            .collect();
        assert_eq!(
            left,
            vec![before.file_name().unwrap().to_string_lossy().into_owned()]
        );
        let to = a.env.restore_dir(&format!("after-{}", v.label()));
        let o = a.restore_path("z/f007.txt", &to, None);
        assert!(o.status.success(), "{}", out_text(&o));
    }
}

/// Issue 18: an incremental whose changed data starts with 1 MiB of random
/// bytes and goes on with 4 MiB of text stores the text compressed.
#[test]
fn incremental_compresses_text_after_random_data() {
    let a = Arch::new(true);
    a.backup("full");
    let src = a.env.src();
    fs::create_dir_all(src.join("0new")).unwrap();
    fs::write(
        src.join("0new/0random.bin"),
        pseudo_random_bytes(1 << 20, 99),
    )
    .unwrap();
    let text: String = (0..80_000)
        .map(|i| format!("log line {i}: request served in {} ms\n", i % 97))
        .collect();
    assert!(text.len() > 3 << 20);
    fs::write(src.join("0new/log.txt"), &text).unwrap();
    let before: u64 = fs::read_dir(a.env.target())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    a.backup("incremental");
    let after: u64 = fs::read_dir(a.env.target())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let added = after - before;
    let raw = (1u64 << 20) + text.len() as u64;
    // Random MiB stored as is, the text compressed at least 4x.
    assert!(
        added < (1 << 20) + text.len() as u64 / 4,
        "the incremental added {added} bytes for {raw} raw"
    );
}

/// A set whose volumes are all small (under `MIN_INDEXED_BLOCKS` blocks) gets
/// no index: the target holds only what duplicity would write (duplicity's
/// restart tests count those files), and it restores as before.
#[test]
fn small_sets_get_no_index() {
    let a = Arch {
        env: Env::new(),
        enc: true,
    };
    let src = a.env.src();
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/small.txt"), "hello\n").unwrap();
    fs::write(src.join("d/rand.bin"), pseudo_random_bytes(1 << 20, 3)).unwrap();
    a.backup("full");
    let names: Vec<String> = fs::read_dir(a.env.target())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("dupr-blocks")),
        "{names:?}"
    );
    let to = a.env.restore_dir("small");
    let o = a.restore_path("d/rand.bin", &to, None);
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(fs::read(&to).unwrap() == fs::read(src.join("d/rand.bin")).unwrap());
}

/// Issue 18: an incremental set's volumes are deflated at level 7 unless a
/// level is given, so they come out smaller than at the full's level 3
/// (the signature tar's level 9 gains on many files' headers, measured by
/// the bench, not on this test's two files).
#[test]
fn incrementals_default_to_a_tighter_level() {
    let mut sizes = Vec::new();
    for extra in [&[][..], &["--compress-level", "3"][..]] {
        let a = Arch {
            env: Env::new(),
            enc: true,
        };
        let src = a.env.src();
        fs::write(src.join("base.txt"), "base\n").unwrap();
        a.backup("full");
        let mut x = 0x1234_5678_9abc_def1u64;
        let text: String = (0..60_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("    mutated_{:010x}({});\n", x & 0xff_ffff_ffff, i % 9973)
            })
            .collect();
        fs::write(src.join("new.txt"), &text).unwrap();
        let url = a.env.target_url();
        let mut args = vec!["incremental"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[src.to_str().unwrap(), &url]);
        a.ok(&args);
        let vol = fs::read_dir(a.env.target())
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("duplicity-inc.") && n.contains(".vol1.")
            })
            .expect("the incremental's volume");
        sizes.push(vol.metadata().unwrap().len());
    }
    assert!(
        sizes[0] * 100 < sizes[1] * 99,
        "default {} vs level 3 {}",
        sizes[0],
        sizes[1]
    );
}

/// A wrong passphrase whose key passes the 2-byte OpenPGP quick check (1 in
/// 65,536) must not read as a damaged volume: the first block is decoded
/// (and its SHA-256 checked) before the stream is handed to the restore,
/// which then falls back to the whole-volume read that tells a wrong
/// passphrase from damage. Driven here through the library with keys
/// found to pass the quick check.
#[test]
fn a_key_passing_the_quick_check_by_chance_fails_on_the_first_block() {
    use dupr_core::blocks::{self, BlockStream, Framing, RangeRead};
    use dupr_core::crypt::{self, Codec, Crypto};
    use std::io::Read;

    let a = Arch::new(true);
    a.backup("full");
    let crypto =
        Crypto::symmetric(zeroize::Zeroizing::new(PASS.as_bytes().to_vec()), true).unwrap();
    let idx_name = a.target_file(".dupr-blocks.gpg");
    let codec = Codec::for_name(true, false, Some(&crypto), "x.gpg").unwrap();
    let mut plain = Vec::new();
    crypt::decoder(fs::File::open(&idx_name).unwrap(), &codec)
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    let vi = blocks::read_volumes(&plain[..], |n| n == 1)
        .unwrap()
        .pop()
        .expect("volume 1 is indexed");
    let Framing::Pgp { prefix, .. } = vi.layout.framing else {
        panic!("an encrypted volume");
    };
    let vol = a.target_file(".vol1.difftar.gpg");
    let mut f = fs::File::open(&vol).unwrap();
    let head = f.read_range(0, prefix.min(1 << 16)).unwrap();
    let (_, key) = crypto.session_key_of(&head).unwrap().expect("a key");
    let want = dupr_core::index::Index::from_bytes(b"z/f123.txt".to_vec());
    let (block, off) = vi.start_for(&want);

    let mut right = BlockStream::new(
        Box::new(fs::File::open(&vol).unwrap()),
        key,
        vi.clone(),
        block,
        off,
    );
    assert!(right.fill().unwrap(), "the right key decodes the block");

    // Wrong keys of the same length, until two pass the quick check.
    let mut passed = 0;
    let mut seed = 1u64;
    while passed < 2 {
        seed += 2; // odd seeds: the generator ignores the low bit
        let wrong = pseudo_random_bytes(32, seed);
        let mut f = fs::File::open(&vol).unwrap();
        if !blocks::check_key(&mut f, &vi.layout, &wrong).unwrap() {
            continue;
        }
        passed += 1;
        let mut s = BlockStream::new(
            Box::new(f),
            zeroize::Zeroizing::new(wrong),
            vi.clone(),
            block,
            off,
        );
        assert!(s.fill().is_err(), "a wrong key passed the first block");
        assert!(seed < 2_000_000, "no wrong key passed the quick check");
    }
}
