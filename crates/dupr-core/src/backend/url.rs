//! duplicity's backend URLs: `scheme://[user[:password]@]host[:port]/path`.
//!
//! A double slash after the host (`sftp://host//abs/dir`) means an absolute
//! path on the server; one slash means relative to the login directory.

use crate::error::{Error, Result};

/// A target URL, split and percent-decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Lowercased, e.g. `s3+http`, `pexpect+sftp`.
    pub scheme: String,
    /// The user name before `@`, if any (never empty).
    pub user: Option<String>,
    /// The password after `user:`, if any.
    pub password: Option<String>,
    /// The host (a bucket or container for object stores); `[v6]` keeps
    /// its brackets.
    pub host: String,
    /// The port after `host:`, if any.
    pub port: Option<u16>,
    /// Everything after the slash that ends the host, percent-decoded: starts
    /// with `/` for duplicity's `//absolute` form.
    pub path: String,
    /// The `?key=value&...` pairs, decoded, in order.
    pub query: Vec<(String, String)>,
}

impl Url {
    /// Split `raw`; a URL that is not `scheme://...` or has a bad port is
    /// [`Error::BadUrl`] (shown with its password redacted).
    pub fn parse(raw: &str) -> Result<Url> {
        let bad = |reason: &str| Error::BadUrl {
            url: super::redact(raw),
            reason: reason.to_string(),
        };
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| bad("not a URL (expected scheme://…, e.g. file:///path)"))?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
        {
            return Err(bad("malformed scheme"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(decode(u)), Some(decode(p))),
                None => (Some(decode(u)), None),
            },
        };
        let (host, port) = split_port(hostport, bad)?;
        let query = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (decode(k), decode(v)),
                None => (decode(kv), String::new()),
            })
            .collect();
        Ok(Url {
            scheme: scheme.to_ascii_lowercase(),
            user: user.filter(|u| !u.is_empty()),
            password,
            host: decode(host),
            port,
            path: decode(path),
            query,
        })
    }

    /// The value of the first query pair named `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The path's non-empty segments (duplicity folds repeated slashes).
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// Host and path as one list of segments, for schemes where duplicity
    /// does not treat the first part as a host (`s3://bucket/prefix`).
    pub fn host_and_segments(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        if !self.host.is_empty() {
            v.push(&self.host);
        }
        v.extend(self.segments());
        v
    }
}

/// Host and port of `host[:port]` or `[v6]:port`; `bad` names the URL.
fn split_port(hostport: &str, bad: impl Fn(&str) -> Error) -> Result<(&str, Option<u16>)> {
    // IPv6 literal: [::1]:22
    if let Some(rest) = hostport.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| bad("unterminated [ in host"))?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad(&format!("bad port {p:?}")))?),
            None if after.is_empty() => None,
            None => return Err(bad(&format!("junk after host: {after:?}"))),
        };
        return Ok((&hostport[..end + 2], port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() => Ok((
            h,
            Some(p.parse().map_err(|_| bad(&format!("bad port {p:?}")))?),
        )),
        Some((h, _)) => Ok((h, None)),
        None => Ok((hostport, None)),
    }
}

/// Percent-decoding (`%2F` → `/`); invalid escapes are kept as written.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).expect("a hex digit") as u8;
            out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts() {
        let u = Url::parse("sftp://bob:p%40ss@example.org:2222//srv/backup?x=1").unwrap();
        assert_eq!(u.scheme, "sftp");
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.host, "example.org");
        assert_eq!(u.port, Some(2222));
        assert_eq!(u.path, "/srv/backup");
        assert_eq!(u.query("x"), Some("1"));

        let u = Url::parse("s3+http://bucket/a/b/").unwrap();
        assert_eq!(u.host_and_segments(), vec!["bucket", "a", "b"]);
        let u = Url::parse("s3:///bucket//a").unwrap();
        assert_eq!(u.host_and_segments(), vec!["bucket", "a"]);
        let u = Url::parse("webdav://[::1]:8080/dav").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", Some(8080)));
        assert!(Url::parse("sftp://h:port/x").is_err());
        assert!(Url::parse("no-scheme/x").is_err());
        assert_eq!(decode("a%2Fb%zz%"), "a/b%zz%");
        assert_eq!(decode("p%aé%é1"), "p%aé%é1");
    }
}
