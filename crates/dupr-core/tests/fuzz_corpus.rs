//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and crash
//! regressions (`fuzz/regressions/<target>/`) through the same checks the
//! fuzz targets run (`fuzz/checks.rs`), on the stable toolchain without
//! libFuzzer: a fixed bug that comes back fails here.

#[path = "../../../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(name: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for sub in ["corpus", "regressions"] {
        for f in files(&fuzz_dir().join(sub).join(name)) {
            let data = std::fs::read(&f).expect("readable corpus file");
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{name}: {} fails its check", f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (name, _) in checks::TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty");
    }
}

macro_rules! replay_tests {
    ($($t:ident),*) => {$(
        #[test]
        fn $t() {
            let n = replay(stringify!($t), checks::$t);
            assert!(n > 0, "no corpus files for {}", stringify!($t));
        }
    )*};
}

replay_tests!(manifest, tar, delta, sigtar, blocks, naming, time, url, gzip, pgp);

/// Every target in `checks::TARGETS` has its replay test above.
#[test]
fn target_list_matches_replay_tests() {
    let names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["manifest", "tar", "delta", "sigtar", "blocks", "naming", "time", "url", "gzip", "pgp"]
    );
}
