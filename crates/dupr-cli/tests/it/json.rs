//! `--json` (issue 15, item 2): every command's machine-readable output,
//! parsed here as a monitoring script would, against what the archive and
//! the restored tree really hold.

use crate::common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::process::Output;

use common::*;
use serde_json::Value;

fn lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn document(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn run(env: &Env, args: &[&str]) -> Output {
    env.dupr()
        .env("PASSPHRASE", "json-test")
        .arg("--json")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn backup_restore_list_status_verify_remove_as_json() {
    let env = Env::new();
    let src = env.src();
    fs::create_dir(src.join("dir")).unwrap();
    fs::write(src.join("a.txt"), b"hello\n").unwrap();
    fs::write(src.join("dir/big.bin"), pseudo_random_bytes(300_000, 3)).unwrap();
    // Names a JSON writer must escape.
    fs::write(src.join("quote\"back\\slash\nnewline"), b"q").unwrap();
    let url = env.target_url();

    let o = run(&env, &["full", "src", &url]);
    assert!(o.status.success(), "{}", out_text(&o));
    let l = lines(&o);
    let s = l.last().unwrap();
    assert_eq!(s["message_type"], "summary");
    assert_eq!(s["kind"], "full");
    assert_eq!(s["exit_code"], 0);
    // ".", a.txt, dir, dir/big.bin, the odd name.
    assert_eq!(s["source_files"], 5);
    // As duplicity's NewFiles: the regular files.
    assert_eq!(s["new_files"], 3);
    assert_eq!(s["source_file_size"], 300_000 + 6 + 1);
    assert!(s["stored_total"].as_u64().unwrap() > 0);
    for m in &l[..l.len() - 1] {
        assert_eq!(m["message_type"], "status", "{m}");
    }
    // Text statistics and the stderr summary line are not printed.
    assert!(!String::from_utf8_lossy(&o.stdout).contains("Backup Statistics"));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("backup done"));

    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    set_mtime(&src.join("a.txt"), 1_800_000_000);
    let o = run(&env, &["incremental", "src", &url]);
    assert!(o.status.success(), "{}", out_text(&o));
    let s = lines(&o).pop().unwrap();
    assert_eq!(s["kind"], "incremental");
    assert_eq!(s["changed_files"], 1);

    let o = run(&env, &["list-current-files", &url]);
    assert!(o.status.success(), "{}", out_text(&o));
    let d = document(&o);
    let files = d["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            ".",
            "a.txt",
            "dir",
            "dir/big.bin",
            "quote\"back\\slash\nnewline"
        ]
    );
    assert_eq!(files[1]["mtime"], 1_800_000_000);
    assert_eq!(files[2]["type"], "dir");
    assert_eq!(files[3]["type"], "reg");
    assert!(d["last_full"].as_i64().unwrap() > 0);

    let o = run(&env, &["collection-status", &url]);
    assert!(o.status.success(), "{}", out_text(&o));
    let d = document(&o);
    let chains = d["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0]["primary"], true);
    assert_eq!(chains[0]["signatures"], true);
    let kinds: Vec<&str> = chains[0]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["full", "incremental"]);
    assert_eq!(d["problems"].as_array().unwrap().len(), 0);

    let o = run(
        &env,
        &["collection-status", "--file-changed", "a.txt", &url],
    );
    assert!(o.status.success(), "{}", out_text(&o));
    let d = document(&o);
    assert_eq!(d["path"], "a.txt");
    let changes: Vec<(&str, &str)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["change"].as_str().unwrap()))
        .collect();
    assert_eq!(changes, [("full", "new"), ("incremental", "changed")]);

    let o = run(&env, &["verify", &url, "src"]);
    assert!(o.status.success(), "{}", out_text(&o));
    let d = document(&o);
    assert_eq!(d["compared"], 5);
    assert_eq!(d["differences"].as_array().unwrap().len(), 0);

    let dest = env.restore_dir("all");
    let o = run(&env, &["restore", &url, dest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", out_text(&o));
    let s = lines(&o).pop().unwrap();
    assert_eq!(s["message_type"], "summary");
    assert_eq!(s["errors"], 0);
    assert_eq!(s["exit_code"], 0);
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"changed\n");
    assert_same_tree(&src, &dest);

    // Damage: verify's document names the volume and the paths it holds,
    // and the exit code says so.
    let (_, vol) = full_volumes(&env.target()).pop().unwrap();
    flip_middle_byte(&vol);
    let o = run(&env, &["verify", &url]);
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    let d = document(&o);
    assert_eq!(d["exit_code"], 1);
    let problems = d["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{d}");
    let file = problems[0]["file"].as_str().unwrap();
    assert_eq!(file.as_bytes(), vol.file_name().unwrap().as_bytes());
    assert!(problems[0]["affected"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "dir/big.bin"));

    let o = run(&env, &["remove-all-but-n-full", "1", &url]);
    assert!(o.status.success(), "{}", out_text(&o));
    let d = document(&o);
    assert_eq!(d["deleted"], false);
    assert_eq!(d["files"].as_array().unwrap().len(), 0);
}

