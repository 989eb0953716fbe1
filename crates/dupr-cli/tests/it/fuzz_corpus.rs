//! Replays the committed corpora of the CLI's fuzz targets (`import`,
//! `profile`: `fuzz/cli_checks.rs`) and their crash regressions on the
//! stable toolchain, as `crates/dupr-core/tests/fuzz_corpus.rs` does for
//! the engine's.

#[path = "../../../../fuzz/cli_checks.rs"]
mod cli_checks;
#[path = "../../../../fuzz/replay.rs"]
mod replay;

use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn import() {
    let n = replay::replay(&fuzz_dir(), "import", cli_checks::import);
    assert!(n >= 5, "fuzz/corpus/import has {n} files");
}

#[test]
fn profile() {
    let n = replay::replay(&fuzz_dir(), "profile", cli_checks::profile);
    assert!(n >= 2, "fuzz/corpus/profile has {n} files");
}

#[test]
fn target_list_matches_replay_tests() {
    let names: Vec<&str> = cli_checks::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["import", "profile"]);
}

/// The seeds are real configs the importer converts (not inputs it
/// rejects early), so the fuzzer starts from deep paths.
#[test]
fn import_seeds_convert() {
    for f in replay::files(&fuzz_dir().join("corpus/import")) {
        let data = std::fs::read(&f).unwrap();
        let conf = std::path::Path::new("/nonexistent/dupr-fuzz/conf");
        let dir = (data[0] & 1 == 1).then(|| conf.parent().unwrap());
        let text = String::from_utf8_lossy(&data[1..]);
        if let Err(e) = dupr_cli::import::convert(&text, conf, dir, conf) {
            panic!("{}: {e:#}", f.display());
        }
    }
}
