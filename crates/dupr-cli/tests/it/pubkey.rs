//! Public-key encryption and signing (duplicity's `--encrypt-key`,
//! `--hidden-encrypt-key`, `--sign-key`), done natively by dupr, with keys
//! made by the real gpg in throwaway GnuPG homes:
//!
//! * A: RSA-2048 primary [SC] + RSA-2048 encryption subkey, passphrase `pa`;
//! * B: ed25519 primary [SC] + cv25519 encryption subkey, passphrase `pb`.
//!
//! Covers: backups needing no passphrase, restore with the secret key,
//! signing and signature checks, several and hidden recipients, gpg reading
//! dupr's volumes, both duplicitys in both directions, and the failures
//! (unknown key, volume for another key, wrong passphrase, unsigned or
//! tampered volume).

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;

const PA: &str = "pa";
const PB: &str = "pb";

fn gpg(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home)
        .env("LC_ALL", "C")
        .args(["--batch", "--no-tty"])
        .args(args);
    let out = match stdin {
        Some(s) => {
            use std::io::Write;
            let mut child = c
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run gpg");
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
        None => c.output().expect("run gpg"),
    };
    assert!(
        out.status.success(),
        "gpg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One generated key.
struct Key {
    fpr: String,
    /// Long key id of the encryption subkey (what PKESKs name).
    enc_id: String,
    /// Long key id of the primary (the signer).
    id: String,
    /// Exported secret key file.
    secret_file: PathBuf,
    /// Exported public key file.
    public_file: PathBuf,
}

struct Keys {
    master: PathBuf,
    a: Key,
    b: Key,
}

fn key_info(home: &Path, uid: &str, dir: &Path, name: &str, pass: &str, armor: bool) -> Key {
    let out = gpg(home, &["--with-colons", "--list-keys", uid], None);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fpr = None;
    let mut id = None;
    let mut enc_id = None;
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        match f[0] {
            "pub" => id = Some(f[4].to_string()),
            "fpr" if fpr.is_none() => fpr = Some(f[9].to_string()),
            "sub" if f[11].contains('e') => enc_id = Some(f[4].to_string()),
            _ => {}
        }
    }
    let fpr = fpr.expect("fingerprint");
    let secret_file = dir.join(format!("{name}.sec"));
    let public_file = dir.join(format!("{name}.pub"));
    let mut args = vec![
        "--pinentry-mode",
        "loopback",
        "--passphrase-fd",
        "0",
        "--export-secret-keys",
    ];
    if armor {
        args.insert(0, "--armor");
    }
    args.push(&fpr);
    let sec = gpg(home, &args, Some(pass));
    assert!(!sec.stdout.is_empty());
    fs::write(&secret_file, &sec.stdout).unwrap();
    let mut args = vec!["--export"];
    if armor {
        args.insert(0, "--armor");
    }
    args.push(&fpr);
    fs::write(&public_file, gpg(home, &args, None).stdout).unwrap();
    Key {
        fpr,
        enc_id: enc_id.expect("encryption subkey"),
        id: id.expect("key id"),
        secret_file,
        public_file,
    }
}

/// The two test keys, generated once per test run.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pubkey-keys");
        let home = dir.join("home");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&home).unwrap();
        chmod(&home, 0o700);
        let gen = |pass: &str, args: &[&str]| {
            let mut a = vec!["--pinentry-mode", "loopback", "--passphrase", pass];
            a.extend_from_slice(args);
            gpg(&home, &a, None);
        };
        gen(
            PA,
            &[
                "--quick-gen-key",
                "Alice <a@example.org>",
                "rsa2048",
                "default",
                "never",
            ],
        );
        let a_fpr = fpr_of(&home, "a@example.org");
        gen(PA, &["--quick-add-key", &a_fpr, "rsa2048", "encr", "never"]);
        gen(
            PB,
            &[
                "--quick-gen-key",
                "Bob <b@example.org>",
                "ed25519",
                "sign",
                "never",
            ],
        );
        let b_fpr = fpr_of(&home, "b@example.org");
        gen(PB, &["--quick-add-key", &b_fpr, "cv25519", "encr", "never"]);
        let a = key_info(&home, "a@example.org", &dir, "a", PA, true);
        let b = key_info(&home, "b@example.org", &dir, "b", PB, false);
        kill_agent(&home);
        Keys { master: home, a, b }
    })
}

