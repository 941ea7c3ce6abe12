//! Who is calling: JWT bearer tokens (HS256 with a shared secret; RS256/ES256 with a
//! PEM public key or a JWKS file) and static API keys, and the scopes they carry.
//!
//! Tokens are checked by [`jsonwebtoken`]: signature, `exp` (required) and `nbf`
//! (when present) with `auth.leeway_secs` of slack, and `iss`/`aud` when configured.
//! The algorithm is pinned by the key: an HMAC secret checks only HS* tokens, an RSA
//! or EC key only RS*/PS* or ES* tokens, so a token signed with the public key as an
//! HMAC secret, or `alg: none`, is refused. API keys are kept as SHA-256 digests and
//! looked up by the digest of what the client sends, so no key is held or compared
//! in plain text.

use super::config::AuthConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Shortest accepted API key, in bytes.
pub const MIN_API_KEY_BYTES: usize = 16;

/// What a credential must allow to reach an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Sending events: HTTP ingest, gRPC `flujo.v1.Ingest`, TCP event lines.
    Ingest,
    /// Reading KPIs: the query API, `/v1/stream/kpis` and the page at `/`.
    Query,
}

impl Scope {
    /// Both scopes.
    pub const ALL: [Scope; 2] = [Scope::Ingest, Scope::Query];

    /// Its name in the `scope` claim, the API keys file and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller whose credential checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub:<sub>` of a token, `key:<name>` of an API key, or `None` for a token
    /// without `sub` (then the peer address names the client for rate limits).
    pub client: Option<String>,
    /// The scopes it was granted.
    pub scopes: BTreeSet<String>,
}

impl Identity {
    /// `Ok` when it holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.contains(scope.as_str()) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(scope))
        }
    }
}

/// Why a request is not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credential was sent.
    Missing,
    /// The credential is malformed, forged, for another issuer or audience, not yet
    /// valid, or an unknown API key (the reason says which, without secrets).
    Invalid(String),
    /// The token's `exp` has passed (beyond the leeway).
    Expired,
    /// A good credential without the scope the operation needs.
    Forbidden(Scope),
}

impl AuthError {
    /// Its `reason` label (one of `flujo_actors::metrics::AUTH_FAILURE_REASONS`).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(_) => "invalid",
            AuthError::Expired => "expired",
            AuthError::Forbidden(_) => "forbidden",
        }
    }

    /// 403 rather than 401: the caller is known but not allowed.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::Forbidden(_))
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => {
                f.write_str("no credential: send `Authorization: Bearer <token>`")
            }
            AuthError::Invalid(why) => write!(f, "invalid credential: {why}"),
            AuthError::Expired => f.write_str("invalid credential: token expired"),
            AuthError::Forbidden(scope) => {
                write!(f, "credential lacks the `{scope}` scope")
            }
        }
    }
}

/// One entry of the API keys file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyEntry {
    name: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeysFile {
    #[serde(default)]
    keys: Vec<ApiKeyEntry>,
}

/// A verification key and the algorithms it may check.
struct TokenKey {
    kid: Option<String>,
    key: DecodingKey,
    family: AlgorithmFamily,
}

/// The claims flujo reads; `exp`, `nbf`, `iss` and `aud` are checked by
/// [`jsonwebtoken`] itself.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<Value>,
}

