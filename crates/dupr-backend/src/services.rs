//! duplicity's URL schemes and credential variables, mapped onto OpenDAL
//! services: one function per scheme family, each giving the service and
//! its config (the operator itself is built in [`crate::remote`]).

use std::io::Write;

use opendal::{services, Buffer, HttpTransporter, Operator};

use crate::http::{json_reply, one_line, SetupError};
use dupr_core::backend::url::Url;
use dupr_core::backend::{env_var, password, BackendOptions, SseMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    S3,
    Sftp,
    Webdav,
    Dropbox,
    Gdrive,
    Other,
}

pub(super) type Kv = Vec<(String, String)>;

pub(crate) fn kv(pairs: &[(&str, &str)]) -> Kv {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One service with its config, before the operator is built.
pub(super) struct Spec {
    pub(super) kind: Kind,
    pub(super) build: fn(Kv) -> opendal::Result<Operator>,
    pub(super) config: Kv,
    /// Extra config for the volume operator only.
    pub(super) volume_config: Kv,
    pub(super) headers: Vec<(String, String)>,
}

pub(crate) fn spec<B: opendal::Builder>(kind: Kind, config: Kv) -> Spec {
    Spec {
        kind,
        build: |c: Kv| Operator::from_iter::<B>(c),
        config,
        volume_config: Vec::new(),
        headers: Vec::new(),
    }
}

// ------------------------------------------------------------------ S3

/// Whether the first part of an `s3://X/...` URL is a host (duplicity 0.8's
/// boto form `s3://s3.amazonaws.com/bucket`) rather than a bucket (3.x).
fn looks_like_s3_host(h: &str) -> bool {
    let h = h.to_ascii_lowercase();
    h.contains(':')
        || h.parse::<std::net::IpAddr>().is_ok()
        || h.ends_with(".amazonaws.com")
        || h == "localhost"
        // s3.example.org, but not a bucket named s3-backups
        || ((h.starts_with("s3.") || h.starts_with("s3-")) && h.matches('.').count() >= 2)
        || h.contains(".s3.")
}

pub(crate) fn s3_spec(u: &Url, opts: &BackendOptions) -> std::result::Result<Spec, SetupError> {
    let mut parts: Vec<String> = u
        .host_and_segments()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let hostport = match u.port {
        Some(p) => format!("{}:{p}", u.host),
        None => u.host.clone(),
    };
    let mut endpoint = opts.s3.endpoint_url.clone();
    if u.scheme != "boto3+s3"
        && !u.host.is_empty()
        && parts.len() > 1
        && looks_like_s3_host(&hostport)
    {
        parts.remove(0);
        if endpoint.is_none() {
            let scheme = if u.scheme == "s3+http" || opts.s3.unencrypted_connection {
                "http"
            } else {
                "https"
            };
            endpoint = Some(format!("{scheme}://{hostport}"));
        }
    }
    if parts.is_empty() {
        return Err("S3 requires a bucket name (s3://BUCKET/PREFIX)".into());
    }
    let bucket = parts.remove(0);
    let root = format!("/{}", parts.join("/"));
    // s3.eu-central-1.amazonaws.com / s3-eu-west-1.amazonaws.com
    let host_region = endpoint.as_deref().and_then(|e| {
        let h = e.split("://").nth(1).unwrap_or(e);
        let r = h
            .strip_suffix(".amazonaws.com")?
            .trim_start_matches("s3.")
            .trim_start_matches("s3-")
            .to_string();
        (!r.is_empty() && r != "s3" && !r.contains('.')).then_some(r)
    });
    let region = opts
        .s3
        .region_name
        .clone()
        .or(host_region)
        .or_else(|| env_var("AWS_REGION"))
        .or_else(|| env_var("AWS_DEFAULT_REGION"))
        .or_else(|| opts.s3.european_buckets.then(|| "eu-west-1".to_string()))
        .unwrap_or_else(|| "us-east-1".to_string());
    let mut c = kv(&[("bucket", &bucket), ("root", &root), ("region", &region)]);
    if let Some(mut e) = endpoint {
        if !e.contains("://") {
            e = format!(
                "{}://{e}",
                if opts.s3.unencrypted_connection {
                    "http"
                } else {
                    "https"
                }
            );
        }
        c.push(("endpoint".into(), e));
    }
    let key = env_var("AWS_ACCESS_KEY_ID").or_else(|| u.user.clone());
    let secret = env_var("AWS_SECRET_ACCESS_KEY").or_else(|| u.password.clone());
    if let (Some(k), Some(s)) = (key, secret) {
        c.push(("access_key_id".into(), k));
        c.push(("secret_access_key".into(), s));
        if let Some(t) = env_var("AWS_SESSION_TOKEN") {
            c.push(("session_token".into(), t));
        }
        // Explicit keys: no profile files may change the result.
        c.push(("disable_config_load".into(), "true".into()));
    } else if let Some(p) = env_var("AWS_PROFILE") {
        c.push(("profile".into(), p));
    }
    if opts.s3.use_new_style {
        c.push(("enable_virtual_host_style".into(), "true".into()));
    }
    match &opts.s3.sse {
        Some(SseMode::Aes256) => c.push(("server_side_encryption".into(), "AES256".into())),
        Some(SseMode::Kms(id)) => {
            c.push(("server_side_encryption".into(), "aws:kms".into()));
            c.push(("server_side_encryption_aws_kms_key_id".into(), id.clone()));
        }
        None => {}
    }
    let mut s = spec::<services::S3>(Kind::S3, c);
    if let Some(class) = &opts.s3.storage_class {
        // duplicity keeps manifests and signatures readable (STANDARD) even
        // when volumes go to an archive class.
        let archive = ["GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"].contains(&class.as_str());
        if archive {
            s.volume_config
                .push(("default_storage_class".into(), class.clone()));
        } else {
            s.config
                .push(("default_storage_class".into(), class.clone()));
        }
    }
    Ok(s)
}

pub(crate) fn gs_spec(u: &Url) -> std::result::Result<Spec, SetupError> {
    let parts = u.host_and_segments();
    let Some((bucket, rest)) = parts.split_first() else {
        return Err("gs:// requires a bucket name (gs://BUCKET/PREFIX)".into());
    };
    let root = format!("/{}", rest.join("/"));
    // duplicity 0.8's boto used HMAC keys through GCS's S3-compatible API.
    if let (Some(k), Some(s)) = (env_var("GS_ACCESS_KEY_ID"), env_var("GS_SECRET_ACCESS_KEY")) {
        return Ok(spec::<services::S3>(
            Kind::S3,
            kv(&[
                ("bucket", bucket),
                ("root", &root),
                ("region", "auto"),
                ("endpoint", "https://storage.googleapis.com"),
                ("access_key_id", &k),
                ("secret_access_key", &s),
                ("disable_config_load", "true"),
            ]),
        ));
    }
    let mut c = kv(&[("bucket", bucket), ("root", &root)]);
    if let Some(p) = env_var("GOOGLE_APPLICATION_CREDENTIALS") {
        c.push(("credential_path".into(), p));
    }
    Ok(spec::<services::Gcs>(Kind::Other, c))
}

// ----------------------------------------------------------------- SFTP

/// `--ssh-options` as ssh's `-o` list: (lowercased key, value).
pub fn ssh_options(opts: &BackendOptions) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let words: Vec<String> = opts
        .ssh_options
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let opt = if let Some(o) = w.strip_prefix("-o") {
            if o.is_empty() {
                i += 1;
                words.get(i).cloned().unwrap_or_default()
            } else {
                o.to_string()
            }
        } else if w == "-i" {
            i += 1;
            format!("IdentityFile={}", words.get(i).cloned().unwrap_or_default())
        } else {
            String::new()
        };
        if let Some((k, v)) = opt.split_once('=').or_else(|| opt.split_once(' ')) {
            out.push((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ));
        }
        i += 1;
    }
    out
}