fn fpr_of(home: &Path, uid: &str) -> String {
    let out = gpg(home, &["--with-colons", "--list-keys", uid], None);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .map(|l| l.split(':').nth(9).unwrap().to_string())
        .expect("fingerprint")
}

fn kill_agent(home: &Path) {
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home)
        .args(["--kill", "gpg-agent"])
        .output();
}

/// A per-test GnuPG home (a copy of the key master, or empty); its agent is
/// stopped on drop.
struct Home(PathBuf);

impl Home {
    fn full(env: &Env) -> Home {
        let k = keys();
        let h = env.path().join("gnupg");
        fs::create_dir_all(h.join("private-keys-v1.d")).unwrap();
        chmod(&h, 0o700);
        for f in ["pubring.kbx", "trustdb.gpg"] {
            fs::copy(k.master.join(f), h.join(f)).unwrap();
        }
        for e in fs::read_dir(k.master.join("private-keys-v1.d")).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), h.join("private-keys-v1.d").join(e.file_name())).unwrap();
        }
        Home(h)
    }

    fn empty(env: &Env) -> Home {
        let h = env.path().join("gnupg-empty");
        fs::create_dir_all(&h).unwrap();
        chmod(&h, 0o700);
        Home(h)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        kill_agent(&self.0);
    }
}

/// dupr with the env's cache, `home` as GNUPGHOME and `vars` set.
fn dupr_in(env: &Env, home: &Home, vars: &[(&str, &str)]) -> assert_cmd::Command {
    let mut c = env.dupr();
    c.env("GNUPGHOME", home.path());
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// A fresh cache dir, so restores read (and decrypt) the remote manifests.
fn fresh_cache(env: &Env, name: &str) -> PathBuf {
    let p = env.path().join(format!("cache-{name}"));
    fs::create_dir_all(&p).unwrap();
    p
}

/// The tutorial set-up's backup: the tricky tree encrypted to A, signed
/// by B.
fn full_to_a_signed_by_b(k: &Keys, env: &Env, home: &Home) {
    small_tree(env);
    dupr_in(env, home, &[("SIGN_PASSPHRASE", PB)])
        .args(["full", "--encrypt-key", &k.a.fpr, "--sign-key", &k.b.fpr])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
}

fn small_tree(env: &Env) {
    make_tricky_tree(&env.src(), 300_000);
}

fn volumes(env: &Env) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(env.target())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".difftar."))
        .collect();
    v.sort();
    v
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn restore_is_empty(p: &Path) -> bool {
    !p.exists() || fs::read_dir(p).unwrap().next().is_none()
}

#[test]
fn encrypt_key_only_backup_needs_no_passphrase() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    small_tree(&env);
    // No PASSPHRASE at all: public keys only.
    dupr_in(&env, &home, &[])
        .args(["full", "--encrypt-key", "a@example.org"])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
    let vols = volumes(&env);
    assert!(!vols.is_empty());
    for v in &vols {
        assert!(v.to_string_lossy().ends_with(".difftar.gpg"));
    }
    // Restore with the secret key (from the GnuPG home) and its passphrase,
    // through the remote (encrypted) manifest.
    let dest = env.restore_dir("a");
    dupr_in(&env, &home, &[("PASSPHRASE", PA)])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "a"))
        .args(["restore", "--encrypt-key", &k.a.fpr])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
    // Like duplicity, a restore needs no key option: the PKESK names the key.
    let dest = env.restore_dir("nokey");
    dupr_in(&env, &home, &[("PASSPHRASE", PA)])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "nokey"))
        .args(["restore"])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
    // The key id forms gpg accepts: short id with 0x, long id.
    for id in [format!("0x{}", &k.a.id[8..]), k.a.id.clone()] {
        dupr_in(&env, &home, &[("PASSPHRASE", PA)])
            .args(["list-current-files", "--encrypt-key", &id])
            .arg(env.target_url())
            .assert()
            .success();
    }
}

