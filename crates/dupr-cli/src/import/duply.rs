//! duply profiles (`<profile>/conf`, `exclude`, `pre`/`post`).

use super::*;

/// A duply profile: `duplicity CMD --name duply_PROFILE KEYS VERBOSITY
/// GPG_OPTS DUPL_PARAMS --exclude-filelist DIR/exclude SOURCE TARGET`.
pub(super) fn duply(dir: &Path, text: &str) -> Result<Out> {
    let profile = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "profile".into());
    let mut env = base_env();
    env.insert("CONFDIR".into(), dir.display().to_string());
    env.insert("PROFILE".into(), profile.clone());
    let mut c = Conv::new(Shell::parse(text, env));

    source_and_target(&mut c);
    cache(&mut c, &profile);
    encryption(&mut c, dir);
    options(&mut c);
    retention(&mut c);
    exclude_file(&mut c, dir)?;
    hooks(&mut c, dir);
    Ok(c.leftovers("duply"))
}

/// SOURCE and TARGET (with TARGET_USER/TARGET_PASS, which duply folded
/// into the URL or the environment).
fn source_and_target(c: &mut Conv) {
    c.o.p.source = c.nonempty("SOURCE");
    if c.o.p.source.as_deref() == Some("/path/of/source") {
        c.o.note("SOURCE is still duply's template value");
    }
    let mut target = c.nonempty("TARGET");
    if target.as_deref() == Some("scheme://user[:password]@host[:port]/[/]path") {
        c.o.note("TARGET is still duply's template value");
    }
    if let (Some(user), Some(t)) = (c.nonempty("TARGET_USER"), target.clone()) {
        match t.split_once("://") {
            Some((scheme, rest)) if !scheme.eq_ignore_ascii_case("file") => {
                let host = rest.split('/').next().unwrap_or("");
                if host.contains('@') {
                    c.o.note("TARGET_USER: the TARGET URL names a user already");
                } else {
                    target = Some(format!("{scheme}://{}@{rest}", url_encode(&user)));
                    c.o.note("TARGET_USER: put into the target URL, as duply did");
                }
            }
            _ => c.o.note("TARGET_USER: not used with this target"),
        }
    }
    let pass = c.nonempty("TARGET_PASS").or(c.nonempty("TARGET_PW"));
    if pass.is_some() {
        let var = if target
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("imap"))
        {
            "IMAP_PASSWORD"
        } else {
            "FTP_PASSWORD"
        };
        c.o.note(format!(
            "TARGET_PASS: credentials are not profile fields; duply passed it as {var}: set {var} in the environment of the scheduled run"
        ));
    }
    if let Some(t) = &target {
        c.target_notes(t);
    }
    c.o.p.target = target;
    if c.o.p.source.is_none() || c.o.p.target.is_none() {
        c.o.note("SOURCE or TARGET is not set: give the profile a source and a target");
    }
}

/// The cache: `--name duply_PROFILE`, or `--archive-dir ARCH_DIR --name PROFILE`.
fn cache(c: &mut Conv, profile: &str) {
    match c.nonempty("ARCH_DIR") {
        Some(arch) => {
            let old = format!("duply_{profile}");
            let name = if Path::new(&arch).join(&old).is_dir() {
                old
            } else {
                profile.to_string()
            };
            c.put("archive-dir", &arch, "ARCH_DIR");
            c.put("name", &name, "ARCH_DIR");
        }
        None => {
            let name = format!("duply_{profile}");
            c.put("name", &name, "PROFILE");
            if let Some(root) = duplicity_cache_root().filter(|r| r.join(&name).is_dir()) {
                c.put("archive-dir", &root.display().to_string(), "cache");
                c.o.note(format!(
                    "archive-dir: set to duplicity's cache root, where duply's cache {} is, so no metadata has to be fetched again",
                    root.join(&name).display()
                ));
            }
        }
    }
}

