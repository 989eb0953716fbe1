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
                    opendal::Error::new(ErrorKind::PermissionDenied, e.to_string()).set_temporary()
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

/// Why a service could not be set up from its URL and environment.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// The URL or the environment lacks what the service needs, or holds a
    /// value it cannot use: the URL (or its settings) is at fault.
    #[error("{0}")]
    Config(String),
    /// A log-in or lookup made while setting up failed: the service is at
    /// fault (unreachable, refused, an HTTP error), not the URL.
    #[error("{reason}")]
    Service {
        /// What failed, and how.
        reason: String,
        /// Whether trying again later may succeed (network errors, 5xx, 429).
        transient: bool,
    },
}

impl From<&str> for SetupError {
    fn from(reason: &str) -> Self {
        SetupError::Config(reason.to_string())
    }
}

impl From<String> for SetupError {
    fn from(reason: String) -> Self {
        SetupError::Config(reason)
    }
}

impl SetupError {
    /// The engine's error for the target `url` (shown redacted): a bad URL
    /// (exit 23) or a backend error (exit 50).
    pub(crate) fn at(self, url: &str) -> Error {
        match self {
            SetupError::Config(reason) => Error::BadUrl {
                url: url.to_string(),
                reason,
            },
            SetupError::Service { reason, transient } => Error::backend(url, reason, transient),
        }
    }
}

pub(crate) async fn json_reply(
    tp: &HttpTransporter,
    req: http::Request<Buffer>,
    what: &str,
) -> std::result::Result<serde_json::Value, SetupError> {
    let resp = tp.send(req).await.map_err(|e| SetupError::Service {
        reason: format!("{what}: {}", one_line(&e.to_string())),
        transient: true,
    })?;
    let body = resp.body().to_bytes();
    let status = resp.status();
    if !status.is_success() {
        return Err(SetupError::Service {
            reason: format!(
                "{what}: HTTP {status}: {}",
                one_line(&String::from_utf8_lossy(&body))
            ),
            transient: status.is_server_error() || status.as_u16() == 429,
        });
    }
    serde_json::from_slice(&body).map_err(|e| SetupError::Service {
        reason: format!("{what}: reply is not JSON: {e}"),
        transient: false,
    })
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
            source: None,
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

/// The HTTP status OpenDAL recorded in an error's context. OpenDAL has no
/// accessor for its context, and Dropbox's and Drive's services report a
/// missing object only there (with kind Unexpected), so it is read from the
/// error's text.
fn http_status(e: &opendal::Error) -> Option<u16> {
    let full = e.to_string();
    let i = full.find("status: ")?;
    let code: String = full[i + 8..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    code.parse().ok()
}

/// A storage service's error, kept whole for callers ([`ServiceError::get`]:
/// kind, temporary or not, message). Shown as the service's message, the
/// HTTP status and the underlying causes (connection refused, DNS, TLS),
/// never as OpenDAL's full dump, which can carry a signed request URI.
#[derive(Debug)]
pub struct ServiceError(opendal::Error);

impl ServiceError {
    /// OpenDAL's error.
    pub fn get(&self) -> &opendal::Error {
        &self.0
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.0;
        let mut msg = tidy_service_error(e.message());
        if let Some(code) = http_status(e) {
            let code = code.to_string();
            if !msg.contains(&code) {
                msg = if msg.is_empty() {
                    format!("HTTP {code}")
                } else {
                    format!("HTTP {code}: {msg}")
                };
            }
        }
        append_causes(&mut msg, e);
        f.write_str(&one_line(&msg))
    }
}

// Its causes are in its text (above); OpenDAL's error is reached by `get`.
impl std::error::Error for ServiceError {}

/// An OpenDAL error as dupr's: what failed on what, the kind of failure
/// in words, transient when OpenDAL says so, and the error itself as the
/// source.
pub fn backend_error(url: &str, what: &str, name: &str, e: opendal::Error) -> Error {
    let cause = match e.kind() {
        _ if http_status(&e) == Some(404) => "not found",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::NotFound => "not found",
        ErrorKind::ConfigInvalid => "configuration rejected",
        ErrorKind::RateLimited => "rate limited",
        ErrorKind::Unsupported => "not supported by the service",
        _ => "failed",
    };
    let target = if name.is_empty() {
        String::new()
    } else {
        format!(" {name}")
    };
    Error::Backend {
        url: url.to_string(),
        reason: format!("{what}{target}: {cause}"),
        transient: e.is_temporary() || e.kind() == ErrorKind::RateLimited,
        source: Some(Box::new(ServiceError(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        assert_eq!(one_line("a\n  b\tc\n"), "a b c");
    }

    #[test]
    fn a_service_error_is_kept_as_the_source() {
        let e = opendal::Error::new(
            ErrorKind::Unexpected,
            "S3Error { code: \"SlowDown\", message: \"Reduce your rate\" }",
        )
        .with_context(
            "uri",
            "https://bucket.example/x?X-Amz-Signature=0123456789abcdef",
        )
        .with_context("status", "503")
        .set_temporary();
        let err = backend_error("s3://bucket/x", "download", "vol1", e);
        assert!(err.is_transient());
        assert_eq!(
            err.to_string(),
            "backend s3://bucket/x: download vol1: failed: HTTP 503: SlowDown: Reduce your rate"
        );
        let src = std::error::Error::source(&err).expect("a source");
        let svc = src
            .downcast_ref::<ServiceError>()
            .expect("the service error");
        assert_eq!(svc.get().kind(), ErrorKind::Unexpected);
        assert!(!dupr_core::error::report(&err).contains("Signature"));

        let e = opendal::Error::new(ErrorKind::Unexpected, "").with_context("status", "404");
        let err = backend_error("dpbx:///x", "download", "vol2", e);
        assert_eq!(
            err.to_string(),
            "backend dpbx:///x: download vol2: not found: HTTP 404"
        );
    }
}