/// Checks credentials against the configured keys.
pub struct Authenticator {
    secret: Option<TokenKey>,
    public: Vec<TokenKey>,
    api_keys: HashMap<[u8; 32], Identity>,
    leeway: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys themselves.
        f.debug_struct("Authenticator")
            .field("hmac", &self.secret.is_some())
            .field("public_keys", &self.public.len())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

/// A configuration problem: the key at fault and why.
pub type Problem = (&'static str, String);

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, Problem> {
    std::fs::read(path).map_err(|e| (key, format!("cannot read {}: {e}", path.display())))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Authenticator {
    /// Reads the configured key files: `Ok(None)` when authentication is off, else
    /// the authenticator, or every problem found (one per key).
    pub fn load(cfg: &AuthConfig) -> Result<Option<Authenticator>, Vec<Problem>> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let mut problems = Vec::new();
        let mut auth = Authenticator {
            secret: None,
            public: Vec::new(),
            api_keys: HashMap::new(),
            leeway: cfg.leeway_secs,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
        };
        if let Some(path) = &cfg.jwt_secret_file {
            match load_secret(path) {
                Ok(key) => auth.secret = Some(key),
                Err(p) => problems.push(p),
            }
        }
        if let Some(path) = &cfg.jwt_public_key_file {
            match load_pem(path) {
                Ok(key) => auth.public.push(key),
                Err(p) => problems.push(p),
            }
        }
        if let Some(path) = &cfg.jwks_file {
            match load_jwks(path) {
                Ok(keys) => auth.public.extend(keys),
                Err(p) => problems.push(p),
            }
        }
        if let Some(path) = &cfg.api_keys_file {
            match load_api_keys(path) {
                Ok(keys) => auth.api_keys = keys,
                Err(p) => problems.extend(p),
            }
        }
        if problems.is_empty() {
            Ok(Some(auth))
        } else {
            Err(problems)
        }
    }

    /// The identity behind `credential` (a JWT or an API key).
    pub fn verify(&self, credential: &str) -> Result<Identity, AuthError> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(AuthError::Missing);
        }
        if let Some(identity) = self.api_keys.get(&digest(credential.as_bytes())) {
            return Ok(identity.clone());
        }
        if credential.split('.').count() != 3 {
            return Err(AuthError::Invalid(
                "neither a known API key nor a JWT".into(),
            ));
        }
        self.verify_token(credential)
    }

    /// The identity behind `credential`, which must hold `scope`.
    pub fn authorize(&self, credential: Option<&str>, scope: Scope) -> Result<Identity, AuthError> {
        let identity = self.verify(credential.ok_or(AuthError::Missing)?)?;
        identity.require(scope)?;
        Ok(identity)
    }

    fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        let family = header.alg.family();
        let key = self.key_for(family, header.kid.as_deref())?;
        let mut validation = Validation::new_for_family(family);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.set_required_spec_claims(&["exp", "aud"]);
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            let mut required = validation.required_spec_claims.clone();
            required.insert("iss".into());
            validation.required_spec_claims = required;
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("token not valid yet (nbf)".into())
                }
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim `{c}`"))
                }
                _ => AuthError::Invalid(format!("malformed token: {e}")),
            })?
            .claims;
        let scopes = match claims.scope {
            None => BTreeSet::new(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(_) => {
                return Err(AuthError::Invalid(
                    "claim `scope` must be a space-separated string".into(),
                ))
            }
        };
        Ok(Identity {
            client: claims
                .sub
                .filter(|s| !s.is_empty())
                .map(|s| format!("sub:{s}")),
            scopes,
        })
    }

    /// The key that checks a token of `family` with key id `kid`.
    fn key_for(&self, family: AlgorithmFamily, kid: Option<&str>) -> Result<&TokenKey, AuthError> {
        if family == AlgorithmFamily::Hmac {
            return self.secret.as_ref().ok_or_else(|| {
                AuthError::Invalid("HMAC-signed tokens are not accepted here".into())
            });
        }
        let candidates: Vec<&TokenKey> =
            self.public.iter().filter(|k| k.family == family).collect();
        let by_kid = kid.and_then(|kid| {
            candidates
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .copied()
        });
        let unnamed = candidates.iter().find(|k| k.kid.is_none()).copied();
        let only = (candidates.len() == 1).then(|| candidates[0]);
        by_kid
            .or(unnamed)
            .or(only.filter(|_| kid.is_none()))
            .ok_or_else(|| match kid {
                Some(kid) => {
                    AuthError::Invalid(format!("no key with kid `{kid}` for {family:?} tokens"))
                }
                None => AuthError::Invalid(format!("no key for {family:?} tokens")),
            })
    }
}

