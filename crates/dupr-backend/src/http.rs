//! HTTP for every remote service: the transport OpenDAL and dupr's own
//! requests go through (timeouts, TLS options, extra headers, Google's
//! bearer tokens), JSON replies of log-in endpoints, and service errors
//! turned into dupr's, on one line.

use std::path::PathBuf;

use opendal::{Buffer, ErrorKind, HttpBody, HttpTransport, HttpTransporter};

use dupr_core::backend::BackendOptions;
use dupr_core::error::{Error, IoContext, Result};

/// The HTTP transport every service uses: reqwest with dupr's timeouts and
/// TLS options, extra headers (`--webdav-headers`), and URL prefix rewrites
/// (`DUPR_HTTP_REWRITE=https://api.dropboxapi.com=http://127.0.0.1:8090,...`,
/// for proxies and for the tests' local fakes of Dropbox and Google Drive).
struct Transport {
    inner: opendal_http_transport_reqwest::ReqwestTransport,
    rewrite: Vec<(String, String)>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Fresh bearer tokens for Google's APIs (service accounts).
    google: Option<std::sync::Arc<crate::google::TokenSource>>,
}

impl HttpTransport for Transport {
    async fn fetch(
        &self,
        mut req: http::Request<Buffer>,
    ) -> opendal::Result<http::Response<HttpBody>> {
        let u = req.uri().to_string();
        if let Some(g) = &self.google {
            if u.starts_with("https://www.googleapis.com/") {
                let t = g.bearer().await.map_err(|e| {
                    opendal::Error::new(ErrorKind::PermissionDenied, e).set_temporary()
                })?;
                if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}")) {
                    req.headers_mut().insert(http::header::AUTHORIZATION, v);
                }
            }
        }
        for (from, to) in &self.rewrite {
            if let Some(rest) = u.strip_prefix(from.as_str()) {
                if let Ok(uri) = format!("{to}{rest}").parse() {
                    *req.uri_mut() = uri;
                }
                break;
            }
        }
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        self.inner.fetch(req).await
    }
}

pub(crate) fn transport(
    opts: &BackendOptions,
    headers: &[(String, String)],
    google: Option<std::sync::Arc<crate::google::TokenSource>>,
) -> Result<(HttpTransporter, reqwest::Client)> {
    let bad = |what: String| Error::Usage(what);
    let mut b = reqwest::Client::builder()
        .connect_timeout(opts.timeout)
        .read_timeout(opts.timeout);
    if opts.ssl_no_check_certificate {
        b = b.danger_accept_invalid_certs(true);
    }
    let mut cas: Vec<PathBuf> = opts.ssl_cacert_file.iter().cloned().collect();
    if let Some(dir) = &opts.ssl_cacert_path {
        if let Ok(rd) = std::fs::read_dir(dir) {
            cas.extend(rd.flatten().map(|e| e.path()));
        }
    }
    let explicit = opts.ssl_cacert_file.clone();
    for f in cas {
        if f.is_dir() {
            continue;
        }
        let pem = std::fs::read(&f).ctx(&f)?;
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) => {
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            // Other files in a --ssl-cacert-path directory are not ours.
            Err(_) if Some(&f) != explicit.as_ref() => {}
            Err(e) => return Err(bad(format!("--ssl-cacert-file {}: {e}", f.display()))),
        }
    }
    let client = b
        .build()
        .map_err(|e| bad(format!("cannot set up HTTP client: {e}")))?;
    let rewrite = dupr_core::test_hook("DUPR_HTTP_REWRITE")
        .map(|v| {
            v.split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut hs = Vec::new();
    for (k, v) in headers {
        let k = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| bad(format!("--webdav-headers: bad header name {k:?}")))?;
        let v = http::HeaderValue::from_str(v)
            .map_err(|_| bad(format!("--webdav-headers: bad value for {k}")))?;
        hs.push((k, v));
    }
    Ok((
        HttpTransporter::new(Transport {
            inner: opendal_http_transport_reqwest::ReqwestTransport::from(client.clone()),
            rewrite,
            headers: hs,
            google,
        }),
        client,
    ))
}