#[test]
fn encrypt_and_sign_gpg_reads_it() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    full_to_a_signed_by_b(k, &env, &home);
    // gpg decrypts every stored file and reports B's good signature.
    for e in fs::read_dir(env.target()).unwrap() {
        let p = e.unwrap().path();
        let out_file = env.path().join("gpg-out");
        let _ = fs::remove_file(&out_file);
        let out = gpg(
            home.path(),
            &[
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
                "--status-fd",
                "1",
                "-o",
                out_file.to_str().unwrap(),
                "-d",
                p.to_str().unwrap(),
            ],
            Some(PA),
        );
        let status = String::from_utf8_lossy(&out.stdout);
        assert!(
            status.contains(&format!("GOODSIG {}", k.b.id)),
            "{}: {status}",
            p.display()
        );
        assert!(
            status.contains(&format!("ENC_TO {}", k.a.enc_id)),
            "{status}"
        );
    }
    // Restore checks the volumes' signatures.
    let dest = env.restore_dir("signed");
    dupr_in(&env, &home, &[("PASSPHRASE", PA)])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "signed"))
        .args(["restore", "--encrypt-key", &k.a.fpr, "--sign-key", &k.b.fpr])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
    // Signed by B, but A is required: exit 22 naming the volume.
    let dest = env.restore_dir("wrong-signer");
    let out = dupr_in(&env, &home, &[("PASSPHRASE", PA)])
        .args(["restore", "--sign-key", &k.a.fpr])
        .arg(env.target_url())
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(22), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(".vol1.difftar.gpg"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(&k.b.id), "{}", stderr(&out));
}

#[test]
fn encrypt_sign_key_reuses_passphrase() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    small_tree(&env);
    // --encrypt-sign-key B: B's passphrase in PASSPHRASE serves signing too.
    dupr_in(&env, &home, &[("PASSPHRASE", PB)])
        .args(["full", "--encrypt-sign-key", &k.b.fpr])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
    // ... and SIGN_PASSPHRASE serves decryption (the other way round).
    let dest = env.restore_dir("b");
    dupr_in(&env, &home, &[("SIGN_PASSPHRASE", PB)])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "b"))
        .args(["restore", "--encrypt-sign-key", &k.b.fpr])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
}

#[test]
fn unsigned_volume_fails_the_sign_check() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    small_tree(&env);
    dupr_in(&env, &home, &[])
        .args(["full", "--encrypt-key", &k.a.fpr])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
    let dest = env.restore_dir("x");
    let out = dupr_in(&env, &home, &[("PASSPHRASE", PA)])
        .args(["restore", "--encrypt-key", &k.a.fpr, "--sign-key", &k.b.fpr])
        .arg(env.target_url())
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(22), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(".vol1.difftar.gpg"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not signed"), "{}", stderr(&out));
}

#[test]
fn two_recipients_either_secret_key_restores() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    let empty = Home::empty(&env);
    small_tree(&env);
    // Key files instead of the GnuPG home: armored (A) and binary (B) exports.
    dupr_in(&env, &empty, &[])
        .args(["full", "--encrypt-key-file"])
        .arg(&k.a.public_file)
        .arg("--encrypt-key-file")
        .arg(&k.b.public_file)
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
    let vol = &volumes(&env)[0];
    let packets = gpg(
        home.path(),
        &["--list-packets", "--list-only", vol.to_str().unwrap()],
        None,
    );
    let listing = String::from_utf8_lossy(&packets.stdout).to_string();
    assert!(listing.contains(&k.a.enc_id), "{listing}");
    assert!(listing.contains(&k.b.enc_id), "{listing}");
    for (name, key, pass) in [("a", &k.a, PA), ("b", &k.b, PB)] {
        let dest = env.restore_dir(name);
        dupr_in(&env, &empty, &[("PASSPHRASE", pass)])
            .env("XDG_CACHE_HOME", fresh_cache(&env, name))
            .arg("restore")
            .arg("--encrypt-key-file")
            .arg(&key.secret_file)
            .arg(env.target_url())
            .arg(&dest)
            .assert()
            .success();
        assert_same_tree(&env.src(), &dest);
    }
}

