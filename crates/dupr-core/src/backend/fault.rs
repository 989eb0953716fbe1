//! Fault injection at the backend boundary, for tests of retries and
//! recovery: `DUPR_FAULTS="put:2:fail,get:1:truncate,list:1-3:timeout,put:4+:deny"`.
//!
//! Each rule is `OP:CALLS:ACTION`. OP is list, put, get, open, size, delete,
//! lock (an exclusive create: the target lock and its takeover markers)
//! or any; CALLS is N, N-M or N+ (1-based, counting that OP's calls), or
//! `~TEXT`: the calls on a file whose name contains TEXT. ACTION is `fail`
//! (a transient error), `deny` (a permanent one, like a refused
//! permission), `timeout` (waits --timeout, then a transient error),
//! `truncate` (put stores half the file and reports success; get and open
//! deliver half of it), `slow` (waits --timeout, then does the call),
//! `lastbyte` (put stores all but the last byte and reports success),
//! `skip` (put stores nothing and reports success), `exit` (the process
//! exits with code 30, as if killed; a put stores the file first),
//! `delay=MS` / `jitter=MS` (waits MS milliseconds, or up to MS at random,
//! then does the call) or `after=TEXT` (a put waits, up to --timeout, until
//! a file of the same backup time whose name contains TEXT is stored).
//! Every rule that matches a call applies, in order.
//!
//! `fortestsonly://PATH` (duplicity's test backend: a local directory) takes
//! its faults from the variables duplicity's test backend reads, mapped onto
//! these rules by [`duplicity_test_rules`].

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Backend;
use crate::error::{Error, IoContext, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Fail,
    Deny,
    Timeout,
    Truncate,
    Slow,
    LastByte,
    Skip,
    Exit,
    Delay(u64),
    Jitter(u64),
    After(String),
}

#[derive(Debug)]
enum Calls {
    Range(u64, u64),
    Name(String),
}

#[derive(Debug)]
struct Rule {
    op: String,
    calls: Calls,
    action: Action,
}

/// What the faults of one call change about it.
#[derive(Default)]
struct Effect {
    /// Truncate, LastByte or Skip: how the data is mangled.
    mangle: Option<Action>,
    /// Exit once the call (a put) is done.
    exit_after: bool,
}

/// A backend that fails, mangles or delays the calls its rules name (the
/// test suite's fault injection), passing the rest to the backend it wraps.
pub struct Faulty {
    inner: Box<dyn Backend>,
    rules: Vec<Rule>,
    counts: Mutex<HashMap<String, u64>>,
    timeout: Duration,
}

/// The exit code of an `exit` fault: duplicity's test backend's
/// `sys.exit(30)`.
const EXIT_CODE: i32 = 30;

impl Faulty {
    /// Wrap `inner` when DUPR_FAULTS is set or `extra` has rules; give it
    /// back unchanged if not.
    pub fn from_env(
        inner: Box<dyn Backend>,
        timeout: Duration,
        extra: &str,
    ) -> Result<std::result::Result<Faulty, Box<dyn Backend>>> {
        let mut rules = match crate::test_hook("DUPR_FAULTS") {
            Some(spec) => parse(&spec).map_err(|e| Error::Usage(format!("DUPR_FAULTS: {e}")))?,
            None => Vec::new(),
        };
        rules.extend(parse(extra).map_err(|e| Error::Usage(e.to_string()))?);
        if rules.is_empty() {
            return Ok(Err(inner));
        }
        Ok(Ok(Faulty {
            inner,
            rules,
            counts: Mutex::new(HashMap::new()),
            timeout,
        }))
    }