fn load_secret(path: &Path) -> Result<TokenKey, Problem> {
    const KEY: &str = "auth.jwt_secret_file";
    let mut bytes = read(KEY, path)?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET_BYTES {
        return Err((
            KEY,
            format!(
                "the secret in {} is {} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
                path.display(),
                bytes.len()
            ),
        ));
    }
    let key = DecodingKey::from_secret(&bytes)
        .map_err(|e| (KEY, format!("unusable secret in {}: {e}", path.display())))?;
    Ok(TokenKey {
        kid: None,
        key,
        family: AlgorithmFamily::Hmac,
    })
}

fn load_pem(path: &Path) -> Result<TokenKey, Problem> {
    const KEY: &str = "auth.jwt_public_key_file";
    let pem = read(KEY, path)?;
    let (key, family) = match DecodingKey::from_rsa_pem(&pem) {
        Ok(key) => (key, AlgorithmFamily::Rsa),
        Err(_) => match DecodingKey::from_ec_pem(&pem) {
            Ok(key) => (key, AlgorithmFamily::Ec),
            Err(_) => {
                return Err((
                    KEY,
                    format!(
                        "{} holds no RSA or EC public key in PEM form",
                        path.display()
                    ),
                ))
            }
        },
    };
    Ok(TokenKey {
        kid: None,
        key,
        family,
    })
}

fn load_jwks(path: &Path) -> Result<Vec<TokenKey>, Problem> {
    const KEY: &str = "auth.jwks_file";
    let text = read(KEY, path)?;
    let set: JwkSet = serde_json::from_slice(&text)
        .map_err(|e| (KEY, format!("{} is not a JWKS: {e}", path.display())))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            (
                KEY,
                format!(
                    "key {:?} of {}: {e}",
                    jwk.common.key_id.as_deref().unwrap_or("(no kid)"),
                    path.display()
                ),
            )
        })?;
        keys.push(TokenKey {
            kid: jwk.common.key_id.clone(),
            family: key.family(),
            key,
        });
    }
    if keys.is_empty() {
        return Err((KEY, format!("{} holds no signing key", path.display())));
    }
    Ok(keys)
}

