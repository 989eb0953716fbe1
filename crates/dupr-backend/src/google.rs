//! Google Drive credentials as duplicity reads them, turned into what
//! OpenDAL's `gdrive` service takes (an access token, or a refresh token
//! with its OAuth client).
//!
//! * `GOOGLE_SERVICE_JSON_FILE` (3.x `gdrive://`): a service account's JSON
//!   key; dupr signs the JWT grant itself and exchanges it for a token.
//! * `GOOGLE_CLIENT_SECRET_JSON_FILE` + `GOOGLE_CREDENTIALS_FILE` (3.x OAuth):
//!   the saved authorized-user credentials with their refresh token.
//! * `GOOGLE_DRIVE_ACCOUNT_KEY` (`pydrive://`/`gdocs://`): a service
//!   account's PEM key, the account being the URL's `user@host`.
//! * `GOOGLE_APPLICATION_CREDENTIALS`: either kind of JSON file.

use base64::Engine;
use opendal::{Buffer, HttpTransporter};

use crate::http::SetupError;
use dupr_core::backend::env_var;
use dupr_core::backend::url::Url;

const SCOPE: &str = "https://www.googleapis.com/auth/drive";
const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

type Kv = Vec<(String, String)>;

/// A service account's key, to sign new token grants as old ones expire.
pub struct TokenSource {
    email: String,
    pem: String,
    token_uri: String,
    /// The transport for the grant itself (no Drive hooks).
    tp: HttpTransporter,
    /// The current token and when it stops being used (epoch seconds).
    current: std::sync::Mutex<(String, i64)>,
}

/// Tokens last an hour; a new one is fetched five minutes before.
const TOKEN_LIFE: i64 = 3600 - 300;

impl TokenSource {
    /// The bearer token to send now.
    pub(crate) async fn bearer(&self) -> Result<String, SetupError> {
        let now = dupr_core::time::now();
        {
            let cur = self.current.lock().expect("token lock");
            if now < cur.1 {
                return Ok(cur.0.clone());
            }
        }
        let t = service_account_token(&self.email, &self.pem, &self.token_uri, &self.tp).await?;
        *self.current.lock().expect("token lock") = (t.clone(), now + TOKEN_LIFE);
        Ok(t)
    }
}

/// OpenDAL's config for the account, and for a service account the source
/// of fresh tokens (OpenDAL cannot renew a static one; a run may outlast it).
pub async fn drive_auth(
    u: &Url,
    tp: &HttpTransporter,
) -> Result<(Kv, Option<std::sync::Arc<TokenSource>>), SetupError> {
    let (kv, sa) = drive_credentials_inner(u, tp).await?;
    let src = sa.map(|(email, pem, token_uri)| {
        let token = kv
            .iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        std::sync::Arc::new(TokenSource {
            email,
            pem,
            token_uri,
            tp: tp.clone(),
            current: std::sync::Mutex::new((token, dupr_core::time::now() + TOKEN_LIFE)),
        })
    });
    Ok((kv, src))
}

type Sa = Option<(String, String, String)>;

async fn drive_credentials_inner(u: &Url, tp: &HttpTransporter) -> Result<(Kv, Sa), SetupError> {
    if let Some(id) = u.query("myDriveFolderID").filter(|v| *v != "root") {
        tracing::warn!("myDriveFolderID={id} is ignored: dupr uses the path from My Drive's root");
    }
    if let Some(f) = env_var("GOOGLE_SERVICE_JSON_FILE") {
        return from_json_file(&f, "GOOGLE_SERVICE_JSON_FILE", None, tp).await;
    }
    if let Some(f) = env_var("GOOGLE_CREDENTIALS_FILE") {
        let secret = env_var("GOOGLE_CLIENT_SECRET_JSON_FILE");
        return from_json_file(&f, "GOOGLE_CREDENTIALS_FILE", secret.as_deref(), tp).await;
    }
    if let Some(pem) = env_var("GOOGLE_DRIVE_ACCOUNT_KEY") {
        let email = match &u.user {
            Some(user) => format!("{user}@{}", u.host),
            None => {
                return Err(
                    "GOOGLE_DRIVE_ACCOUNT_KEY needs the service account in the URL: gdocs://NAME@PROJECT.iam.gserviceaccount.com/FOLDER"
                        .into(),
                )
            }
        };
        let token = service_account_token(&email, &pem, TOKEN_URI, tp).await?;
        return Ok((
            vec![("access_token".into(), token)],
            Some((email, pem, TOKEN_URI.to_string())),
        ));
    }
    if env_var("GOOGLE_DRIVE_SETTINGS").is_some() {
        return Err("GOOGLE_DRIVE_SETTINGS (a PyDrive settings file) is not supported: give GOOGLE_CREDENTIALS_FILE or GOOGLE_SERVICE_JSON_FILE".into());
    }
    if let Some(f) = env_var("GOOGLE_APPLICATION_CREDENTIALS") {
        return from_json_file(&f, "GOOGLE_APPLICATION_CREDENTIALS", None, tp).await;
    }
    Err("no Google credentials: set GOOGLE_SERVICE_JSON_FILE, or GOOGLE_CLIENT_SECRET_JSON_FILE and GOOGLE_CREDENTIALS_FILE".into())
}