    /// The faults for this call of `op` on `name`, in rule order.
    fn hits(&self, op: &str, name: &str) -> Vec<Action> {
        let mut c = self.counts.lock().expect("fault counters");
        let n = {
            let e = c.entry(op.to_string()).or_insert(0);
            *e += 1;
            *e
        };
        let any = {
            let e = c.entry("any".to_string()).or_insert(0);
            *e += 1;
            *e
        };
        self.rules
            .iter()
            .filter(|r| r.op == op || r.op == "any")
            .filter(|r| match &r.calls {
                Calls::Range(from, to) => {
                    let k = if r.op == "any" { any } else { n };
                    *from <= k && k <= *to
                }
                Calls::Name(t) => !name.is_empty() && name.contains(t.as_str()),
            })
            .map(|r| r.action.clone())
            .collect()
    }

    fn error(&self, op: &str, name: &str, a: &Action) -> Error {
        if *a == Action::Timeout {
            std::thread::sleep(self.timeout);
        }
        let (what, transient) = match a {
            Action::Deny => ("permission denied (injected)", false),
            Action::Timeout => ("timed out (injected)", true),
            _ => ("failed (injected)", true),
        };
        Error::Backend {
            url: self.inner.display_url(),
            reason: if name.is_empty() {
                format!("{op}: {what}")
            } else {
                format!("{op} {name}: {what}")
            },
            transient,
            source: None,
        }
    }

    fn check(&self, op: &str, name: &str) -> Result<Effect> {
        let mut effect = Effect::default();
        for a in self.hits(op, name) {
            match a {
                Action::Truncate | Action::LastByte | Action::Skip => effect.mangle = Some(a),
                Action::Slow => std::thread::sleep(self.timeout),
                Action::Delay(ms) => std::thread::sleep(Duration::from_millis(ms)),
                Action::Jitter(ms) => std::thread::sleep(Duration::from_millis(random_below(ms))),
                Action::After(t) => self.wait_for(name, &t),
                Action::Exit if op == "put" => effect.exit_after = true,
                Action::Exit => exit(op, name),
                a => return Err(self.error(op, name, &a)),
            }
        }
        Ok(effect)
    }

    /// Wait (up to --timeout) until a file of the same backup time as `name`
    /// whose name contains `text` is listed.
    fn wait_for(&self, name: &str, text: &str) {
        let Some(time) = backup_time(name) else {
            return;
        };
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            let listed = self.inner.list().unwrap_or_default();
            if listed.iter().any(|n| {
                n.find(time)
                    .is_some_and(|at| n[at + time.len()..].contains(text))
            }) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::warn!(
            "fault after={text}: no such file after {:?}; storing {name}",
            self.timeout
        );
    }
}

/// The process ends here, as duplicity's test backend ends it.
fn exit(op: &str, name: &str) -> ! {
    eprintln!("dupr: {op} {name}: exiting with code {EXIT_CODE} (injected fault)");
    std::process::exit(EXIT_CODE)
}

/// The backup time in a stored file's name (the last one: an incremental's
/// end), e.g. `20240102T030405Z`.
fn backup_time(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    (0..b.len().saturating_sub(15)).rev().find_map(|i| {
        let t = &b[i..i + 15];
        let digits = |r: std::ops::Range<usize>| t[r].iter().all(u8::is_ascii_digit);
        (digits(0..8) && t[8] == b'T' && digits(9..15)).then(|| {
            let end = b[i + 15..]
                .iter()
                .position(|c| !(c.is_ascii_digit() || b"+-:Z".contains(c)))
                .map_or(b.len(), |p| i + 15 + p);
            &name[i..end]
        })
    })
}

/// A number in 0..n (0 when n is 0), good enough for test jitter.
fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0)
        ^ (std::process::id() as u64) << 32;
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    x ^= x >> 33;
    x % n
}

