//! `dupr schedule install|list|remove`: systemd user timers, or crontab
//! lines where systemd is absent (or with `--cron`).
//!
//! A schedule runs `dupr -p NAME backup` with an absolute path to this very
//! binary and the environment a run needs written out (PATH with the
//! binary's directory, HOME, the XDG directories, GNUPGHOME and the
//! profile's `DUPR_*` overrides): neither systemd nor cron runs it in the
//! login shell's environment. Secrets are never written: the profile's
//! passphrase source is read at run time.
//!
//! One schedule per profile: installing one kind removes the other kind's
//! schedule of the same profile. `DUPR_SYSTEMCTL` and `DUPR_CRONTAB` name
//! the `systemctl` and `crontab` commands (for tests).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::profile;

const USAGE: &str = "usage: dupr schedule install -p NAME --every INTERVAL [--cron] | dupr schedule list [-p NAME] | dupr schedule remove -p NAME";

pub fn manage(
    words: &[OsString],
    profile: Option<&str>,
    config: Option<&Path>,
    every: Option<&str>,
    cron: bool,
    preview: bool,
) -> Result<i32> {
    let w: Vec<String> = words
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    match w.first().map(String::as_str) {
        Some("install") => {
            let (name, config) = which(&w, profile, config)?
                .ok_or_else(|| anyhow!("schedule install: which profile? {USAGE}"))?;
            let every = every.ok_or_else(|| {
                anyhow!("schedule install: --every is required (e.g. --every 15m, 1h, 2h30m, 1d, @daily)")
            })?;
            install(&name, config.as_deref(), every, cron, preview)
        }
        Some("list") => {
            let name = which(&w, profile, config)?.map(|(n, _)| n);
            list(name.as_deref())
        }
        Some("remove") => {
            let (name, _) = which(&w, profile, config)?
                .ok_or_else(|| anyhow!("schedule remove: which profile? {USAGE}"))?;
            if preview {
                return preview_remove(&name);
            }
            remove(&name)
        }
        _ => bail!("{USAGE}"),
    }
}

/// The profile a schedule command is about: `-p NAME`, a positional NAME,
/// or the stem of the `-c` file; with the `-c` file made absolute.
fn which(
    w: &[String],
    profile: Option<&str>,
    config: Option<&Path>,
) -> Result<Option<(String, Option<PathBuf>)>> {
    let config = match config {
        Some(c) => Some(
            std::fs::canonicalize(c).with_context(|| format!("profile file {}", c.display()))?,
        ),
        None => None,
    };
    let name = profile
        .map(str::to_string)
        .or_else(|| w.get(1).cloned())
        .or_else(|| {
            config
                .as_ref()
                .and_then(|c| c.file_stem())
                .map(|s| s.to_string_lossy().into_owned())
        });
    let Some(name) = name else {
        return Ok(None);
    };
    let ok = !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!(
            "profile name {name:?} can't name a schedule: use letters, digits, '-', '_' and '.' (with -c FILE, add -p NAME)"
        );
    }
    Ok(Some((name, config)))
}

// ------------------------------------------------------------ intervals

/// How often a schedule runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interval {
    /// Every so many seconds (a whole number of minutes).
    Every(u64),
    /// A calendar period: hourly, daily, weekly, monthly, yearly.
    Calendar(&'static str),
}