pub(crate) fn sftp_spec(u: &Url, opts: &BackendOptions) -> std::result::Result<Spec, SetupError> {
    if u.host.is_empty() {
        return Err("no host (sftp://[user@]host[:port]/path)".into());
    }
    let o = ssh_options(opts);
    let get = |k: &str| {
        o.iter()
            .rev()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
    };
    let user = u.user.clone().or_else(|| get("user"));
    let port = u.port.or_else(|| get("port").and_then(|p| p.parse().ok()));
    let mut endpoint = String::from("ssh://");
    if let Some(user) = &user {
        endpoint.push_str(user);
        endpoint.push('@');
    }
    endpoint.push_str(&u.host);
    if let Some(p) = port {
        endpoint.push_str(&format!(":{p}"));
    }
    let strategy = match get("stricthostkeychecking").as_deref() {
        Some("no") | Some("off") => "accept",
        Some("accept-new") => "add",
        _ => "strict",
    };
    if u.password.is_some() || password().is_some() {
        tracing::warn!(
            "SSH password log-in is not supported; dupr uses keys (--ssh-options=-oIdentityFile=…) and the ssh agent"
        );
    }
    let root = if u.path.starts_with('/') {
        u.path.clone()
    } else {
        // Relative to the login directory, which only the server knows.
        let home = sftp_home(u, user.as_deref(), port, opts)?;
        format!("{}/{}", home.trim_end_matches('/'), u.path)
    };
    let mut c = kv(&[
        ("endpoint", &endpoint),
        ("root", &root),
        ("known_hosts_strategy", strategy),
    ]);
    if let Some(k) = get("identityfile") {
        c.push(("key".into(), k));
    }
    Ok(spec::<services::Sftp>(Kind::Sftp, c))
}

