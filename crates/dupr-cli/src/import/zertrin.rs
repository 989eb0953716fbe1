//! zertrin's duplicity-backup.sh configuration (duplicity-backup.conf).

use super::*;

/// zertrin's duplicity-backup.sh (1.6): `duplicity CMD VERBOSITY
/// STATIC_OPTIONS ENCRYPT EXCLUDE INCLUDE [--exclude=**] ROOT DEST`.
pub(super) fn zertrin(text: &str) -> Result<Out> {
    let mut c = Conv::new(Shell::parse(text, base_env()));
    c.o.p.source = c.nonempty("ROOT");
    let dest = c.nonempty("DEST");
    if let Some(d) = &dest {
        c.target_notes(d);
    }
    c.o.p.target = dest.clone();
    if c.o.p.source.is_none() || dest.is_none() {
        c.o.note("ROOT or DEST is not set: give the profile a source and a target");
    }

    if let Some(v) = c.nonempty("VERBOSITY") {
        c.words(&v, "VERBOSITY");
    }
    let mut static_options = c.var("STATIC_OPTIONS").unwrap_or_default();
    if let Some(s) = c.nonempty("STORAGECLASS") {
        static_options = format!("{static_options} {s}");
    }
    c.words(&static_options, "STATIC_OPTIONS");

    encryption(&mut c);
    selection(&mut c);
    retention(&mut c);
    logs_and_notifications(&mut c);
    reuse_cache(&mut c, dest.as_deref());
    Ok(c.leftovers("duplicity-backup.sh"))
}

/// Encryption (ENCRYPT): keys, passphrase, gpg options; key ids the
/// wrapper set but did not use are said, never dropped silently.
fn encryption(c: &mut Conv) {
    let encryption = c.var("ENCRYPTION").unwrap_or_default();
    let enc_key = c.nonempty("GPG_ENC_KEY");
    let sign_key = c.nonempty("GPG_SIGN_KEY");
    let hide = c.var("HIDE_KEY_ID").is_some_and(|h| h == "yes");
    let keyring = c.nonempty("SECRET_KEYRING");
    let gpg_options = c.nonempty("GPG_OPTIONS");
    let passphrase = c.var("PASSPHRASE");
    let mut keys_used = false;
    match encryption.as_str() {
        "yes" => {
            if let Some(o) = &gpg_options {
                c.put("gpg-options", o, "GPG_OPTIONS");
            }
            match (&enc_key, &sign_key) {
                (Some(e), Some(s)) => {
                    keys_used = true;
                    let opt = if hide {
                        "hidden-encrypt-key"
                    } else {
                        "encrypt-key"
                    };
                    c.put(opt, e, "GPG_ENC_KEY");
                    c.put("sign-key", s, "GPG_SIGN_KEY");
                    if let Some(k) = &keyring {
                        c.put("encrypt-secret-keyring", k, "SECRET_KEYRING");
                    }
                }
                (None, None) => {}
                _ => c.o.note(
                    "GPG_ENC_KEY and GPG_SIGN_KEY: the wrapper uses keys only when both are set, so it encrypted with PASSPHRASE alone",
                ),
            }
        }
        "no" => c.flag("no-encryption", "ENCRYPTION"),
        "" => {}
        other => c.o.note(format!(
            "ENCRYPTION={other:?} is neither yes nor no: the wrapper then passed no encryption options (PASSPHRASE alone), and so does the profile"
        )),
    }
    // Key ids the wrapper set but did not use: said, never dropped silently.
    if encryption != "yes" && (enc_key.is_some() || sign_key.is_some()) {
        let mut set = Vec::new();
        let mut add = Vec::new();
        if let Some(e) = &enc_key {
            set.push(format!("GPG_ENC_KEY={e}"));
            add.push(format!(
                "encrypt-key = [{}]",
                toml::Value::String(e.clone())
            ));
        }
        if let Some(s) = &sign_key {
            set.push(format!("GPG_SIGN_KEY={s}"));
            add.push(format!("sign-key = {}", toml::Value::String(s.clone())));
        }
        let why = if encryption == "no" {
            "ENCRYPTION='no' (unencrypted backups)".to_string()
        } else if encryption.is_empty() {
            "ENCRYPTION is not 'yes', so the wrapper did not pass them to duplicity (it encrypted with PASSPHRASE alone)".to_string()
        } else {
            format!("ENCRYPTION={encryption:?} is not 'yes', so the wrapper did not pass them to duplicity")
        };
        c.o.note(format!(
            "{}: {why}; to back up to the key(s), add to the profile: {}",
            set.join(", "),
            add.join(", ")
        ));
    }
    match passphrase {
        Some(pw) if !pw.is_empty() && encryption != "no" => {
            c.o.p.passphrase = Some(pw.clone());
            // The wrapper sets SIGN_PASSPHRASE=PASSPHRASE; dupr uses
            // PASSPHRASE for signing only when the sign key is a recipient.
            if keys_used && enc_key != sign_key {
                c.o.p.sign_passphrase = Some(pw);
            }
            c.o.note(
                "PASSPHRASE: copied into the profile in clear (the profile is private, mode 600, as dupr requires then); better put it in a private file and replace `passphrase` with `passphrase-file = \"/path/to/file\"` (or `passphrase-command`)",
            );
        }
        Some(pw) if !pw.is_empty() => {
            c.o.note("PASSPHRASE: not needed with ENCRYPTION=no; not copied");
        }
        _ => {}
    }
}