/// Encryption and signing keys, passphrases, gpg options; the key files
/// duply exported beside the conf.
fn encryption(c: &mut Conv, dir: &Path) {
    let gpg_key = c.var("GPG_KEY").unwrap_or_default();
    let keys_enc = c.var("GPG_KEYS_ENC").unwrap_or_default();
    let key_sign = c.var("GPG_KEY_SIGN");
    let pw = c.var("GPG_PW");
    let pw_sign = c.var("GPG_PW_SIGN");
    let disabled = gpg_key.eq_ignore_ascii_case("disabled")
        || (gpg_key.is_empty()
            && keys_enc.is_empty()
            && key_sign.as_deref().unwrap_or("").is_empty()
            && pw.is_none());
    if disabled {
        if !gpg_key.eq_ignore_ascii_case("disabled") {
            c.o.note("GPG_KEY, GPG_KEYS_ENC, GPG_KEY_SIGN and GPG_PW are all empty: duply then disabled encryption, and so does the profile (no-encryption)");
        }
        c.flag("no-encryption", "GPG_KEY");
    } else {
        let mut keys = Vec::new();
        for k in split_keyset(&format!("{gpg_key},{keys_enc}")) {
            if k == "_KEY_ID_" {
                c.o.note("GPG_KEY is still duply's template value");
            } else {
                keys.push(k);
            }
        }
        for k in &keys {
            c.put("encrypt-key", k, "GPG_KEY");
        }
        match key_sign.as_deref().map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("disabled") => {}
            Some(s) if !s.is_empty() => c.put("sign-key", s, "GPG_KEY_SIGN"),
            _ => {
                if let Some(first) = keys.first().cloned() {
                    c.put("sign-key", &first, "GPG_KEY");
                    c.o.note(format!(
                        "sign-key: duply signed with the first GPG_KEY ({first}) only when its secret key was in the keyring; remove sign-key if it is not"
                    ));
                }
            }
        }
        match pw {
            Some(p) if p == "_GPG_PASSWORD_" => {
                c.o.note("GPG_PW is still duply's template value; not copied");
            }
            Some(p) => {
                let clear = !p.is_empty();
                c.o.p.passphrase = Some(p);
                if clear {
                    c.o.note("GPG_PW: copied into the profile as passphrase, in clear (the profile is private, mode 600, as dupr requires then); better put it in a private file and replace `passphrase` with `passphrase-file = \"/path/to/file\"` (or `passphrase-command`)");
                }
            }
            None => {}
        }
        if let Some(p) = pw_sign {
            let clear = !p.is_empty();
            c.o.p.sign_passphrase = Some(p);
            if clear {
                c.o.note("GPG_PW_SIGN: copied into the profile as sign-passphrase, in clear; better use sign-passphrase-file or sign-passphrase-command");
            }
        }
    }
    if let Some(o) = c.nonempty("GPG_OPTS") {
        c.put("gpg-options", &o, "GPG_OPTS");
    }
    if let Some(g) = c.nonempty("GPG").filter(|g| g != "gpg") {
        c.put("gpg-binary", &g, "GPG");
    }
    let tests = c.discard(&["GPG_TEST", "GPG_IMPORT", "GPG_EXPORT"]);
    if !tests.is_empty() {
        c.o.note(format!(
            "{}: dupr neither tests, imports nor exports keys before a run",
            tests.join(", ")
        ));
    }
    let mut keyfiles: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("gpgkey"))
                .collect()
        })
        .unwrap_or_default();
    keyfiles.sort();
    if !keyfiles.is_empty() {
        c.o.note(format!(
            "{}: duply's exported keys; import them with `gpg --import FILE` as the user that runs dupr first (dupr reads keys from that GnuPG home)",
            keyfiles.join(", ")
        ));
    }
}

/// Options, then DUPL_PARAMS, which override them (duply passed only
/// DUPL_PARAMS; its template puts MAX_FULLBKP_AGE and VOLSIZE there).
fn options(c: &mut Conv) {
    if let Some(v) = c.nonempty("VERBOSITY") {
        c.put("verbosity", &v, "VERBOSITY");
    }
    if let Some(t) = c.nonempty("TEMP_DIR") {
        c.put("tempdir", &t, "TEMP_DIR");
    }
    let params = c.var("DUPL_PARAMS").unwrap_or_default();
    let params_words = c.sh.split(&params);
    let in_params = |opt: &str| {
        params_words
            .iter()
            .any(|w| w == opt || w.starts_with(&format!("{opt}=")))
    };
    for (var, opt) in [
        ("MAX_FULLBKP_AGE", "full-if-older-than"),
        ("VOLSIZE", "volsize"),
    ] {
        if let Some(v) = c.nonempty(var) {
            c.put(opt, &v, var);
            if !in_params(&format!("--{opt}")) {
                c.o.note(format!(
                    "{var}: duply applied it only through DUPL_PARAMS (--{opt} ${var}), which this conf does not do; the profile applies it"
                ));
            }
        }
    }
    c.o.words(&params_words, "DUPL_PARAMS");
}

