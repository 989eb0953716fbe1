//! Self-test of the test harness against the real reference duplicitys only
//! (no dupr involved): each stock version must round-trip the tricky tree
//! through a multi-volume `--no-encryption` full backup, as judged by
//! `assert_same_tree`. If this fails, the harness or the installs are broken
//! (run scripts/install-test-deps), not dupr.

use crate::common;

use common::*;

/// Enough for several 1 MiB volumes and a file that spans volumes.
const BIG: usize = 3_000_000;

fn roundtrip(v: Dup) {
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, BIG);
    let archive = env.archive_dir(v);

    let a = archive.as_os_str();
    run_duplicity(
        v,
        [
            "full".as_ref(),
            "--no-encryption".as_ref(),
            "--volsize".as_ref(),
            "1".as_ref(),
            "--archive-dir".as_ref(),
            a,
            src.as_os_str(),
            env.target_url().as_ref(),
        ],
        &[],
    );
    let vols = std::fs::read_dir(env.target())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".difftar")
        })
        .count();
    assert!(
        vols >= 3,
        "expected a multi-volume backup, got {vols} volume(s)"
    );

    let dest = env.restore_dir(v.label());
    run_duplicity(
        v,
        [
            "restore".as_ref(),
            "--no-encryption".as_ref(),
            "--archive-dir".as_ref(),
            a,
            env.target_url().as_ref(),
            dest.as_os_str(),
        ],
        &[],
    );
    assert_same_tree(&src, &dest);
}

#[test]
fn duplicity_08_roundtrips_tricky_tree() {
    roundtrip(Dup::V08);
}

#[test]
fn duplicity_3_roundtrips_tricky_tree() {
    roundtrip(Dup::V3);
}

/// The comparison itself must notice differences, or the tests above prove nothing.
#[test]
fn assert_same_tree_detects_differences() {
    let env = Env::new();
    let (a, b) = (env.path().join("a"), env.path().join("b"));
    make_tricky_tree(&a, 100_000);
    make_tricky_tree(&b, 100_000);
    assert_same_tree(&a, &b);
    assert_eq!(tree_paths(&a).len(), tree_paths(&b).len());

    // One change of each kind compared.
    std::fs::write(b.join("hello.txt"), b"hello, dupR\nsecond line\n").unwrap();
    set_mtime(&b.join("hello.txt"), 1_700_000_000 + 1_000);
    chmod(&b.join("private-0600"), 0o640);
    std::fs::remove_file(b.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("elsewhere", b.join("link-rel")).unwrap();
    std::fs::remove_file(b.join("empty")).unwrap();
    std::fs::create_dir(b.join("empty")).unwrap();
    set_mtime(&b.join("dir/sub/b.txt"), 42);
    std::fs::write(b.join("extra"), b"").unwrap();

    let diffs = tree_diffs(&a, &b);
    let text = diffs.join("\n");
    for needle in [
        "hello.txt: content differs at byte 10",
        "hello.txt: mtime",
        "private-0600: mode 0600 vs 0640",
        "link-rel: symlink target",
        "empty: type file vs dir",
        "dir/sub/b.txt: mtime",
        "only in",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let r = std::panic::catch_unwind(|| assert_same_tree(&a, &b));
    assert!(r.is_err(), "assert_same_tree accepted different trees");
}