/// Selection: EXCLUDE (device files, EXCLIST), INCLUDE (INCLIST,
/// INCEXCFILE), then `--exclude=**` when anything was included.
fn selection(c: &mut Conv) {
    if c.var("EXDEVICEFILES")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|n| n != 0)
    {
        c.flag("exclude-device-files", "EXDEVICEFILES");
    }
    for e in c.list("EXCLIST").unwrap_or_default() {
        if !e.is_empty() {
            c.o.put("exclude", Some(&e), "EXCLIST");
        }
    }
    let inclist = c.list("INCLIST");
    for i in inclist.iter().flatten() {
        if !i.is_empty() {
            c.o.put("include", Some(i), "INCLIST");
        }
    }
    let incexc = c.nonempty("INCEXCFILE");
    if let Some(f) = &incexc {
        c.put("include-filelist", f, "INCEXCFILE");
    }
    if inclist.as_ref().is_some_and(|l| !l.is_empty()) || incexc.is_some() {
        if inclist
            .as_ref()
            .is_some_and(|l| l.iter().all(String::is_empty))
            && incexc.is_none()
        {
            c.o.note(
                "INCLIST holds only empty entries: the wrapper then excluded everything (--exclude=** with nothing included), and so does the profile",
            );
        }
        c.o.put("exclude", Some("**"), "INCLIST");
    }
}

/// Retention (duplicity_cleanup, after each backup as in dupr).
fn retention(c: &mut Conv) {
    let cleanup = c.var("CLEAN_UP_TYPE").unwrap_or_default();
    let count = c.var("CLEAN_UP_VARIABLE").unwrap_or_default();
    let number = |what: &str, v: &str, c: &mut Conv| -> Option<u32> {
        let n = v.trim().parse::<u32>().ok();
        if n.is_none() {
            c.o.note(format!("{what}={v:?} is not a count"));
        }
        n
    };
    if !count.is_empty() {
        match cleanup.as_str() {
            "remove-older-than" => c.o.p.retention.remove_older_than = Some(count.clone()),
            "remove-all-but-n-full" => {
                c.o.p.retention.keep_full = number("CLEAN_UP_VARIABLE", &count, c);
            }
            "remove-all-inc-of-but-n-full" => {
                c.o.p.retention.keep_incrementals_of = number("CLEAN_UP_VARIABLE", &count, c);
            }
            "none" | "" => {}
            other => c.o.note(format!(
                "CLEAN_UP_TYPE={other:?}: not a duplicity remove command"
            )),
        }
    }
    if let Some(v) = c.nonempty("REMOVE_INCREMENTALS_OLDER_THAN") {
        if let Ok(n) = v.trim().parse::<u32>() {
            let old = c.o.p.retention.keep_incrementals_of;
            if old.is_some_and(|old| old != n) {
                c.o.note(
                    "REMOVE_INCREMENTALS_OLDER_THAN and CLEAN_UP_TYPE=remove-all-inc-of-but-n-full both ran: the profile keeps the smaller count, which is what the two runs amounted to",
                );
            }
            c.o.p.retention.keep_incrementals_of = Some(old.map_or(n, |old| old.min(n)));
        } else {
            c.o.note(format!(
                "REMOVE_INCREMENTALS_OLDER_THAN={v:?}: not a count, so the wrapper skipped it"
            ));
        }
    }
}