/// The rules for duplicity's test backend (`fortestsonly://`), from the
/// variables it reads (testing's `BackendErrors`): each names a substring of
/// the stored file names it applies to.
///
/// * `DUP_FAIL_WITH_EXCEPTION=TEXT`: every operation on such a file fails
///   (retried, then the run fails: exit 50);
/// * `DUP_FAIL_BY_SYSTEM_EXIT=TEXT`: the process exits with code 30 (a put
///   first stores the file);
/// * `DUP_FAIL_SKIP_PUT_SILENT=TEXT`: the put stores nothing, and says it did;
/// * `DUP_FAIL_LAST_BYTE_MISSING=TEXT`: the put stores all but the last byte;
/// * `DUP_FAIL_WAIT_FOR_VOLUME=["TEXT", "OTHER"]`: the put of TEXT waits for
///   OTHER of the same backup to be stored;
/// * `DUP_FAIL_DELAY_FIX_MS=N`, `DUP_FAIL_DELAY_RANDOM_MS=N`: every operation
///   waits N ms, or up to N ms at random.
pub fn duplicity_test_rules() -> std::result::Result<String, FaultSpecError> {
    let var = super::env_var;
    let text = |k: &'static str| -> std::result::Result<Option<String>, FaultSpecError> {
        match var(k) {
            Some(t) if t.contains([',', ':']) => Err(FaultSpecError::Variable {
                var: k,
                value: t,
                want: "',' and ':' are not supported in it",
            }),
            t => Ok(t),
        }
    };
    let ops = ["put", "get", "open", "size", "delete"];
    let mut rules = Vec::new();
    if let Some(t) = text("DUP_FAIL_WITH_EXCEPTION")? {
        rules.extend(ops.iter().map(|op| format!("{op}:~{t}:fail")));
    }
    if let Some(t) = text("DUP_FAIL_BY_SYSTEM_EXIT")? {
        rules.extend(ops.iter().map(|op| format!("{op}:~{t}:exit")));
    }
    if let Some(t) = text("DUP_FAIL_SKIP_PUT_SILENT")? {
        rules.push(format!("put:~{t}:skip"));
    }
    if let Some(t) = text("DUP_FAIL_LAST_BYTE_MISSING")? {
        rules.push(format!("put:~{t}:lastbyte"));
    }
    if let Some(v) = var("DUP_FAIL_WAIT_FOR_VOLUME") {
        // A JSON list of two strings.
        let bad = || FaultSpecError::Variable {
            var: "DUP_FAIL_WAIT_FOR_VOLUME",
            value: v.clone(),
            want: "want [\"FILE\", \"WAIT_FOR\"]",
        };
        let inner = v
            .trim()
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(bad)?;
        let parts: Vec<&str> = inner
            .split(',')
            .map(|p| p.trim().trim_matches('"'))
            .collect();
        let [stop, wait] = parts[..] else {
            return Err(bad());
        };
        if stop.is_empty() || wait.is_empty() || format!("{stop}{wait}").contains([':', '"']) {
            return Err(bad());
        }
        rules.push(format!("put:~{stop}:after={wait}"));
    }
    for (k, action) in [
        ("DUP_FAIL_DELAY_FIX_MS", "delay"),
        ("DUP_FAIL_DELAY_RANDOM_MS", "jitter"),
    ] {
        if let Some(v) = var(k) {
            let ms: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|m: &f64| m.is_finite() && *m >= 0.0)
                .ok_or_else(|| FaultSpecError::Variable {
                    var: k,
                    value: v.clone(),
                    want: "want milliseconds",
                })?;
            for op in ops {
                rules.push(format!("{op}:1+:{action}={}", ms as u64));
            }
        }
    }
    Ok(rules.join(","))
}