#[test]
fn hidden_recipient() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    small_tree(&env);
    dupr_in(&env, &home, &[])
        .args(["full", "--hidden-encrypt-key", "b@example.org"])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
    let vol = &volumes(&env)[0];
    let packets = gpg(
        home.path(),
        &["--list-packets", "--list-only", vol.to_str().unwrap()],
        None,
    );
    let listing = String::from_utf8_lossy(&packets.stdout).to_string();
    assert!(listing.contains("keyid 0000000000000000"), "{listing}");
    assert!(!listing.contains(&k.b.enc_id), "{listing}");
    // gpg finds the key by trying its secret keys.
    let out = gpg(
        home.path(),
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "-o",
            env.path().join("plain").to_str().unwrap(),
            "-d",
            vol.to_str().unwrap(),
        ],
        Some(PB),
    );
    assert!(out.status.success());
    let dest = env.restore_dir("hidden");
    dupr_in(&env, &home, &[("PASSPHRASE", PB)])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "hidden"))
        .args(["restore", "--hidden-encrypt-key", &k.b.fpr])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
    // Without naming the key, dupr tries the secret keys at hand, as gpg
    // does for an anonymous recipient (and duplicity's restart test relies
    // on): a's does not unlock with PB, b's does.
    let dest = env.restore_dir("hidden2");
    dupr_in(&env, &home, &[("PASSPHRASE", PB)])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "hidden2"))
        .arg("restore")
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
    // None unlocks: the error says the recipient is anonymous.
    let out = dupr_in(&env, &home, &[("PASSPHRASE", "not-it")])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "hidden3"))
        .arg("restore")
        .arg(env.target_url())
        .arg(env.restore_dir("hidden3"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("anonymous recipient"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_keys_are_named() {
    let env = Env::new();
    let home = Home::full(&env);
    small_tree(&env);
    for (opt, code) in [
        ("--sign-key", 80),
        ("--encrypt-key", 81),
        ("--hidden-encrypt-key", 82),
    ] {
        let out = dupr_in(&env, &home, &[("PASSPHRASE", "x")])
            .args(["full", opt, "0xDEADBEEFDEADBEEF"])
            .arg(env.src())
            .arg(env.target_url())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{opt}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("0xDEADBEEFDEADBEEF"), "{err}");
        assert!(err.contains("pubring.kbx"), "{err}");
    }
    let out = dupr_in(&env, &home, &[])
        .args(["full", "--encrypt-key", "nobody@example.org"])
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(81));
    assert!(stderr(&out).contains("nobody@example.org"));
    assert!(!env.target().exists() || volumes(&env).is_empty());
}

#[test]
fn volume_for_another_key_names_the_key() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    let empty = Home::empty(&env);
    small_tree(&env);
    dupr_in(&env, &home, &[])
        .args(["full", "--encrypt-key", &k.b.fpr])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
    // Only A's secret key is at hand.
    let dest = env.restore_dir("x");
    let out = dupr_in(&env, &empty, &[("PASSPHRASE", PA)])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "x"))
        .arg("restore")
        .arg("--encrypt-key-file")
        .arg(&k.a.secret_file)
        .arg(env.target_url())
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(31), "{}", stderr(&out));
    assert!(stderr(&out).contains(&k.b.enc_id), "{}", stderr(&out));
    assert!(restore_is_empty(&dest));
}

