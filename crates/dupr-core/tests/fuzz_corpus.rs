//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and crash
//! regressions (`fuzz/regressions/<target>/`) through the same checks the
//! fuzz targets run (`fuzz/checks.rs`), on the stable toolchain without
//! libFuzzer: a fixed bug that comes back fails here.

#[path = "../../../fuzz/checks.rs"]
mod checks;
#[path = "../../../fuzz/replay.rs"]
mod replay;

use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (name, _) in checks::TARGETS {
        let seeds = replay::files(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty");
    }
}

macro_rules! replay_tests {
    ($($t:ident),*) => {$(
        #[test]
        fn $t() {
            let n = replay::replay(&fuzz_dir(), stringify!($t), checks::$t);
            assert!(n > 0, "no corpus files for {}", stringify!($t));
        }
    )*};
}

replay_tests!(manifest, tar, delta, sigtar, blocks, naming, time, url, gzip, pgp, multivol);

/// Every target in `checks::TARGETS` has its replay test above.
#[test]
fn target_list_matches_replay_tests() {
    let names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "manifest", "tar", "delta", "sigtar", "blocks", "naming", "time", "url", "gzip", "pgp",
            "multivol"
        ]
    );
}

/// The multivol seeds restore what they hold: a file cut into chunks
/// across two and three volumes comes back whole, so the fuzzer starts
/// from inputs that reach the joining.
#[test]
fn multivol_seeds_join_chunks() {
    let seed = |n: &str| std::fs::read(fuzz_dir().join("corpus/multivol").join(n)).unwrap();
    let show = |v: &[(dupr_core::index::Index, u64)]| {
        v.iter()
            .map(|(i, n)| (String::from_utf8_lossy(i.as_bytes()).into_owned(), *n))
            .collect::<Vec<_>>()
    };
    let s = |p: &str, n: u64| (p.to_string(), n);
    let ok = |n: &str| {
        let (placed, err) = checks::multivol_restore(&seed(n));
        assert_eq!(err, None, "{n}");
        show(&placed)
    };
    assert_eq!(
        ok("two-volumes-one-file-across"),
        [
            s("", 0),
            s("a.txt", 6),
            s("big.bin", 65536 + 12),
            s("z.txt", 4)
        ]
    );
    assert_eq!(
        ok("three-volumes"),
        [s("", 0), s("a.txt", 6), s("big.bin", 2 * 65536 + 4)]
    );
}

/// A minimal ustar entry (header + data padded to 512 bytes).
fn tar_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0001750");
    h[116..123].copy_from_slice(b"0001750");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"15147264000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut v = h.to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn volumes(vols: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, entries) in vols.iter().enumerate() {
        if k > 0 {
            out.extend_from_slice(checks::VOLUME_SEPARATOR);
        }
        for e in entries {
            out.extend_from_slice(e);
        }
        out.extend_from_slice(&[0u8; 1024]);
    }
    out
}

/// A damaged or hand-made set never restores a path twice or a file from
/// the middle (the later entry silently replaced the earlier, exit 0): a
/// repeated entry, a skipped chunk, entries out of order and a file whose
/// first chunk is missing are each a corrupt volume.
#[test]
fn multivol_damage_is_an_error_not_a_second_copy() {
    let big = vec![7u8; 65536];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "repeated entry",
            volumes(&[vec![
                tar_entry("snapshot/a", b"one"),
                tar_entry("snapshot/a", b"two"),
            ]]),
            "out of order or repeated",
        ),
        (
            "entries out of order",
            volumes(&[vec![
                tar_entry("snapshot/b", b"b"),
                tar_entry("snapshot/a", b"a"),
            ]]),
            "out of order or repeated",
        ),
        (
            "chunk 2 skipped",
            volumes(&[
                vec![tar_entry("multivol_snapshot/f/1", &big)],
                vec![tar_entry("multivol_snapshot/f/3", b"end")],
            ]),
            "out of order or repeated",
        ),
        (
            "first chunk missing",
            volumes(&[vec![tar_entry("multivol_snapshot/f/2", b"end")]]),
            "chunks before it are missing",
        ),
    ];
    for (what, input, want) in cases {
        let (placed, err) = checks::multivol_restore(&input);
        let err = err.unwrap_or_else(|| panic!("{what}: restored without error: {placed:?}"));
        assert!(err.contains(want), "{what}: {err}");
        let mut paths: Vec<_> = placed.iter().map(|(i, _)| i.clone()).collect();
        paths.dedup();
        assert_eq!(paths.len(), placed.len(), "{what}: a path placed twice");
    }
}