/// Logs, temporary files, mail, notifications.
fn logs_and_notifications(c: &mut Conv) {
    c.o.p.log_dir = c.nonempty("LOGDIR");
    if let Some(v) = c.nonempty("REMOVE_LOGS_OLDER_THAN") {
        match v.trim().parse::<u64>() {
            Ok(d) => c.o.p.log_keep_days = Some(d),
            Err(_) => c.o.note(format!(
                "REMOVE_LOGS_OLDER_THAN={v:?} is not a number of days"
            )),
        }
    }
    if c.discard(&["LOG_FILE"]).len() == 1 {
        c.o.note(
            "LOG_FILE: dupr names each run's log itself (dupr-NAME-ACTION-TIME.log in log-dir)",
        );
    }
    if c.discard(&["LOG_FILE_OWNER"]).len() == 1 {
        c.o.note("LOG_FILE_OWNER: dupr writes its logs as the user that runs it");
    }
    if let Some(t) = c.nonempty("TMPDIR") {
        c.put("tempdir", &t, "TMPDIR");
    }
    match c.nonempty("EMAIL_TO") {
        Some(to) => {
            c.o.p.notify.email = Some(to);
            c.o.p.notify.email_from = c.nonempty("EMAIL_FROM");
            let failure_only = c.var("EMAIL_FAILURE_ONLY").is_some_and(|v| v == "yes");
            c.o.p.notify.on = Some(if failure_only { "failure" } else { "always" }.into());
            if c.discard(&["EMAIL_SUBJECT"]).len() == 1 {
                c.o.note("EMAIL_SUBJECT: dupr's mail subject names the profile, the action and the result");
            }
            let mail = c.var("MAIL").unwrap_or_default();
            let prog = mail.split_whitespace().next().unwrap_or("");
            match prog.rsplit('/').next().unwrap_or("") {
                "" | "sendmail" if !prog.contains('/') => {}
                "sendmail" | "ssmtp" | "msmtp" => c.o.p.notify.sendmail = Some(format!("{mail} -t")),
                "mailx" | "mail" => c.o.note(format!(
                    "MAIL={mail:?}: dupr mails through `sendmail -t` (set notify.sendmail to another command reading the whole message on stdin)"
                )),
                _ => c.o.note(format!(
                    "MAIL={mail:?}: the wrapper called a custom script as MAIL SUBJECT TO FROM with the body on stdin; dupr's notify.sendmail gets the whole message, headers included, on stdin"
                )),
            }
        }
        None => {
            let unused = c.discard(&["EMAIL_FROM", "EMAIL_SUBJECT", "EMAIL_FAILURE_ONLY", "MAIL"]);
            if !unused.is_empty() {
                c.o.note(format!(
                    "{}: unused, as EMAIL_TO is empty",
                    unused.join(", ")
                ));
            }
        }
    }
    let service = c.nonempty("NOTIFICATION_SERVICE");
    let service_settings = c.discard(&[
        "NOTIFICATION_FAILURE_ONLY",
        "SLACK_HOOK_URL",
        "SLACK_CHANNEL",
        "SLACK_USERNAME",
        "SLACK_EMOJI",
        "PUSHOVER_TOKEN",
        "PUSHOVER_USER",
        "IFTTT_KEY",
        "IFTTT_MAKER_EVENT",
        "IFTTT_HOOK_URL",
        "IFTTT_VALUE2",
        "TELEGRAM_CHATID",
        "TELEGRAM_KEY",
    ]);
    if service.is_none() && !service_settings.is_empty() {
        c.o.note(format!(
            "{}: unused, as NOTIFICATION_SERVICE is empty",
            service_settings.join(", ")
        ));
    }
    if let Some(s) = service {
        c.o.note(format!(
            "NOTIFICATION_SERVICE={s:?} (and {}): dupr's notify.webhook POSTs its JSON run record, which {s} does not take as is: point notify.webhook at a relay, or use notify.email",
            service_settings.join(", ")
        ));
    }
    if c.discard(&["HOSTNAME"]).len() == 1 {
        c.o.note("HOSTNAME: only named the host in the wrapper's mail subject");
    }
    if c.discard(&["S3CMD_CONF_FILE"]).len() == 1 {
        c.o.note("S3CMD_CONF_FILE: only served the wrapper's size report");
    }
    if c.discard(&["ECHO"]).len() == 1 {
        c.o.note("ECHO: the wrapper's dry run; use `dupr -p NAME --preview backup` instead");
    }
}

/// Reuse the wrapper's duplicity cache, if there is one for DEST.
fn reuse_cache(c: &mut Conv, dest: Option<&str>) {
    if let (Some(d), Some(root)) = (dest, duplicity_cache_root()) {
        let name = dupr_core::cache::name_for_url(d);
        let opts = &c.o.p.options;
        if root.join(&name).is_dir()
            && !opts.contains_key("name")
            && !opts.contains_key("archive-dir")
        {
            c.put("archive-dir", &root.display().to_string(), "cache");
            c.put("name", &name, "cache");
            c.o.note(format!(
                "archive-dir and name: set to the cache duplicity kept for DEST ({}), so no metadata has to be fetched again",
                root.join(&name).display()
            ));
        }
    }
}
