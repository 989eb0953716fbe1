//! What duplicity's own functional test suite (testing/functional of its
//! source, run by `scripts/duplicity-suite`) found dupr doing differently,
//! one focused test each, driven through the real `dupr` binary:
//!
//! * negative numbers as option values (`--show-changes-in-set -1`), as
//!   duplicity's argparse parser reads them.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Run dupr in `env` with `args`; the output, whatever the exit.
fn dupr_run(env: &Env, args: &[&str]) -> Output {
    let mut c = env.dupr();
    c.env_remove("DUPR_ARCHIVE_DIR");
    c.args(args);
    c.output().expect("run dupr")
}

fn dupr_ok(env: &Env, args: &[&str]) -> Output {
    let o = dupr_run(env, args);
    assert!(o.status.success(), "dupr {args:?} failed:\n{}", show(&o));
    o
}

// ------------------------------------------------ negative option values

/// A full (a.txt), then an incremental adding b.txt, then one adding c.txt.
fn three_sets(env: &Env) {
    let url = env.target_url();
    let src = env.src();
    let src = src.to_str().unwrap();
    write(&env.src().join("a.txt"), b"a\n");
    dupr_ok(
        env,
        &[
            "full",
            "--no-encryption",
            "--current-time",
            "1700000000",
            src,
            &url,
        ],
    );
    write(&env.src().join("b.txt"), b"b\n");
    dupr_ok(
        env,
        &[
            "incremental",
            "--no-encryption",
            "--current-time",
            "1700003600",
            src,
            &url,
        ],
    );
    write(&env.src().join("c.txt"), b"c\n");
    dupr_ok(
        env,
        &[
            "incremental",
            "--no-encryption",
            "--current-time",
            "1700007200",
            src,
            &url,
        ],
    );
}

/// The `File:` rows of a classic `--show-changes-in-set` listing.
fn changed_files(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("File:"))
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// duplicity indexes the sets newest first with a Python index: -1 is the
/// oldest set of the chain (the full), -2 the one after it; with --jsonstat
/// a negative index prints every set (duplicity's test_jsonstat_missing
/// runs `--show-changes-in-set -1 --jsonstat`).
#[test]
fn show_changes_in_set_takes_negative_indexes_as_duplicity_does() {
    let env = Env::new();
    three_sets(&env);
    let url = env.target_url();
    let status = |n: &str, json: bool| {
        let mut a = vec![
            "collection-status",
            "--no-encryption",
            "--show-changes-in-set",
            n,
        ];
        if json {
            a.push("--jsonstat");
        }
        a.push(&url);
        text(&dupr_ok(&env, &a).stdout)
    };
    assert_eq!(changed_files(&status("0", false)), ["c.txt"]);
    let full = status("-1", false);
    assert!(
        changed_files(&full).contains(&"a.txt".to_string())
            && !changed_files(&full).contains(&"b.txt".to_string()),
        "-1 is the full:\n{full}"
    );
    assert_eq!(changed_files(&status("-2", false)), ["b.txt"]);
    // `=` spelling too; -3 of three sets is the newest, as in Python.
    let o = dupr_ok(
        &env,
        &[
            "collection-status",
            "--no-encryption",
            "--show-changes-in-set=-3",
            &url,
        ],
    );
    assert_eq!(changed_files(&text(&o.stdout)), ["c.txt"]);

    let json = status("-1", true);
    for (kind, time, file) in [
        ("full", "20231114T221320Z", "a.txt"),
        ("inc", "20231114T231320Z", "b.txt"),
        ("inc", "20231115T001320Z", "c.txt"),
    ] {
        let key = format!("\"{kind}-{time}\"");
        let at = json
            .find(&key)
            .unwrap_or_else(|| panic!("no {key} in:\n{json}"));
        assert!(
            json[at..].contains(&format!("\"{file}\": \"new\"")),
            "{json}"
        );
    }
    // newest first, as duplicity prints them
    assert!(
        json.find("20231115T001320Z") < json.find("20231114T221320Z"),
        "{json}"
    );
    let one = status("1", true);
    assert!(
        one.contains("\"inc-20231114T231320Z\"") && !one.contains("full-"),
        "{one}"
    );
}

/// Past either end: one line naming the option, non-zero exit, no panic.
#[test]
fn show_changes_in_set_out_of_range_is_one_line_error() {
    let env = Env::new();
    three_sets(&env);
    let url = env.target_url();
    for n in ["-4", "3"] {
        let o = dupr_run(
            &env,
            &[
                "collection-status",
                "--no-encryption",
                "--show-changes-in-set",
                n,
                &url,
            ],
        );
        let err = text(&o.stderr);
        assert!(
            !o.status.success() && o.status.code() != Some(101),
            "{n}: {}",
            show(&o)
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{n}: {}", show(&o));
        assert!(err.contains("--show-changes-in-set"), "{n}: {}", show(&o));
    }
}

/// A negative number after any option that takes a value is its value, as in
/// duplicity (argparse), never "no such option: -1"; options that cannot be
/// negative then refuse it in one line.
#[test]
fn negative_numbers_are_option_values() {
    let env = Env::new();
    write(&env.src().join("a.txt"), b"a\n");
    let url = env.target_url();
    let src = env.src();
    let src = src.to_str().unwrap();
    for opt in [
        "--volsize",
        "--num-retries",
        "--concurrency",
        "--full-if-n-inc",
    ] {
        let o = dupr_run(&env, &["full", "--no-encryption", opt, "-1", src, &url]);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{opt} -1 was accepted:\n{}", show(&o));
        assert!(!err.contains("no such option"), "{opt}: {}", show(&o));
        assert!(
            err.contains(opt),
            "{opt}: error does not name it:\n{}",
            show(&o)
        );
        assert!(!env.target().exists(), "{opt}: target written");
    }
    // --current-time is an epoch number; duplicity takes negative ones.
    let o = dupr_run(
        &env,
        &[
            "full",
            "--no-encryption",
            "--current-time",
            "-1",
            "--dry-run",
            src,
            &url,
        ],
    );
    assert!(!text(&o.stderr).contains("no such option"), "{}", show(&o));
}