impl Interval {
    fn parse(s: &str) -> Result<Interval> {
        let bad = || {
            anyhow!("bad interval {s:?}: use e.g. 15m, 1h, 2h30m, 1d, 1w, @hourly, @daily, @weekly")
        };
        let t = s.trim().to_ascii_lowercase();
        let named = t.strip_prefix('@').unwrap_or(&t);
        for (word, cal) in [
            ("hourly", "hourly"),
            ("daily", "daily"),
            ("weekly", "weekly"),
            ("monthly", "monthly"),
            ("yearly", "yearly"),
            ("annually", "yearly"),
        ] {
            if named == word {
                return Ok(Interval::Calendar(cal));
            }
        }
        let mut secs: u64 = 0;
        let mut rest = t.as_str();
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let letters = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .len();
            let unit = match &rest[..letters] {
                "m" | "min" | "mins" | "minute" | "minutes" => 60,
                "h" | "hr" | "hour" | "hours" => 3600,
                "d" | "day" | "days" => 86_400,
                "w" | "week" | "weeks" => 604_800,
                _ => return Err(bad()),
            };
            rest = &rest[letters..];
            secs = n
                .checked_mul(unit)
                .and_then(|v| secs.checked_add(v))
                .ok_or_else(bad)?;
        }
        if secs == 0 {
            return Err(bad());
        }
        if secs > 366 * 86_400 {
            bail!("bad interval {s:?}: more than a year");
        }
        Ok(Interval::Every(secs))
    }

    /// A systemd time span ("2h 30min").
    fn systemd_span(secs: u64) -> String {
        let mut parts = Vec::new();
        let mut left = secs;
        for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("min", 60)] {
            if left >= size {
                parts.push(format!("{}{unit}", left / size));
                left %= size;
            }
        }
        if left > 0 || parts.is_empty() {
            parts.push(format!("{left}s"));
        }
        parts.join(" ")
    }

    /// The `[Timer]` lines.
    fn timer_lines(&self) -> Vec<String> {
        match self {
            Interval::Every(secs) => vec![
                format!("OnBootSec={}", Self::systemd_span((*secs).min(300))),
                format!("OnUnitActiveSec={}", Self::systemd_span(*secs)),
            ],
            Interval::Calendar(c) => vec![format!("OnCalendar={c}")],
        }
    }

    /// The crontab time fields, where cron can express the interval.
    fn cron(&self, text: &str) -> Result<String> {
        let m = match self {
            Interval::Calendar(c) => return Ok(format!("@{c}")),
            Interval::Every(secs) => secs / 60,
        };
        let spec = match m {
            1 => Some("* * * * *".to_string()),
            m if m < 60 && 60 % m == 0 => Some(format!("*/{m} * * * *")),
            60 => Some("0 * * * *".to_string()),
            m if m % 60 == 0 && m < 1440 && 1440 % m == 0 => Some(format!("0 */{} * * *", m / 60)),
            1440 => Some("0 0 * * *".to_string()),
            10_080 => Some("0 0 * * 0".to_string()),
            _ => None,
        };
        spec.ok_or_else(|| {
            anyhow!(
                "cron can't run something every {text}: use minutes dividing an hour (5m, 15m, 30m), hours dividing a day (1h, 2h, 6h, 12h), 1d, 1w or @hourly/@daily/@weekly/@monthly"
            )
        })
    }
}

// ------------------------------------------------------- the environment

fn tool(var: &str, default: &str) -> OsString {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// The environment variables a scheduled run gets, in order.
fn run_env(exe: &Path) -> Vec<(String, String)> {
    let mut env = Vec::new();
    // PATH: the binary's directory first, then the current PATH, then the
    // usual system directories (cron's PATH is only /usr/bin:/bin).
    let mut dirs: Vec<String> = Vec::new();
    let mut push = |d: &str| {
        if !d.is_empty() && !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_string());
        }
    };
    if let Some(d) = exe.parent() {
        push(&d.to_string_lossy());
    }
    if let Some(p) = std::env::var_os("PATH") {
        for d in p.to_string_lossy().split(':') {
            push(d);
        }
    }
    for d in ["/usr/local/bin", "/usr/bin", "/bin"] {
        push(d);
    }
    env.push(("PATH".to_string(), dirs.join(":")));
    // Session-independent locations only: XDG_RUNTIME_DIR, XDG_SESSION_*
    // and the like belong to a login session.
    for v in [
        "HOME",
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "XDG_CACHE_HOME",
        "XDG_DATA_HOME",
        "GNUPGHOME",
        "TMPDIR",
    ] {
        if let Some(val) = std::env::var(v).ok().filter(|s| !s.is_empty()) {
            env.push((v.to_string(), val));
        }
    }
    let related = profile_vars();
    let mut dupr: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| related.contains(k))
        .collect();
    dupr.sort();
    env.extend(dupr);
    // Values a unit or crontab line can't carry are left out.
    env.retain(|(k, v)| {
        let ok = !v.chars().any(|c| c.is_control());
        if !ok {
            eprintln!("dupr: warning: {k} holds control characters; not written into the schedule");
        }
        ok
    });
    env
}