#[test]
fn wrong_passphrase_writes_nothing() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    small_tree(&env);
    dupr_in(&env, &home, &[])
        .args(["full", "--encrypt-key", &k.a.fpr])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
    // Named key (unlocked up front), and found through the PKESK (lazily).
    for (name, args) in [
        ("named", vec!["--encrypt-key", &k.a.fpr]),
        ("found", vec![]),
    ] {
        let dest = env.restore_dir(name);
        let out = dupr_in(&env, &home, &[("PASSPHRASE", "not the passphrase")])
            .env("XDG_CACHE_HOME", fresh_cache(&env, name))
            .arg("restore")
            .args(args)
            .arg(env.target_url())
            .arg(&dest)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(31), "{}", stderr(&out));
        assert!(stderr(&out).contains("passphrase"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("not the passphrase"));
        assert!(restore_is_empty(&dest));
    }
    // A wrong sign passphrase stops a backup before it writes anything.
    let env2 = Env::new();
    make_tricky_tree(&env2.src(), 1000);
    let out = dupr_in(&env2, &home, &[("SIGN_PASSPHRASE", "nope")])
        .args(["full", "--encrypt-key", &k.a.fpr, "--sign-key", &k.b.fpr])
        .arg(env2.src())
        .arg(env2.target_url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(31), "{}", stderr(&out));
    assert!(stderr(&out).contains("passphrase"), "{}", stderr(&out));
    assert!(!env2.target().exists() || volumes(&env2).is_empty());
}