fn load_api_keys(path: &Path) -> Result<HashMap<[u8; 32], Identity>, Vec<Problem>> {
    const KEY: &str = "auth.api_keys_file";
    let bytes = read(KEY, path).map_err(|p| vec![p])?;
    let text = String::from_utf8(bytes)
        .map_err(|_| vec![(KEY, format!("{} is not UTF-8 text", path.display()))])?;
    let file: ApiKeysFile = toml::from_str(&text)
        .map_err(|e| vec![(KEY, format!("{}: {}", path.display(), e.message()))])?;
    let mut problems = Vec::new();
    let mut keys = HashMap::new();
    let mut names = BTreeSet::new();
    for (i, entry) in file.keys.into_iter().enumerate() {
        let at = format!("{} key {} ({:?})", path.display(), i + 1, entry.name);
        if entry.name.is_empty() || !names.insert(entry.name.clone()) {
            problems.push((KEY, format!("{at}: `name` must be non-empty and unique")));
        }
        let hash = match (&entry.key, &entry.sha256) {
            (Some(key), None)
                if key.len() >= MIN_API_KEY_BYTES && !key.contains(char::is_whitespace) =>
            {
                Some(digest(key.as_bytes()))
            }
            (Some(_), None) => {
                problems.push((
                    KEY,
                    format!(
                        "{at}: `key` must be at least {MIN_API_KEY_BYTES} bytes without spaces"
                    ),
                ));
                None
            }
            (None, Some(hex)) => {
                let parsed = parse_hex32(hex);
                if parsed.is_none() {
                    problems.push((KEY, format!("{at}: `sha256` must be 64 hex digits")));
                }
                parsed
            }
            _ => {
                problems.push((KEY, format!("{at}: give exactly one of `key` and `sha256`")));
                None
            }
        };
        for scope in &entry.scopes {
            if !Scope::ALL.iter().any(|s| s.as_str() == scope) {
                problems.push((
                    KEY,
                    format!("{at}: unknown scope `{scope}` (ingest, query)"),
                ));
            }
        }
        if let Some(hash) = hash {
            let identity = Identity {
                client: Some(format!("key:{}", entry.name)),
                scopes: entry.scopes.into_iter().collect(),
            };
            if keys.insert(hash, identity).is_some() {
                problems.push((KEY, format!("{at}: the same key is listed twice")));
            }
        }
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth_with(dir: &Path, api_keys: &str) -> Authenticator {
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).expect("write");
        let keys = dir.join("keys.toml");
        std::fs::write(&keys, api_keys).expect("write");
        let cfg = AuthConfig {
            jwt_secret_file: Some(secret),
            api_keys_file: Some(keys),
            ..AuthConfig::default()
        };
        Authenticator::load(&cfg).expect("loads").expect("enabled")
    }

    fn token(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
        )
        .expect("encode")
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn tokens_and_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let auth = auth_with(
            dir.path(),
            "[[keys]]\nname = \"shop\"\nkey = \"k-0123456789abcdef\"\nscopes = [\"ingest\"]\n",
        );
        let good = token(json!({"sub": "a", "scope": "ingest query", "exp": now() + 60}));
        let id = auth.authorize(Some(&good), Scope::Query).expect("good");
        assert_eq!(id.client.as_deref(), Some("sub:a"));
        let old = token(json!({"sub": "a", "scope": "ingest", "exp": now() - 120}));
        assert_eq!(auth.verify(&old), Err(AuthError::Expired));
        let skewed = token(json!({"sub": "a", "scope": "ingest", "exp": now() - 5}));
        assert!(auth.verify(&skewed).is_ok(), "within the leeway");
        let early = token(json!({"scope": "ingest", "exp": now() + 600, "nbf": now() + 300}));
        assert!(matches!(auth.verify(&early), Err(AuthError::Invalid(_))));
        let no_exp = token(json!({"scope": "ingest"}));
        assert!(matches!(auth.verify(&no_exp), Err(AuthError::Invalid(_))));
        assert_eq!(
            auth.authorize(Some("k-0123456789abcdef"), Scope::Query),
            Err(AuthError::Forbidden(Scope::Query))
        );
        let key = auth
            .authorize(Some("k-0123456789abcdef"), Scope::Ingest)
            .expect("api key");
        assert_eq!(key.client.as_deref(), Some("key:shop"));
        assert_eq!(auth.authorize(None, Scope::Ingest), Err(AuthError::Missing));
        assert!(matches!(auth.verify("nope"), Err(AuthError::Invalid(_))));
        // alg: none
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            good.split('.').nth(1).unwrap_or_default()
        );
        assert!(matches!(auth.verify(&none), Err(AuthError::Invalid(_))));
        // tampered payload
        let parts: Vec<&str> = good.split('.').collect();
        let other = token(json!({"sub": "b", "scope": "ingest query", "exp": now() + 60}));
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            other.split('.').nth(1).unwrap_or_default(),
            parts[2]
        );
        assert_eq!(
            auth.verify(&forged),
            Err(AuthError::Invalid("bad signature".into()))
        );
    }

    #[test]
    fn bad_files_name_the_key() {
        let dir = tempfile::tempdir().expect("dir");
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny").expect("write");
        let keys = dir.path().join("keys.toml");
        std::fs::write(
            &keys,
            "[[keys]]\nname = \"a\"\nkey = \"short\"\n[[keys]]\nname = \"a\"\nsha256 = \"zz\"\nscopes = [\"admin\"]\n",
        )
        .expect("write");
        let cfg = AuthConfig {
            jwt_secret_file: Some(short),
            jwt_public_key_file: Some(dir.path().join("missing.pem")),
            api_keys_file: Some(keys),
            ..AuthConfig::default()
        };
        let problems = Authenticator::load(&cfg).expect_err("bad");
        let keys: Vec<&str> = problems.iter().map(|p| p.0).collect();
        assert_eq!(
            keys,
            [
                "auth.jwt_secret_file",
                "auth.jwt_public_key_file",
                "auth.api_keys_file",
                "auth.api_keys_file",
                "auth.api_keys_file",
                "auth.api_keys_file"
            ],
            "{problems:?}"
        );
        assert!(Authenticator::load(&AuthConfig::default())
            .expect("off")
            .is_none());
    }
}