/// The login directory, from the system sftp client (which also works for
/// accounts limited to SFTP).
fn sftp_home(
    u: &Url,
    user: Option<&str>,
    port: Option<u16>,
    opts: &BackendOptions,
) -> std::result::Result<String, SetupError> {
    let mut cmd = std::process::Command::new("sftp");
    cmd.arg("-q").arg("-b").arg("-");
    if let Some(p) = port {
        cmd.arg("-P").arg(p.to_string());
    }
    for (k, v) in ssh_options(opts) {
        cmd.arg("-o").arg(format!("{k}={v}"));
    }
    cmd.arg("-o").arg("BatchMode=yes");
    cmd.arg("-o")
        .arg(format!("ConnectTimeout={}", opts.timeout.as_secs().max(1)));
    let dest = match user {
        Some(usr) => format!("{usr}@{}", u.host),
        None => u.host.clone(),
    };
    cmd.arg(dest);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the sftp client (needed for SSH targets): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"pwd\n");
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("sftp client: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("Remote working directory: ") {
            return Ok(d.trim().to_string());
        }
    }
    Err(SetupError::Service {
        reason: format!(
            "cannot log in over SSH: {}",
            one_line(&String::from_utf8_lossy(&out.stderr))
        ),
        transient: false,
    })
}

// --------------------------------------------------------------- WebDAV

pub(crate) fn webdav_spec(u: &Url, opts: &BackendOptions) -> std::result::Result<Spec, SetupError> {
    if u.host.is_empty() {
        return Err("no host (webdav://[user@]host[:port]/path)".into());
    }
    let tls = matches!(u.scheme.as_str(), "webdavs" | "https" | "lftp+webdavs");
    let mut endpoint = format!("{}://{}", if tls { "https" } else { "http" }, u.host);
    if let Some(p) = u.port {
        endpoint.push_str(&format!(":{p}"));
    }
    let mut c = kv(&[
        ("endpoint", &endpoint),
        ("root", &format!("/{}", u.segments().join("/"))),
    ]);
    if let Some(user) = &u.user {
        c.push(("username".into(), user.clone()));
        if let Some(p) = u.password.clone().or_else(password) {
            c.push(("password".into(), p));
        }
    }
    let mut s = spec::<services::Webdav>(Kind::Webdav, c);
    s.headers = opts.webdav_headers.clone();
    Ok(s)
}

// ------------------------------------------------------------- OneDrive

