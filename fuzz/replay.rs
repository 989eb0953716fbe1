//! Corpus replay shared by the stable-toolchain tests that run the fuzz
//! checks (`crates/dupr-core/tests/fuzz_corpus.rs`,
//! `crates/dupr-cli/tests/fuzz_corpus.rs`): every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through the
//! target's check.

use std::path::{Path, PathBuf};

/// `fuzz/`, from a crate two levels below the repository root.
pub fn fuzz_dir(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../../fuzz")
}

pub fn files(dir: &Path) -> Vec<PathBuf> {
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

/// Runs every corpus and regression file of `name` through `check`;
/// returns how many there were.
pub fn replay(fuzz: &Path, name: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for sub in ["corpus", "regressions"] {
        for f in files(&fuzz.join(sub).join(name)) {
            let data = std::fs::read(&f).expect("readable corpus file");
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{name}: {} fails its check", f.display());
            n += 1;
        }
    }
    n
}