#[test]
fn tampered_volume_is_caught() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    full_to_a_signed_by_b(k, &env, &home);
    let vol = &volumes(&env)[0];
    let mut data = fs::read(vol).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    fs::write(vol, data).unwrap();
    let out = dupr_in(&env, &home, &[("PASSPHRASE", PA)])
        .args(["restore", "--encrypt-key", &k.a.fpr, "--sign-key", &k.b.fpr])
        .arg(env.target_url())
        .arg(env.restore_dir("t"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
}

#[test]
fn duplicity_restores_dupr_public_key_backups() {
    let k = keys();
    for v in Dup::ALL {
        let env = Env::new();
        let home = Home::full(&env);
        small_tree(&env);
        dupr_in(&env, &home, &[("SIGN_PASSPHRASE", PB)])
            .args(["full", "--encrypt-key", &k.a.fpr, "--sign-key", &k.b.fpr])
            .arg(env.src())
            .arg(env.target_url())
            .assert()
            .success();
        let dest = env.restore_dir("dup");
        let archive = env.archive_dir(v);
        run_duplicity(
            v,
            [
                OsStr::new("restore"),
                OsStr::new("--encrypt-key"),
                OsStr::new(&k.a.fpr),
                OsStr::new("--sign-key"),
                OsStr::new(&k.b.fpr),
                OsStr::new("--archive-dir"),
                archive.as_os_str(),
                OsStr::new(&env.target_url()),
                dest.as_os_str(),
            ],
            &[
                ("GNUPGHOME", home.path().to_str().unwrap()),
                ("PASSPHRASE", PA),
                ("SIGN_PASSPHRASE", PB),
            ],
        );
        assert_same_tree(&env.src(), &dest);
    }
}

#[test]
fn dupr_restores_duplicity_public_key_backups() {
    let k = keys();
    for v in Dup::ALL {
        let env = Env::new();
        let home = Home::full(&env);
        small_tree(&env);
        let archive = env.archive_dir(v);
        run_duplicity(
            v,
            [
                OsStr::new("full"),
                OsStr::new("--encrypt-key"),
                OsStr::new(&k.b.fpr),
                OsStr::new("--sign-key"),
                OsStr::new(&k.b.fpr),
                OsStr::new("--archive-dir"),
                archive.as_os_str(),
                env.src().as_os_str(),
                OsStr::new(&env.target_url()),
            ],
            &[
                ("GNUPGHOME", home.path().to_str().unwrap()),
                ("PASSPHRASE", PB),
                ("SIGN_PASSPHRASE", PB),
            ],
        );
        let dest = env.restore_dir("dupr");
        dupr_in(&env, &home, &[("PASSPHRASE", PB)])
            .args(["restore", "--encrypt-key", &k.b.fpr, "--sign-key", &k.b.fpr])
            .arg(env.target_url())
            .arg(&dest)
            .assert()
            .success();
        assert_same_tree(&env.src(), &dest);
        // The same with the RSA key, from a key file, no GnuPG home at all.
        let env = Env::new();
        let home = Home::full(&env);
        let empty = Home::empty(&env);
        small_tree(&env);
        let archive = env.archive_dir(v);
        run_duplicity(
            v,
            [
                OsStr::new("full"),
                OsStr::new("--encrypt-key"),
                OsStr::new(&k.a.fpr),
                OsStr::new("--archive-dir"),
                archive.as_os_str(),
                env.src().as_os_str(),
                OsStr::new(&env.target_url()),
            ],
            &[("GNUPGHOME", home.path().to_str().unwrap())],
        );
        let dest = env.restore_dir("dupr");
        dupr_in(&env, &empty, &[("PASSPHRASE", PA)])
            .arg("restore")
            .arg("--encrypt-key-file")
            .arg(&k.a.secret_file)
            .arg(env.target_url())
            .arg(&dest)
            .assert()
            .success();
        assert_same_tree(&env.src(), &dest);
    }
}

/// The set names on the target, oldest first: (kind, time string).
fn set_times(target: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".manifest.gpg"))
        .map(|n| {
            let kind = if n.starts_with("duplicity-full.") {
                "full"
            } else {
                "inc"
            };
            // duplicity-full.T.manifest.gpg / duplicity-inc.T1.to.T2.manifest.gpg
            let t = n
                .trim_end_matches(".manifest.gpg")
                .rsplit('.')
                .next()
                .unwrap();
            (kind.to_string(), t.to_string())
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The duplicity-backup.sh tutorial's set-up: one key encrypts (A, its
/// passphrase in PASSPHRASE), another signs (B, SIGN_PASSPHRASE), the two
/// passphrases differ. Every command of the wrapper works past the first
/// full; those that work from names and the cache need no decryption key
/// at all; those that decrypt name the key and the variable when its
/// passphrase is missing or wrong; both duplicitys restore the result.
#[test]
fn tutorial_two_keys_whole_sequence() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    small_tree(&env);
    let keyargs = ["--encrypt-key", &k.a.fpr, "--sign-key", &k.b.id];
    let both = [("PASSPHRASE", PA), ("SIGN_PASSPHRASE", PB)];
    let backup = |kind: &str, vars: &[(&str, &str)]| {
        let mut c = dupr_in(&env, &home, vars);
        if !kind.is_empty() {
            c.arg(kind);
        }
        let out = c
            .args(keyargs)
            .arg(env.src())
            .arg(env.target_url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind} with {:?}: {}",
            vars.iter().map(|v| v.0).collect::<Vec<_>>(),
            stderr(&out)
        );
    };
    let states = env.path().join("states");
    fs::create_dir_all(&states).unwrap();
    backup("full", &both);
    copy_tree(&env.src(), &states.join("0"));
    // The second run: the tutorial's own environment.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(env.src().join("new-1.txt"), b"after the full\n").unwrap();
    backup("incr", &both);
    copy_tree(&env.src(), &states.join("1"));
    // Only the signing key's passphrase (a backup host that never holds
    // the decryption passphrase), then PASSPHRASE set to the wrong key's:
    // the remote check falls back to what it can see without decrypting.
    for (i, vars) in [
        vec![("SIGN_PASSPHRASE", PB)],
        vec![("PASSPHRASE", PB), ("SIGN_PASSPHRASE", PB)],
    ]
    .iter()
    .enumerate()
    {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs::write(env.src().join(format!("new-{}.txt", i + 2)), b"more\n").unwrap();
        backup(if i == 0 { "" } else { "incr" }, vars);
    }
    let sets = set_times(&env.target());
    assert_eq!(
        sets.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["full", "inc", "inc", "inc"]
    );

    // Listing and status from the cache: no PASSPHRASE, no secret key use.
    for extra in [&[][..], &["--no-check-remote"][..]] {
        let out = dupr_in(&env, &home, &[])
            .arg("list-current-files")
            .args(extra)
            .args(keyargs)
            .arg(env.target_url())
            .output()
            .unwrap();
        assert!(out.status.success(), "list: {}", stderr(&out));
        assert_eq!(
            parse_listing(&out.stdout),
            listing_of_tree(&env.src()),
            "list-current-files"
        );
        let out = dupr_in(&env, &home, &[])
            .arg("collection-status")
            .args(extra)
            .args(keyargs)
            .arg(env.target_url())
            .output()
            .unwrap();
        assert!(out.status.success(), "status: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Incremental"), "{text}");
    }

    // Restore all, one file, and as of the full: PASSPHRASE is A's.
    let dest = env.restore_dir("all");
    dupr_in(&env, &home, &both)
        .arg("restore")
        .args(keyargs)
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
    let one = env.path().join("one.txt");
    dupr_in(&env, &home, &both)
        .args(["restore", "--path-to-restore", "new-2.txt"])
        .args(keyargs)
        .arg(env.target_url())
        .arg(&one)
        .assert()
        .success();
    assert_eq!(fs::read(&one).unwrap(), b"more\n");
    for (i, (_, t)) in sets.iter().take(2).enumerate() {
        let dest = env.restore_dir(&format!("t{i}"));
        dupr_in(&env, &home, &both)
            .args(["restore", "-t", t])
            .args(keyargs)
            .arg(env.target_url())
            .arg(&dest)
            .assert()
            .success();
        assert_same_tree(&states.join(i.to_string()), &dest);
    }

    // Decrypting without A's passphrase, or with B's: a one-line error
    // naming A's key and PASSPHRASE, exit 31, nothing restored.
    for (vars, args, want) in [
        (
            &[("SIGN_PASSPHRASE", PB)][..],
            &keyargs[..],
            "set PASSPHRASE",
        ),
        (&[][..], &[][..], "set PASSPHRASE"),
        (
            &[("PASSPHRASE", PB), ("SIGN_PASSPHRASE", PB)][..],
            &keyargs[..],
            "wrong passphrase",
        ),
    ] {
        let dest = env.restore_dir("denied");
        let out = dupr_in(&env, &home, vars)
            .arg("restore")
            .args(args)
            .arg(env.target_url())
            .arg(&dest)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(31), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(err.contains(&k.a.enc_id) || err.contains(&k.a.fpr), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(restore_is_empty(&dest));
        // A lost cache needs the decryption key to rebuild: said the same way.
        let out = dupr_in(&env, &home, vars)
            .env("XDG_CACHE_HOME", fresh_cache(&env, "lost"))
            .arg("list-current-files")
            .args(args)
            .arg(env.target_url())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(31), "{err}");
        assert!(err.contains(want) && err.contains("PASSPHRASE"), "{err}");
    }
    // verify decrypts: it works with A's passphrase.
    dupr_in(&env, &home, &both)
        .arg("verify")
        .args(keyargs)
        .arg(env.target_url())
        .arg(env.src())
        .assert()
        .success();

    // Both duplicitys restore what dupr wrote (as of now, and of the full).
    for v in Dup::ALL {
        for (name, t, state) in [
            ("now", "now", env.src()),
            ("full", &*sets[0].1, states.join("0")),
        ] {
            let dest = env.restore_dir(&format!("{}-{name}", v.label()));
            let archive = env.archive_dir(v);
            run_duplicity(
                v,
                [
                    OsStr::new("restore"),
                    OsStr::new("-t"),
                    OsStr::new(t),
                    OsStr::new("--encrypt-key"),
                    OsStr::new(&k.a.fpr),
                    OsStr::new("--sign-key"),
                    OsStr::new(&k.b.id),
                    OsStr::new("--archive-dir"),
                    archive.as_os_str(),
                    OsStr::new(&env.target_url()),
                    dest.as_os_str(),
                ],
                &[
                    ("GNUPGHOME", home.path().to_str().unwrap()),
                    ("PASSPHRASE", PA),
                    ("SIGN_PASSPHRASE", PB),
                ],
            );
            assert_same_tree(&state, &dest);
        }
    }

    // Retention and cleanup with the public keys alone.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    backup("full", &[("SIGN_PASSPHRASE", PB)]);
    let sets = set_times(&env.target());
    let last_full = &sets.last().unwrap().1;
    fs::write(
        env.target()
            .join("duplicity-inc.20200101T000000Z.to.20200102T000000Z.vol1.difftar.gpg"),
        b"orphan",
    )
    .unwrap();
    let out = dupr_in(&env, &home, &[])
        .args(["cleanup", "--force"])
        .args(keyargs)
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(out.status.success(), "cleanup: {}", stderr(&out));
    assert!(!env
        .target()
        .join("duplicity-inc.20200101T000000Z.to.20200102T000000Z.vol1.difftar.gpg")
        .exists());
    let out = dupr_in(&env, &home, &[])
        .args(["remove-older-than", last_full, "--force"])
        .args(keyargs)
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(out.status.success(), "remove-older-than: {}", stderr(&out));
    let left = set_times(&env.target());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(&left[0].1, last_full);
    let dest = env.restore_dir("after-retention");
    dupr_in(&env, &home, &both)
        .arg("restore")
        .args(keyargs)
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
}