/// Retention (MAX_AGE, MAX_FULL_BACKUPS, MAX_FULLS_WITH_INCRS) and the
/// variables dupr has no use for.
fn retention(c: &mut Conv) {
    let mut retention = Vec::new();
    if let Some(a) = c.nonempty("MAX_AGE") {
        c.o.p.retention.remove_older_than = Some(a);
        retention.push("MAX_AGE (purge)");
    }
    for (var, cmd) in [
        ("MAX_FULL_BACKUPS", "purgeFull"),
        ("MAX_FULLS_WITH_INCRS", "purgeIncr"),
    ] {
        if let Some(v) = c.nonempty(var) {
            match v.trim().parse::<u32>() {
                Ok(n) if var == "MAX_FULL_BACKUPS" => c.o.p.retention.keep_full = Some(n),
                Ok(n) => c.o.p.retention.keep_incrementals_of = Some(n),
                Err(_) => {
                    c.o.note(format!("{var}={v:?} is not a count"));
                    continue;
                }
            }
            retention.push(if cmd == "purgeFull" {
                "MAX_FULL_BACKUPS (purgeFull)"
            } else {
                "MAX_FULLS_WITH_INCRS (purgeIncr)"
            });
        }
    }
    if !retention.is_empty() {
        c.o.note(format!(
            "{}: duply applied them only when its purge commands ran; `dupr -p NAME backup` applies the retention after every backup (`dupr -p NAME purge` alone)",
            retention.join(", ")
        ));
    }
    if c.discard(&["DUPL_PRECMD"]).len() == 1 {
        c.o.note("DUPL_PRECMD: dupr runs itself, with no command in front");
    }
    if c.discard(&["PYTHON"]).len() == 1 {
        c.o.note("PYTHON: dupr needs no interpreter");
    }
}

/// The exclude file: duply passes it as `--exclude-filelist`, after
/// DUPL_PARAMS; its rules go into select in that place.
fn exclude_file(c: &mut Conv, dir: &Path) -> Result<()> {
    let exclude = dir.join("exclude");
    if exclude.is_file() {
        let t = std::fs::read_to_string(&exclude)
            .with_context(|| format!("reading {}", exclude.display()))?;
        for l in filelist_lines(&t, false) {
            c.o.sel.push(Sel::Line(l));
        }
    }
    Ok(())
}

/// The `pre` and `post` scripts, as the profile's hooks.
fn hooks(c: &mut Conv, dir: &Path) {
    for which in ["pre", "post"] {
        let script = dir.join(which);
        let Ok(meta) = std::fs::metadata(&script) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let body = std::fs::read_to_string(&script).unwrap_or_default();
        let mut cmd = shell_quote(&script.display().to_string());
        if meta.permissions().mode() & 0o111 == 0 {
            cmd = format!("bash {cmd}");
            c.o.note(format!(
                "{which}: not executable, so duply sourced it into its own shell; the hook runs it with bash, where only exported variables are set"
            ));
        }
        if body.contains("CONFDIR") {
            cmd = format!("CONFDIR={} {cmd}", shell_quote(&dir.display().to_string()));
        }
        let missing: Vec<&str> = [
            "TARGET_URL_USER",
            "TARGET_URL_PASS",
            "GPG_KEYS_ENC",
            "GPG_KEY_SIGN",
            "GPG_PW",
            "CND_PREV",
            "CND_NEXT",
        ]
        .into_iter()
        .filter(|v| body.contains(v))
        .collect();
        if !missing.is_empty() {
            c.o.note(format!(
                "{which} reads {}, which dupr's hooks do not set",
                missing.join(", ")
            ));
        }
        if which == "pre" {
            c.o.p.hooks.pre = Some(cmd);
            c.o.note("pre: duply's backup ran even when pre failed; dupr stops the run");
        } else {
            c.o.p.hooks.post = Some(cmd);
        }
    }
}

/// duply's key list: comma-separated, `\,` for a comma inside a key.
pub(super) fn split_keyset(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect()
}