/// The `DUPR_*` variables a profile run reads: its fields and dupr's long
/// options (see `profile::env_overrides`), never a passphrase itself.
fn profile_vars() -> BTreeSet<String> {
    let var = |k: &str| format!("DUPR_{}", k.to_uppercase().replace('-', "_"));
    let mut set: BTreeSet<String> = [
        "source",
        "target",
        "passphrase-file",
        "passphrase-command",
        "sign-passphrase-file",
        "sign-passphrase-command",
        "log-dir",
        "max-age",
    ]
    .iter()
    .map(|k| var(k))
    .collect();
    for a in Cli::command().get_arguments() {
        if let Some(l) = a.get_long() {
            if ![
                "help",
                "version",
                "generate",
                "profile",
                "config",
                "preview",
                "archive-dir",
                "export-passphrase-file",
            ]
            .contains(&l)
            {
                set.insert(var(l));
            }
        }
    }
    set.retain(|k| {
        !matches!(
            k.as_str(),
            "DUPR_PASSPHRASE" | "DUPR_SIGN_PASSPHRASE" | "DUPR_CRONTAB" | "DUPR_SYSTEMCTL"
        )
    });
    set
}

/// The command line of a scheduled run.
fn run_args(name: &str, config: Option<&Path>) -> Vec<String> {
    let mut a = vec!["-p".to_string(), name.to_string()];
    if let Some(c) = config {
        a.extend(["-c".to_string(), c.display().to_string()]);
    }
    a.push("backup".into());
    a
}

fn dupr_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the dupr binary")?;
    Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
}

// ---------------------------------------------------------------- systemd

fn systemd_dir() -> PathBuf {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".config"),
    };
    base.join("systemd").join("user")
}

fn unit_paths(name: &str) -> (PathBuf, PathBuf) {
    let d = systemd_dir();
    (
        d.join(format!("dupr-{name}.service")),
        d.join(format!("dupr-{name}.timer")),
    )
}

/// `systemctl --user ARGS`.
fn systemctl(args: &[&str]) -> std::io::Result<Output> {
    Command::new(tool("DUPR_SYSTEMCTL", "systemctl"))
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// Why a systemctl call did not work, in a few words.
fn failure(what: &str, r: &std::io::Result<Output>) -> Option<String> {
    match r {
        Err(e) => Some(format!("{what}: {e}")),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let line = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Some(format!("{what} failed ({}): {}", o.status, line.trim()))
        }
        Ok(_) => None,
    }
}