pub(crate) fn onedrive_spec(u: &Url) -> std::result::Result<Spec, SetupError> {
    let root = format!("/{}", u.host_and_segments().join("/"));
    let mut c = kv(&[("root", &root)]);
    let token_file = env_var("DUPLICITY_ONEDRIVE_TOKEN").ok_or(
        "DUPLICITY_ONEDRIVE_TOKEN is not set (the path of duplicity's OneDrive token file)",
    )?;
    let text = std::fs::read_to_string(&token_file)
        .map_err(|e| format!("DUPLICITY_ONEDRIVE_TOKEN {token_file}: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("DUPLICITY_ONEDRIVE_TOKEN {token_file}: not JSON: {e}"))?;
    if let Some(rt) = v["refresh_token"].as_str() {
        c.push(("refresh_token".into(), rt.into()));
        let id = env_var("DUPLICITY_ONEDRIVE_CLIENT_ID")
            .ok_or("DUPLICITY_ONEDRIVE_CLIENT_ID is not set (needed to refresh the token)")?;
        c.push(("client_id".into(), id));
    } else if let Some(at) = v["access_token"].as_str() {
        c.push(("access_token".into(), at.into()));
    } else {
        return Err(format!(
            "DUPLICITY_ONEDRIVE_TOKEN {token_file}: no access_token or refresh_token"
        )
        .into());
    }
    Ok(spec::<services::Onedrive>(Kind::Other, c))
}

// ------------------------------------------------------------------- B2

/// `b2://KEY_ID[:KEY]@BUCKET/DIR`: OpenDAL wants the bucket's id, which the
/// B2 API gives for its name.
pub(super) async fn b2_config(
    u: &Url,
    tp: &HttpTransporter,
) -> std::result::Result<Kv, SetupError> {
    let id = u
        .user
        .clone()
        .ok_or("b2:// needs the application key id: b2://KEY_ID[:KEY]@BUCKET/DIR")?;
    let key = u
        .password
        .clone()
        .or_else(password)
        .ok_or("no B2 application key (in the URL or BACKEND_PASSWORD)")?;
    let bucket = u.host.clone();
    if bucket.is_empty() {
        return Err("b2:// needs a bucket: b2://KEY_ID[:KEY]@BUCKET/DIR".into());
    }
    let root = format!("/{}", u.segments().join("/"));
    let bucket_id = match env_var("B2_BUCKET_ID") {
        Some(b) => b,
        None => {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"));
            let req =
                http::Request::get("https://api.backblazeb2.com/b2api/v2/b2_authorize_account")
                    .header("Authorization", format!("Basic {basic}"))
                    .body(Buffer::new())
                    .map_err(|e| e.to_string())?;
            let auth = json_reply(tp, req, "B2 log-in").await?;
            let api = auth["apiUrl"].as_str().unwrap_or_default();
            let token = auth["authorizationToken"].as_str().unwrap_or_default();
            let account = auth["accountId"].as_str().unwrap_or_default();
            let body = serde_json::json!({"accountId": account, "bucketName": bucket}).to_string();
            let req = http::Request::post(format!("{api}/b2api/v2/b2_list_buckets"))
                .header("Authorization", token)
                .body(Buffer::from(body))
                .map_err(|e| e.to_string())?;
            let list = json_reply(tp, req, "B2 bucket lookup").await?;
            list["buckets"][0]["bucketId"]
                .as_str()
                .ok_or(format!("B2 bucket {bucket:?} not found"))?
                .to_string()
        }
    };
    Ok(kv(&[
        ("root", &root),
        ("bucket", &bucket),
        ("bucket_id", &bucket_id),
        ("application_key_id", &id),
        ("application_key", &key),
    ]))
}

// ---------------------------------------------------------------- Azure

pub(crate) fn azure_spec(u: &Url) -> std::result::Result<Spec, SetupError> {
    let parts = u.host_and_segments();
    let Some((container, rest)) = parts.split_first() else {
        return Err("azure:// needs a container: azure://CONTAINER[/PREFIX]".into());
    };
    let mut c = kv(&[
        ("container", container),
        ("root", &format!("/{}", rest.join("/"))),
    ]);
    let mut account = env_var("AZURE_ACCOUNT_NAME");
    let mut key = env_var("AZURE_ACCOUNT_KEY");
    let mut sas = env_var("AZURE_SHARED_ACCESS_SIGNATURE");
    let mut endpoint = None;
    if let Some(cs) = env_var("AZURE_CONNECTION_STRING") {
        let mut protocol = "https".to_string();
        let mut suffix = "core.windows.net".to_string();
        for part in cs.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            match k.trim() {
                "AccountName" => account = Some(v.to_string()),
                "AccountKey" => key = Some(v.to_string()),
                "SharedAccessSignature" => sas = Some(v.to_string()),
                "BlobEndpoint" => endpoint = Some(v.trim_end_matches('/').to_string()),
                "DefaultEndpointsProtocol" => protocol = v.to_string(),
                "EndpointSuffix" => suffix = v.to_string(),
                _ => {}
            }
        }
        if endpoint.is_none() {
            if let Some(a) = &account {
                endpoint = Some(format!("{protocol}://{a}.blob.{suffix}"));
            }
        }
    }
    let Some(account) = account else {
        return Err("no Azure account: set AZURE_CONNECTION_STRING (or AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY)".into());
    };
    let endpoint = endpoint.unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
    c.push(("account_name".into(), account));
    c.push(("endpoint".into(), endpoint));
    if let Some(k) = key {
        c.push(("account_key".into(), k));
    }
    if let Some(s) = sas {
        c.push(("sas_token".into(), s));
    }
    Ok(spec::<services::Azblob>(Kind::Other, c))
}

// ---------------------------------------------------------------- Swift

pub(crate) fn swift_spec(u: &Url) -> std::result::Result<Spec, SetupError> {
    let parts = u.host_and_segments();
    let Some((container, rest)) = parts.split_first() else {
        return Err("swift:// needs a container: swift://CONTAINER[/PREFIX]".into());
    };
    let (Some(endpoint), Some(token)) =
        (env_var("SWIFT_PREAUTHURL"), env_var("SWIFT_PREAUTHTOKEN"))
    else {
        return Err("swift:// needs SWIFT_PREAUTHURL and SWIFT_PREAUTHTOKEN (dupr does not log in to Keystone with SWIFT_USERNAME/SWIFT_PASSWORD)".into());
    };
    Ok(spec::<services::Swift>(
        Kind::Other,
        kv(&[
            ("endpoint", &endpoint),
            ("container", container),
            ("root", &format!("/{}", rest.join("/"))),
            ("token", &token),
        ]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(url: &str, opts: &BackendOptions) -> Kv {
        s3_spec(&Url::parse(url).unwrap(), opts).unwrap().config
    }

    fn get<'a>(c: &'a Kv, k: &str) -> Option<&'a str> {
        c.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn s3_url_forms() {
        let o = BackendOptions::default();
        let c = s3("s3+http://bucket/prefix/dir", &o);
        assert_eq!(get(&c, "bucket"), Some("bucket"));
        assert_eq!(get(&c, "root"), Some("/prefix/dir"));
        assert_eq!(get(&c, "endpoint"), None);
        let c = s3("s3:///bucket/p", &o);
        assert_eq!(
            (get(&c, "bucket"), get(&c, "root")),
            (Some("bucket"), Some("/p"))
        );
        let c = s3("boto3+s3://bucket", &o);
        assert_eq!(
            (get(&c, "bucket"), get(&c, "root")),
            (Some("bucket"), Some("/"))
        );
        // duplicity 0.8's host form
        let c = s3("s3://s3.eu-central-1.amazonaws.com/bucket/p", &o);
        assert_eq!(get(&c, "bucket"), Some("bucket"));
        assert_eq!(
            get(&c, "endpoint"),
            Some("https://s3.eu-central-1.amazonaws.com")
        );
        let c = s3("s3+http://127.0.0.1:3900/bucket/p", &o);
        assert_eq!(get(&c, "endpoint"), Some("http://127.0.0.1:3900"));
        // A bucket with dots is still a bucket.
        let c = s3("s3://my.bucket/p", &o);
        assert_eq!(get(&c, "bucket"), Some("my.bucket"));
        let mut o = BackendOptions::default();
        o.s3.european_buckets = true;
        o.s3.endpoint_url = Some("127.0.0.1:9000".into());
        o.s3.unencrypted_connection = true;
        let c = s3("s3://b", &o);
        assert_eq!(get(&c, "endpoint"), Some("http://127.0.0.1:9000"));
        if env_var("AWS_REGION").is_none() && env_var("AWS_DEFAULT_REGION").is_none() {
            assert_eq!(get(&c, "region"), Some("eu-west-1"));
        }
        assert!(s3_spec(&Url::parse("s3:///").unwrap(), &o).is_err());
    }

    #[test]
    fn ssh_option_forms() {
        let o = BackendOptions {
            ssh_options: vec![
                "-oIdentityFile=/k -o StrictHostKeyChecking=no".into(),
                "-i /k2".into(),
            ],
            ..Default::default()
        };
        let v = ssh_options(&o);
        assert_eq!(
            v,
            vec![
                ("identityfile".to_string(), "/k".to_string()),
                ("stricthostkeychecking".to_string(), "no".to_string()),
                ("identityfile".to_string(), "/k2".to_string()),
            ]
        );
    }
}