fn parse(spec: &str) -> std::result::Result<Vec<Rule>, FaultSpecError> {
    let mut rules = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let f: Vec<&str> = part.split(':').collect();
        let rule = || part.to_string();
        let [op, calls, action] = f[..] else {
            return Err(FaultSpecError::Shape { rule: rule() });
        };
        if ![
            "list", "put", "get", "open", "size", "delete", "lock", "any",
        ]
        .contains(&op)
        {
            return Err(FaultSpecError::Operation {
                rule: rule(),
                op: op.to_string(),
            });
        }
        let num = |s: &str| {
            s.parse::<u64>().map_err(|_| FaultSpecError::Count {
                rule: rule(),
                count: s.to_string(),
            })
        };
        let calls = if let Some(t) = calls.strip_prefix('~') {
            if t.is_empty() {
                return Err(FaultSpecError::EmptyName { rule: rule() });
            }
            Calls::Name(t.to_string())
        } else if let Some(n) = calls.strip_suffix('+') {
            Calls::Range(num(n)?, u64::MAX)
        } else if let Some((a, b)) = calls.split_once('-') {
            Calls::Range(num(a)?, num(b)?)
        } else {
            let n = num(calls)?;
            Calls::Range(n, n)
        };
        let ms = |v: &str| {
            v.parse::<u64>().map_err(|_| FaultSpecError::Millis {
                rule: rule(),
                value: v.to_string(),
            })
        };
        let action = match action.split_once('=') {
            None => match action {
                "fail" => Action::Fail,
                "deny" => Action::Deny,
                "timeout" => Action::Timeout,
                "truncate" => Action::Truncate,
                "slow" => Action::Slow,
                "lastbyte" => Action::LastByte,
                "skip" => Action::Skip,
                "exit" => Action::Exit,
                a => {
                    return Err(FaultSpecError::Action {
                        rule: rule(),
                        action: a.to_string(),
                    })
                }
            },
            Some(("delay", v)) => Action::Delay(ms(v)?),
            Some(("jitter", v)) => Action::Jitter(ms(v)?),
            Some(("after", t)) if !t.is_empty() => Action::After(t.to_string()),
            Some(_) => {
                return Err(FaultSpecError::Action {
                    rule: rule(),
                    action: action.to_string(),
                })
            }
        };
        rules.push(Rule {
            op: op.to_string(),
            calls,
            action,
        });
    }
    Ok(rules)
}

/// A fault rule, or one of duplicity's test variables, that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    /// A rule that is not three `:`-separated fields.
    #[error("{rule:?}: want OP:CALLS:ACTION")]
    Shape {
        /// The rule as written.
        rule: String,
    },
    /// A rule for an operation the backend does not have.
    #[error("{rule:?}: unknown operation {op:?}")]
    Operation {
        /// The rule as written.
        rule: String,
        /// Its operation field.
        op: String,
    },
    /// A call number or range that is not a number.
    #[error("{rule:?}: bad count {count:?}")]
    Count {
        /// The rule as written.
        rule: String,
        /// The part that is not a number.
        count: String,
    },
    /// `~` with no name text after it.
    #[error("{rule:?}: empty name text after ~")]
    EmptyName {
        /// The rule as written.
        rule: String,
    },
    /// A `delay=`/`jitter=` value that is not whole milliseconds.
    #[error("{rule:?}: bad milliseconds {value:?}")]
    Millis {
        /// The rule as written.
        rule: String,
        /// The value given.
        value: String,
    },
    /// An action the fault wrapper does not know.
    #[error("{rule:?}: unknown action {action:?}")]
    Action {
        /// The rule as written.
        rule: String,
        /// The action field.
        action: String,
    },
    /// A `DUP_FAIL_*` variable with a value this emulation cannot use.
    #[error("{var}={value:?}: {want}")]
    Variable {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should hold.
        want: &'static str,
    },
}

fn truncate_half(p: &Path) -> Result<()> {
    let len = std::fs::metadata(p).ctx(p)?.len();
    let f = std::fs::OpenOptions::new().write(true).open(p).ctx(p)?;
    f.set_len(len / 2).ctx(p)
}

impl Backend for Faulty {
    fn without_retries(&self) -> &dyn Backend {
        self
    }

    fn display_url(&self) -> String {
        self.inner.display_url()
    }

