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
    assert_eq!(
        show(&checks::multivol_restore(&seed(
            "two-volumes-one-file-across"
        ))),
        [
            s("", 0),
            s("a.txt", 6),
            s("big.bin", 65536 + 12),
            s("z.txt", 4)
        ]
    );
    assert_eq!(
        show(&checks::multivol_restore(&seed("three-volumes"))),
        [s("", 0), s("a.txt", 6), s("big.bin", 2 * 65536 + 4)]
    );
}
