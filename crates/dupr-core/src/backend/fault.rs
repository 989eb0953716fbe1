//! Fault injection at the backend boundary, for tests of retries and
//! recovery: `DUPR_FAULTS="put:2:fail,get:1:truncate,list:1-3:timeout,put:4+:deny"`.
//!
//! Each rule is `OP:CALLS:ACTION`. OP is list, put, get, open, size, delete,
//! lock (an exclusive create: the target lock and its takeover markers)
//! or any; CALLS is N, N-M or N+ (1-based, counting that OP's calls);
//! ACTION is `fail` (a transient error), `deny` (a permanent one, like a
//! refused permission), `timeout` (waits --timeout, then a transient error)
//! `truncate` (put stores half the file and reports success; get and
//! open deliver half of it) or `slow` (waits --timeout, then does the call).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::Backend;
use crate::error::{Error, IoContext, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Fail,
    Deny,
    Timeout,
    Truncate,
    Slow,
}

#[derive(Debug)]
struct Rule {
    op: String,
    from: u64,
    to: u64,
    action: Action,
}

pub struct Faulty {
    inner: Box<dyn Backend>,
    rules: Vec<Rule>,
    counts: Mutex<HashMap<String, u64>>,
    timeout: Duration,
}

impl Faulty {
    /// Wrap `inner` when DUPR_FAULTS is set; give it back unchanged if not.
    pub fn from_env(
        inner: Box<dyn Backend>,
        timeout: Duration,
    ) -> Result<std::result::Result<Faulty, Box<dyn Backend>>> {
        let Some(spec) = super::env_var("DUPR_FAULTS") else {
            return Ok(Err(inner));
        };
        let rules = parse(&spec).map_err(|e| Error::Usage(format!("DUPR_FAULTS: {e}")))?;
        Ok(Ok(Faulty {
            inner,
            rules,
            counts: Mutex::new(HashMap::new()),
            timeout,
        }))
    }

    /// The fault for this call of `op`, if any.
    fn hit(&self, op: &str) -> Option<Action> {
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
        self.rules.iter().find_map(|r| {
            let k = if r.op == "any" { any } else { n };
            (r.op == op || r.op == "any")
                .then_some(())
                .filter(|_| r.from <= k && k <= r.to)
                .map(|_| r.action)
        })
    }

    fn error(&self, op: &str, name: &str, a: Action) -> Error {
        if a == Action::Timeout {
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
        }
    }

    fn check(&self, op: &str, name: &str) -> Result<Option<Action>> {
        match self.hit(op) {
            Some(Action::Truncate) => Ok(Some(Action::Truncate)),
            Some(Action::Slow) => {
                std::thread::sleep(self.timeout);
                Ok(None)
            }
            Some(a) => Err(self.error(op, name, a)),
            None => Ok(None),
        }
    }
}

fn parse(spec: &str) -> std::result::Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let f: Vec<&str> = part.split(':').collect();
        let [op, calls, action] = f[..] else {
            return Err(format!("{part:?}: want OP:CALLS:ACTION"));
        };
        if ![
            "list", "put", "get", "open", "size", "delete", "lock", "any",
        ]
        .contains(&op)
        {
            return Err(format!("{part:?}: unknown operation {op:?}"));
        }
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{part:?}: bad count {s:?}"))
        };
        let (from, to) = if let Some(n) = calls.strip_suffix('+') {
            (num(n)?, u64::MAX)
        } else if let Some((a, b)) = calls.split_once('-') {
            (num(a)?, num(b)?)
        } else {
            let n = num(calls)?;
            (n, n)
        };
        let action = match action {
            "fail" => Action::Fail,
            "deny" => Action::Deny,
            "timeout" => Action::Timeout,
            "truncate" => Action::Truncate,
            "slow" => Action::Slow,
            a => return Err(format!("{part:?}: unknown action {a:?}")),
        };
        rules.push(Rule {
            op: op.to_string(),
            from,
            to,
            action,
        });
    }
    Ok(rules)
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
        if self.check("put", name)?.is_some() {
            // Store a short copy and claim success; `local` stays for a retry.
            let short = local.with_extension("dupr-fault");
            std::fs::copy(local, &short).ctx(&short)?;
            truncate_half(&short)?;
            let r = self.inner.put(&short, name);
            let _ = std::fs::remove_file(&short);
            return r;
        }
        self.inner.put(local, name)
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        if self.check("open", name)?.is_some() {
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
        if t.is_some() {
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
        assert_eq!((r[1].from, r[1].to), (1, 3));
        assert_eq!(r[2].to, u64::MAX);
        assert!(parse("put:x:fail").is_err());
        assert!(parse("upload:1:fail").is_err());
        assert!(parse("put:1:explode").is_err());
        assert_eq!(parse("lock:1:slow").unwrap()[0].action, Action::Slow);
        assert!(parse("put:1").is_err());
    }
}