/// A backup and a restore slower than a second (each upload or download
/// held back) print `status` lines whose counts grow, then a summary with
/// the totals.
#[test]
fn slow_runs_print_status_lines_that_count_up() {
    let env = Env::new();
    let src = env.src();
    for i in 0..3u64 {
        fs::write(
            src.join(format!("f{i}.bin")),
            pseudo_random_bytes(1_500_000, i),
        )
        .unwrap();
    }
    let url = env.target_url();
    // A backup slowed the same way: its status lines carry the source's
    // total (from the stat-only walk) and an ETA once bytes are done.
    let o = env
        .dupr()
        .env("PASSPHRASE", "json-test")
        .env("DUPR_FAULTS", "put:1+:delay=1200")
        .args(["--json", "full", "--volsize", "1", "src", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(full_volumes(&env.target()).len() >= 3);
    let l = lines(&o);
    let with_eta: Vec<&Value> = l
        .iter()
        .filter(|m| m["message_type"] == "status" && m["bytes_done"].as_u64() > Some(0))
        .collect();
    assert!(!with_eta.is_empty(), "{}", out_text(&o));
    for m in with_eta {
        assert_eq!(m["total_bytes"], 4_500_000, "{m}");
        assert!(m["seconds_remaining"].is_u64(), "{m}");
    }

    let dest = env.restore_dir("slow");
    let o = env
        .dupr()
        .env("PASSPHRASE", "json-test")
        .env("DUPR_FAULTS", "open:1+:delay=1200,get:1+:delay=1200")
        .args(["--json", "restore", &url, dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_text(&o));
    let l = lines(&o);
    let (summary, status) = l.split_last().unwrap();
    assert_eq!(summary["message_type"], "summary");
    assert_eq!(summary["files"], 3);
    assert_eq!(summary["bytes"], 4_500_000);
    assert!(!status.is_empty(), "no status line: {}", out_text(&o));
    let mut last = (0, 0);
    for m in status {
        assert_eq!(m["message_type"], "status", "{m}");
        let now = (
            m["files_done"].as_u64().unwrap(),
            m["bytes_done"].as_u64().unwrap(),
        );
        assert!(now.0 >= last.0 && now.1 >= last.1, "counts went down: {m}");
        assert!(now.0 <= 3 && now.1 <= 4_500_000, "{m}");
        last = now;
    }
    // Files were counted while the restore was still waiting on volumes.
    assert!(
        status.iter().any(|m| m["files_done"].as_u64() > Some(0)),
        "{}",
        out_text(&o)
    );
    assert_same_tree(&src, &dest);
}

#[test]
fn errors_are_one_json_object_with_the_exit_code() {
    let env = Env::new();
    fs::write(env.src().join("f"), b"x").unwrap();
    let url = env.target_url();
    let o = run(&env, &["full", "src", &url]);
    assert!(o.status.success(), "{}", out_text(&o));

    let o = env
        .dupr()
        .env("PASSPHRASE", "not-the-passphrase")
        .args(["--json", "restore", &url])
        .arg(env.restore_dir("wrong"))
        .output()
        .unwrap();
    let code = o.status.code().unwrap();
    assert_eq!(code, 31, "{}", out_text(&o));
    assert!(o.stdout.is_empty(), "{}", out_text(&o));
    let e: Value = serde_json::from_slice(&o.stderr)
        .unwrap_or_else(|e| panic!("stderr is not one JSON object ({e}): {}", out_text(&o)));
    assert_eq!(e["message_type"], "error");
    assert_eq!(e["code"], 31);
    assert!(e["message"].as_str().unwrap().contains("passphrase"), "{e}");
    assert!(!env.restore_dir("wrong").exists());

    // No backup there: nothing on stdout, the error names the target.
    let o = run(
        &env,
        &["list-current-files", &file_url(&env.path().join("none"))],
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "{}", out_text(&o));
    let e: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("no backup found"),
        "{e}"
    );
}