pub(crate) async fn json_reply(
    tp: &HttpTransporter,
    req: http::Request<Buffer>,
    what: &str,
) -> std::result::Result<serde_json::Value, String> {
    let resp = tp
        .send(req)
        .await
        .map_err(|e| format!("{what}: {}", one_line(&e.to_string())))?;
    let body = resp.body().to_bytes();
    if !resp.status().is_success() {
        return Err(format!(
            "{what}: HTTP {}: {}",
            resp.status(),
            one_line(&String::from_utf8_lossy(&body))
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{what}: reply is not JSON: {e}"))
}

/// A download error; a missing object is a missing volume (exit 53).
pub(crate) fn download_error(url: &str, name: &str, e: opendal::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        return Error::MissingVolume {
            name: name.to_string(),
        };
    }
    backend_error(url, "download", name, e)
}

/// An error in the middle of a download stream: OpenDAL's own error when it
/// is one (its display would carry the request URI, which may hold a
/// signature), else the I/O error's kind.
pub(crate) fn stream_error(url: &str, name: &str, e: std::io::Error) -> Error {
    let kind = e.kind();
    match e.into_inner().map(|i| i.downcast::<opendal::Error>()) {
        Some(Ok(oe)) => download_error(url, name, *oe),
        _ => Error::Backend {
            url: url.to_string(),
            reason: format!("download {name}: interrupted ({kind})"),
            transient: true,
        },
    }
}

/// A reqwest error with its causes (connection refused, TLS, ...).
pub(crate) fn request_error(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    append_causes(&mut msg, e);
    one_line(&msg)
}

/// `e`'s source chain after `msg`, each cause once.
fn append_causes(msg: &mut String, e: &dyn std::error::Error) {
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
}

/// Collapse an error text (service replies can be multi-line XML) to one
/// short line.
pub fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s
    }
}

/// `S3Error { code: "X", message: "Y", .. }` (a Debug dump) as `X: Y`.
fn tidy_service_error(m: &str) -> String {
    let field = |name: &str| -> Option<String> {
        let i = m.find(&format!("{name}: \""))? + name.len() + 3;
        let end = m[i..].find('"')?;
        Some(m[i..i + end].to_string())
    };
    match (m.contains("Error {"), field("code"), field("message")) {
        (true, Some(c), Some(msg)) if !msg.is_empty() => format!("{c}: {msg}"),
        (true, Some(c), _) => c,
        _ => m.to_string(),
    }
}

/// An OpenDAL error as dupr's: the cause, the HTTP status and the
/// source chain on one line; transient when OpenDAL says so.
pub fn backend_error(url: &str, what: &str, name: &str, e: opendal::Error) -> Error {
    let cause = match e.kind() {
        _ if e.to_string().contains("status: 404") => "not found",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::NotFound => "not found",
        ErrorKind::ConfigInvalid => "configuration rejected",
        ErrorKind::RateLimited => "rate limited",
        ErrorKind::Unsupported => "not supported by the service",
        _ => "failed",
    };
    let full = e.to_string();
    let mut msg = tidy_service_error(e.message());
    if let Some(i) = full.find("status: ") {
        // The HTTP status, from the error's context (its full dump is noise).
        let code: String = full[i + 8..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if !code.is_empty() && !msg.contains(&code) {
            msg = if msg.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {msg}")
            };
        }
    }
    // The underlying cause (connection refused, DNS, TLS) is in the source chain.
    append_causes(&mut msg, &e);
    let target = if name.is_empty() {
        String::new()
    } else {
        format!(" {name}")
    };
    Error::Backend {
        url: url.to_string(),
        reason: if msg.is_empty() {
            format!("{what}{target}: {cause}")
        } else {
            format!("{what}{target}: {cause}: {}", one_line(&msg))
        },
        transient: e.is_temporary() || e.kind() == ErrorKind::RateLimited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        assert_eq!(one_line("a\n  b\tc\n"), "a b c");
    }
}