/// A word of `ExecStart=`: specifiers and variables escaped, quoted when needed.
fn exec_word(s: &str) -> String {
    let e = s.replace('%', "%%").replace('$', "$$");
    let simple = !e.is_empty() && !e.chars().any(|c| c.is_whitespace() || "\"'\\;".contains(c));
    if simple {
        e
    } else {
        format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// One `Environment=` line.
fn env_line(k: &str, v: &str) -> String {
    let kv = format!("{k}={v}")
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("Environment=\"{kv}\"")
}

fn service_text(name: &str, exe: &Path, args: &[String], env: &[(String, String)]) -> String {
    let mut exec = vec![exec_word(&exe.display().to_string())];
    exec.extend(args.iter().map(|a| exec_word(a)));
    let mut s = format!(
        "# Written by `dupr schedule install`; remove with `dupr schedule remove -p {name}`.\n\
         [Unit]\n\
         Description=dupr backup of profile {name}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={}\n",
        exec.join(" ")
    );
    for (k, v) in env {
        s.push_str(&env_line(k, v));
        s.push('\n');
    }
    s.push_str(
        "# 102: another run of the profile was still going (skipped, not failed).\n\
         SuccessExitStatus=102\n\
         Nice=10\n",
    );
    s
}

fn timer_text(name: &str, every: &str, iv: &Interval) -> String {
    let mut s = format!(
        "# Written by `dupr schedule install`; remove with `dupr schedule remove -p {name}`.\n\
         # dupr-every: {every}\n\
         [Unit]\n\
         Description=dupr backup of profile {name}, every {every}\n\
         \n\
         [Timer]\n"
    );
    for l in iv.timer_lines() {
        s.push_str(&l);
        s.push('\n');
    }
    s.push_str(&format!(
        "Persistent=true\n\
         Unit=dupr-{name}.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    ));
    s
}

/// Write the units and start the timer. `Err(reason)` in the outer result
/// when systemd is not usable here (the units are then removed again).
fn install_systemd(
    name: &str,
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    every: &str,
    iv: &Interval,
) -> Result<std::result::Result<(), String>> {
    let (service, timer) = unit_paths(name);
    std::fs::create_dir_all(systemd_dir())
        .with_context(|| format!("creating {}", systemd_dir().display()))?;
    std::fs::write(&service, service_text(name, exe, args, env))
        .with_context(|| format!("writing {}", service.display()))?;
    std::fs::write(&timer, timer_text(name, every, iv))
        .with_context(|| format!("writing {}", timer.display()))?;
    if let Some(why) = failure(
        "systemctl --user daemon-reload",
        &systemctl(&["daemon-reload"]),
    ) {
        let _ = std::fs::remove_file(&service);
        let _ = std::fs::remove_file(&timer);
        return Ok(Err(why));
    }
    let unit = format!("dupr-{name}.timer");
    if let Some(why) = failure(
        &format!("systemctl --user enable --now {unit}"),
        &systemctl(&["enable", "--now", &unit]),
    ) {
        bail!("{why} (the units are in {})", systemd_dir().display());
    }
    Ok(Ok(()))
}

/// Stop and delete the profile's units; whether there were any.
fn remove_systemd(name: &str) -> Result<bool> {
    let (service, timer) = unit_paths(name);
    if !service.exists() && !timer.exists() {
        return Ok(false);
    }
    let unit = format!("dupr-{name}.timer");
    let stop = systemctl(&["disable", "--now", &unit]);
    if let Some(why) = failure(&format!("systemctl --user disable --now {unit}"), &stop) {
        eprintln!("dupr: warning: {why}; removing the unit files anyway");
    }
    for p in [&service, &timer] {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    if stop.as_ref().is_ok_and(|o| o.status.success()) {
        let _ = systemctl(&["daemon-reload"]);
    }
    println!(
        "removed systemd user timer {unit} ({}, {})",
        timer.display(),
        service.display()
    );
    Ok(true)
}

/// The installed timers: (profile, interval text, timer path).
fn systemd_schedules() -> Vec<(String, String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(systemd_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            let name = f.strip_prefix("dupr-")?.strip_suffix(".timer")?.to_string();
            let text = std::fs::read_to_string(e.path()).ok()?;
            let every = text
                .lines()
                .find_map(|l| l.strip_prefix("# dupr-every: "))
                .map(|s| format!("every {}", s.trim()))
                .or_else(|| {
                    text.lines()
                        .find(|l| l.starts_with("OnUnitActiveSec=") || l.starts_with("OnCalendar="))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "?".into());
            Some((name, every, e.path()))
        })
        .collect();
    out.sort();
    out
}

// ------------------------------------------------------------------- cron

fn tag(name: &str) -> String {
    format!("# dupr:{name}")
}

/// The profile a crontab line is tagged with.
fn tagged(line: &str) -> Option<&str> {
    let l = line.trim_end();
    let i = l.rfind("# dupr:")?;
    let name = &l[i + "# dupr:".len()..];
    (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
}

/// `crontab -l`: the current table ("" when there is none); `None` when
/// there is no crontab command at all.
fn crontab_read() -> Result<Option<String>> {
    let cmd = tool("DUPR_CRONTAB", "crontab");
    let o = match Command::new(&cmd).arg("-l").stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("running {} -l", cmd.to_string_lossy())),
    };
    if o.status.success() {
        return Ok(Some(String::from_utf8_lossy(&o.stdout).into_owned()));
    }
    let err = String::from_utf8_lossy(&o.stderr);
    if err.to_ascii_lowercase().contains("no crontab") {
        return Ok(Some(String::new()));
    }
    bail!(
        "{} -l failed ({}): {}",
        cmd.to_string_lossy(),
        o.status,
        err.trim()
    );
}

/// `crontab -`: replace the table.
fn crontab_write(text: &str) -> Result<()> {
    let cmd = tool("DUPR_CRONTAB", "crontab");
    let mut child = Command::new(&cmd)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} - (is cron installed?)", cmd.to_string_lossy()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .with_context(|| format!("writing to {} -", cmd.to_string_lossy()))?;
    let o = child.wait_with_output()?;
    if !o.status.success() {
        bail!(
            "{} - failed ({}): {}",
            cmd.to_string_lossy(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// A word for `sh`, single-quoted when needed.
fn sh_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=/.,:@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn cron_line(
    name: &str,
    when: &str,
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
) -> String {
    let mut words: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{k}={}", sh_word(v)))
        .collect();
    words.push(sh_word(&exe.display().to_string()));
    words.extend(args.iter().map(|a| sh_word(a)));
    // cron turns an unescaped % into a newline.
    let cmd = words.join(" ").replace('%', "\\%");
    format!("{when} {cmd} >/dev/null 2>&1 {}", tag(name))
}

/// Table text without the lines of `name`, and how many were dropped.
fn without(table: &str, name: &str) -> (String, usize) {
    let mut out = String::new();
    let mut n = 0;
    for l in table.lines() {
        if tagged(l) == Some(name) {
            n += 1;
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    (out, n)
}

fn install_cron(name: &str, line: &str) -> Result<()> {
    let table = crontab_read()?.ok_or_else(|| {
        anyhow!(
            "{} not found: install cron (Debian: apt-get install cron)",
            tool("DUPR_CRONTAB", "crontab").to_string_lossy()
        )
    })?;
    let (mut table, _) = without(&table, name);
    table.push_str(line);
    table.push('\n');
    crontab_write(&table)
}

/// Delete the profile's crontab lines; whether there were any.
fn remove_cron(name: &str) -> Result<bool> {
    let Some(table) = crontab_read()? else {
        return Ok(false);
    };
    let (rest, n) = without(&table, name);
    if n == 0 {
        return Ok(false);
    }
    crontab_write(&rest)?;
    println!("removed the crontab line of profile {name} ({})", tag(name));
    Ok(true)
}

// -------------------------------------------------------------- commands

fn install(
    name: &str,
    config: Option<&Path>,
    every: &str,
    cron: bool,
    preview: bool,
) -> Result<i32> {
    let iv = Interval::parse(every)?;
    if cron {
        iv.cron(every)?;
    }
    let path = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| profile::path_of(name));
    if !path.exists() {
        bail!(
            "profile {name}: {} does not exist (create it with: dupr profile create {name})",
            path.display()
        );
    }
    profile::load(name, &path)?;
    let exe = dupr_exe()?;
    let args = run_args(name, config);
    let env = run_env(&exe);
    if preview {
        return preview_install(name, &exe, &args, &env, every, &iv, cron);
    }
    if !cron {
        match install_systemd(name, &exe, &args, &env, every, &iv)? {
            Ok(()) => {
                let (service, timer) = unit_paths(name);
                // One schedule per profile.
                if let Err(e) = remove_cron(name) {
                    eprintln!("dupr: warning: checking the crontab for an old line of {name}: {e}");
                }
                println!(
                    "installed systemd user timer dupr-{name}.timer (every {every}): {}, {}",
                    timer.display(),
                    service.display()
                );
                println!("runs: {} {}", exe.display(), args.join(" "));
                return Ok(0);
            }
            Err(why) => {
                let when = iv
                    .cron(every)
                    .map_err(|e| anyhow!("systemd is not usable here ({why}), and {e}"))?;
                eprintln!("dupr: systemd is not usable here ({why}); using cron instead");
                return finish_cron(name, &when, &exe, &args, &env);
            }
        }
    }
    let when = iv.cron(every)?;
    finish_cron(name, &when, &exe, &args, &env)?;
    // One schedule per profile (removed only once the crontab line is in).
    remove_systemd(name)?;
    Ok(0)
}

fn finish_cron(
    name: &str,
    when: &str,
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Result<i32> {
    let line = cron_line(name, when, exe, args, env);
    install_cron(name, &line)?;
    println!(
        "installed crontab line for profile {name} ({when}), tagged {}",
        tag(name)
    );
    println!("runs: {} {}", exe.display(), args.join(" "));
    Ok(0)
}

/// `schedule install --preview` (or `--dry-run`): print exactly what would
/// be written, touch nothing and run neither systemctl nor crontab.
fn preview_install(
    name: &str,
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    every: &str,
    iv: &Interval,
    cron: bool,
) -> Result<i32> {
    let line = |when: &str| cron_line(name, when, exe, args, env);
    if cron {
        println!(
            "# would add this line to the crontab (replacing any line tagged {}):",
            tag(name)
        );
        println!("{}", line(&iv.cron(every)?));
        let (service, timer) = unit_paths(name);
        for p in [&timer, &service] {
            if p.exists() {
                println!("# would remove {}", p.display());
            }
        }
    } else {
        let (service, timer) = unit_paths(name);
        println!("# would write {}:", service.display());
        print!("{}", service_text(name, exe, args, env));
        println!("# would write {}:", timer.display());
        print!("{}", timer_text(name, every, iv));
        println!(
            "# would run: systemctl --user daemon-reload; systemctl --user enable --now dupr-{name}.timer"
        );
        println!(
            "# and remove any crontab line tagged {}; where systemd is not usable, instead:",
            tag(name)
        );
        match iv.cron(every) {
            Ok(when) => println!("{}", line(&when)),
            Err(e) => println!("# (no crontab line: {e})"),
        }
    }
    println!("# preview: nothing was written");
    Ok(0)
}

/// `schedule remove --preview`: what would be removed (reading only).
fn preview_remove(name: &str) -> Result<i32> {
    let (service, timer) = unit_paths(name);
    let mut n = 0;
    for p in [&timer, &service] {
        if p.exists() {
            println!("# would remove {}", p.display());
            n += 1;
        }
    }
    if let Some(table) = crontab_read()? {
        for l in table.lines().filter(|l| tagged(l) == Some(name)) {
            println!("# would remove this crontab line:\n{l}");
            n += 1;
        }
    }
    if n == 0 {
        bail!("no schedule installed for profile {name}");
    }
    println!("# preview: nothing was removed");
    Ok(0)
}

fn list(only: Option<&str>) -> Result<i32> {
    let mut n = 0;
    for (name, every, path) in systemd_schedules() {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let state = systemctl(&["is-active", &format!("dupr-{name}.timer")])
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty() && !s.contains('\n'))
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        println!("systemd\t{name}\t{every}\t{}{state}", path.display());
        n += 1;
    }
    if let Some(table) = crontab_read()? {
        for l in table.lines() {
            let Some(name) = tagged(l) else { continue };
            if l.trim_start().starts_with('#') || only.is_some_and(|o| o != name) {
                continue;
            }
            let fields = if l.starts_with('@') { 1 } else { 5 };
            let when: Vec<&str> = l.split_whitespace().take(fields).collect();
            println!("cron\t{name}\t{}\t{}", when.join(" "), l.trim());
            n += 1;
        }
    }
    if n == 0 {
        match only {
            Some(o) => println!("no schedule installed for profile {o}"),
            None => println!("no dupr schedules installed"),
        }
    }
    Ok(0)
}

fn remove(name: &str) -> Result<i32> {
    let units = remove_systemd(name)?;
    let cron = remove_cron(name)?;
    if !units && !cron {
        bail!("no schedule installed for profile {name}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(Interval::parse("15m").unwrap(), Interval::Every(900));
        assert_eq!(Interval::parse("2h30m").unwrap(), Interval::Every(9000));
        assert_eq!(Interval::parse("1d").unwrap(), Interval::Every(86_400));
        assert_eq!(
            Interval::parse("@daily").unwrap(),
            Interval::Calendar("daily")
        );
        for bad in ["", "15", "m", "15x", "0m", "1h-", "@sometimes", "-5m"] {
            assert!(Interval::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Interval::systemd_span(9000), "2h 30min");
        let c = |s: &str| Interval::parse(s).unwrap().cron(s);
        assert_eq!(c("15m").unwrap(), "*/15 * * * *");
        assert_eq!(c("1h").unwrap(), "0 * * * *");
        assert_eq!(c("6h").unwrap(), "0 */6 * * *");
        assert_eq!(c("1d").unwrap(), "0 0 * * *");
        assert_eq!(c("@hourly").unwrap(), "@hourly");
        assert!(c("2h30m").is_err());
        assert!(c("45m").is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(
            tagged("* * * * * x >/dev/null 2>&1 # dupr:home"),
            Some("home")
        );
        assert_eq!(tagged("* * * * * x"), None);
        let (rest, n) = without(
            "a\n1 * * * * y # dupr:home\n2 * * * * z # dupr:homex\n",
            "home",
        );
        assert_eq!(n, 1);
        assert_eq!(rest, "a\n2 * * * * z # dupr:homex\n");
    }

    #[test]
    fn unit_escaping() {
        assert_eq!(exec_word("/a b/dupr"), "\"/a b/dupr\"");
        assert_eq!(exec_word("50%"), "50%%");
        assert_eq!(env_line("A", "x\"y%"), "Environment=\"A=x\\\"y%%\"");
    }
}