    fn list(&self) -> Result<Vec<String>> {
        self.check("list", "")?;
        self.inner.list()
    }

    fn put(&self, local: &Path, name: &str) -> Result<()> {
        let effect = self.check("put", name)?;
        let r = match effect.mangle {
            Some(Action::Skip) => Ok(()),
            Some(how) => {
                // Store a short copy and claim success; `local` stays for a retry.
                let short = local.with_extension("dupr-fault");
                std::fs::copy(local, &short).ctx(&short)?;
                if how == Action::LastByte {
                    let len = std::fs::metadata(&short).ctx(&short)?.len();
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&short)
                        .ctx(&short)?;
                    f.set_len(len.saturating_sub(1)).ctx(&short)?;
                } else {
                    truncate_half(&short)?;
                }
                let r = self.inner.put(&short, name);
                let _ = std::fs::remove_file(&short);
                r
            }
            None => self.inner.put(local, name),
        };
        if effect.exit_after {
            exit("put", name);
        }
        r
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        if self.check("open", name)?.mangle.is_some() {
            let mut data = Vec::new();
            self.inner
                .open(name)?
                .read_to_end(&mut data)
                .map_err(|e| Error::io(name, e))?;
            data.truncate(data.len() / 2);
            return Ok(Box::new(std::io::Cursor::new(data)));
        }
        self.inner.open(name)
    }

    fn get(&self, name: &str, local: &Path) -> Result<()> {
        let t = self.check("get", name)?;
        self.inner.get(name, local)?;
        if t.mangle.is_some() {
            truncate_half(local)?;
        }
        Ok(())
    }

    fn prefetch(&self, names: &[String]) {
        self.inner.prefetch(names)
    }

    fn size(&self, name: &str) -> Result<Option<u64>> {
        self.check("size", name)?;
        self.inner.size(name)
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        // Reads must go through get/open to be faulted.
        let _ = name;
        None
    }

    fn put_new(&self, local: &Path, name: &str) -> Result<bool> {
        self.check("lock", name)?;
        self.inner.put_new(local, name)
    }

    fn atomic_create(&self) -> bool {
        self.inner.atomic_create()
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.check("delete", name)?;
        self.inner.delete(name)
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        self.inner.staging_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        let r = parse("put:2:fail, get:1-3:truncate,list:4+:timeout,any:9:deny").unwrap();
        assert_eq!(r.len(), 4);
        assert!(matches!(r[1].calls, Calls::Range(1, 3)));
        assert!(matches!(r[2].calls, Calls::Range(4, u64::MAX)));
        assert!(parse("put:x:fail").is_err());
        assert!(parse("upload:1:fail").is_err());
        assert!(parse("put:1:explode").is_err());
        assert_eq!(parse("lock:1:slow").unwrap()[0].action, Action::Slow);
        assert!(parse("put:1").is_err());
        let r = parse("put:~vol2.difftar:after=vol7.difftar,get:1+:delay=5,put:~x:exit").unwrap();
        assert!(matches!(&r[0].calls, Calls::Name(t) if t == "vol2.difftar"));
        assert_eq!(r[0].action, Action::After("vol7.difftar".into()));
        assert_eq!(r[1].action, Action::Delay(5));
        assert_eq!(r[2].action, Action::Exit);
        assert!(parse("put:~:fail").is_err());
        assert!(parse("put:1:delay=x").is_err());
        assert!(parse("put:1:after=").is_err());
    }

    #[test]
    fn backup_times_in_names() {
        assert_eq!(
            backup_time("duplicity-full.20240102T030405Z.vol2.difftar.gz"),
            Some("20240102T030405Z")
        );
        assert_eq!(
            backup_time("duplicity-inc.20240102T030405Z.to.20240103T000000Z.vol1.difftar.gpg"),
            Some("20240103T000000Z")
        );
        assert_eq!(backup_time("lockfile"), None);
    }
}