/// The tutorial's set-up as a profile (passphrases from private files, the
/// decryption one absent as on a backup-only host), run twice as the timer
/// would: both runs back up, the second incrementally, and its cleanup and
/// retention need no decryption key.
#[test]
fn tutorial_two_keys_profile_runs_twice() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    small_tree(&env);
    let conf = env.path().join("conf");
    fs::create_dir_all(&conf).unwrap();
    let sign_pass = conf.join("sign.pass");
    fs::write(&sign_pass, PB).unwrap();
    chmod(&sign_pass, 0o600);
    let profile = conf.join("tutorial.toml");
    fs::write(
        &profile,
        format!(
            "source = {:?}\ntarget = {:?}\nencrypt-key = [{:?}]\nsign-key = {:?}\n\
             sign-passphrase-file = {:?}\nlog-dir = {:?}\n[retention]\nkeep-full = 2\n",
            env.src().to_str().unwrap(),
            env.target_url(),
            k.a.fpr,
            k.b.id,
            sign_pass.to_str().unwrap(),
            env.path().join("logs").to_str().unwrap(),
        ),
    )
    .unwrap();
    chmod(&profile, 0o600);
    for run in 0..2 {
        if run == 1 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
            fs::write(env.src().join("second-run.txt"), b"second\n").unwrap();
        }
        let out = dupr_in(&env, &home, &[])
            .env("XDG_STATE_HOME", env.path().join("state"))
            .arg("-c")
            .arg(&profile)
            .arg("backup")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "profile run {run}: {}\n{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let sets = set_times(&env.target());
    assert_eq!(
        sets.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["full", "inc"]
    );
    let dest = env.restore_dir("profile");
    dupr_in(&env, &home, &[("PASSPHRASE", PA)])
        .arg("restore")
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&env.src(), &dest);
}