async fn from_json_file(
    path: &str,
    var: &str,
    client_secret_file: Option<&str>,
    tp: &HttpTransporter,
) -> Result<(Kv, Sa), SetupError> {
    let read = |p: &str, var: &str| -> Result<serde_json::Value, SetupError> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{var} {p}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{var} {p}: not JSON: {e}").into())
    };
    let v = read(path, var)?;
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().map(str::to_string);
    if v["type"].as_str() == Some("service_account") || v["private_key"].is_string() {
        let email = s(&v, "client_email").ok_or(format!("{var} {path}: no client_email"))?;
        let pem = s(&v, "private_key").ok_or(format!("{var} {path}: no private_key"))?;
        let uri = s(&v, "token_uri").unwrap_or_else(|| TOKEN_URI.into());
        let token = service_account_token(&email, &pem, &uri, tp).await?;
        return Ok((
            vec![("access_token".into(), token)],
            Some((email, pem, uri)),
        ));
    }
    let refresh = s(&v, "refresh_token").ok_or(format!(
        "{var} {path}: neither a service account key nor saved credentials with a refresh_token"
    ))?;
    let (mut id, mut secret) = (s(&v, "client_id"), s(&v, "client_secret"));
    if let Some(f) = client_secret_file {
        let c = read(f, "GOOGLE_CLIENT_SECRET_JSON_FILE")?;
        let inner = if c["installed"].is_object() {
            &c["installed"]
        } else {
            &c["web"]
        };
        id = id.or_else(|| s(inner, "client_id"));
        secret = secret.or_else(|| s(inner, "client_secret"));
    }
    let id = id.ok_or(format!(
        "{var} {path}: no client_id (give GOOGLE_CLIENT_SECRET_JSON_FILE)"
    ))?;
    let secret = secret.ok_or(format!(
        "{var} {path}: no client_secret (give GOOGLE_CLIENT_SECRET_JSON_FILE)"
    ))?;
    Ok((
        vec![
            ("refresh_token".into(), refresh),
            ("client_id".into(), id),
            ("client_secret".into(), secret),
        ],
        None,
    ))
}

/// OAuth 2.0 JWT bearer grant (RFC 7523) for a service account.
async fn service_account_token(
    email: &str,
    pem: &str,
    token_uri: &str,
    tp: &HttpTransporter,
) -> Result<String, SetupError> {
    let jwt = sign_jwt(email, pem, token_uri, dupr_core::time::now())?;
    let body =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}");
    let req = http::Request::post(token_uri)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(Buffer::from(body))
        .map_err(|e| e.to_string())?;
    let v = crate::http::json_reply(tp, req, "Google service account log-in").await?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| SetupError::Service {
            reason: "Google service account log-in: no access_token in the reply".into(),
            transient: false,
        })
}

fn sign_jwt(email: &str, pem: &str, aud: &str, now: i64) -> Result<String, SetupError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let pem = pem.replace("\\n", "\n");
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|e| format!("the service account's private key does not parse: {e}"))?;
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": email, "scope": SCOPE, "aud": aud, "iat": now, "exp": now + 3600,
    });
    let claims = b64(claims.to_string().as_bytes());
    let msg = format!("{header}.{claims}");
    let sk = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
    let sig = sk.sign(msg.as_bytes()).to_vec();
    Ok(format!("{msg}.{}", b64(&sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_verifies_with_the_public_key() {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::signature::Verifier;
        let mut rng = rand::thread_rng();
        let key = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let jwt = sign_jwt("a@b.iam.gserviceaccount.com", &pem, TOKEN_URI, 1000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let d = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        let claims: serde_json::Value = serde_json::from_slice(&d(parts[1])).unwrap();
        assert_eq!(claims["iss"], "a@b.iam.gserviceaccount.com");
        assert_eq!(claims["exp"], 4600);
        let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.to_public_key());
        let sig = rsa::pkcs1v15::Signature::try_from(d(parts[2]).as_slice()).unwrap();
        vk.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        assert!(sign_jwt("a", "not a key", TOKEN_URI, 0).is_err());
    }
}