/// `dupr mount` of the tutorial set-up (encrypted to A, signed by B): the
/// secret key's passphrase is checked at mount, files read back whole.
#[test]
fn mount_reads_a_public_key_archive_with_the_secret_key() {
    let k = keys();
    let env = Env::new();
    let home = Home::full(&env);
    full_to_a_signed_by_b(k, &env, &home);
    let mnt = env.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // A wrong passphrase for A's secret key: refused before mounting.
    let out = dupr_in(&env, &home, &[("PASSPHRASE", "wrong")])
        .env("XDG_CACHE_HOME", fresh_cache(&env, "m1"))
        .arg("mount")
        .arg(env.target_url())
        .arg(&mnt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(31), "{}", stderr(&out));
    let mounted = || {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == mnt.to_str())
    };
    assert!(!mounted());
    let mut child = Command::new(dupr_bin())
        .env_remove("SIGN_PASSPHRASE")
        .env("GNUPGHOME", home.path())
        .env("PASSPHRASE", PA)
        .env("XDG_CACHE_HOME", fresh_cache(&env, "m2"))
        .arg("mount")
        .arg(env.target_url())
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !mounted() {
        assert!(child.try_wait().unwrap().is_none(), "dupr mount exited");
        assert!(t0.elapsed().as_secs() < 60, "mount timed out");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for f in ["hello.txt", "big.bin", "dir/sub/subsub/c.txt"] {
        assert_eq!(
            fs::read(mnt.join("latest").join(f)).unwrap(),
            fs::read(env.src().join(f)).unwrap(),
            "{f}"
        );
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(!mounted());
}
