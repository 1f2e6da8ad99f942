//! Auth tokens, as etcd's `--auth-token` makes them.
//!
//! - `simple`: 16 random letters, a dot and a sequence number
//!   (`yvNbRMtXJbAZUPWd.21`, etcd's format). Kept in this member's table;
//!   one unused for `--auth-token-ttl` expires, one used is extended (etcd's
//!   `simpleTokenKeeper`). A token dies with its user, or when the user's
//!   password changes. As in etcd, Authenticate puts the token through
//!   the log ([`Tokens::assign`] on every member), so any member takes it.
//! - `jwt,pub-key=…,priv-key=…,sign-method=RS256|…,ttl=5m`: a signed JWT
//!   with etcd's claims (`username`, `revision`, `exp`), valid on every
//!   member with the key. Its auth revision is the one it was issued at: a
//!   request with a token older than the auth store fails with `etcdserver:
//!   revision of auth store is old` (the client authenticates again).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::error::Error;

use super::state::AuthState;

/// `--auth-token-ttl` default, seconds (etcd: 300).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// `--bcrypt-cost` default (etcd: bcrypt.DefaultCost).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// A bound on the simple-token table, so a client that authenticates in a
/// loop cannot grow it without end: past it, expired tokens are dropped,
/// then the oldest.
const MAX_SIMPLE_TOKENS: usize = 100_000;
/// etcd's default JWT lifetime.
const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// What `--auth-token` and `--auth-token-ttl` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenConfig {
    Simple {
        ttl: Duration,
    },
    Jwt {
        sign_method: String,
        pub_key: PathBuf,
        priv_key: Option<PathBuf>,
        ttl: Duration,
    },
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig::Simple {
            ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

impl TokenConfig {
    /// Parses `--auth-token` (etcd's `simple` or `jwt,key=value,…`).
    pub fn parse(spec: &str, simple_ttl: Duration) -> Result<TokenConfig, String> {
        let mut parts = spec.split(',');
        match parts.next().unwrap_or("") {
            "simple" => Ok(TokenConfig::Simple { ttl: simple_ttl }),
            "jwt" => {
                let (mut sign_method, mut pub_key, mut priv_key) = (None, None, None);
                let mut ttl = DEFAULT_JWT_TTL;
                for p in parts {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| format!("auth: invalid auth options ({p})"))?;
                    match k {
                        "sign-method" => sign_method = Some(v.to_string()),
                        "pub-key" => pub_key = Some(PathBuf::from(v)),
                        "priv-key" => priv_key = Some(PathBuf::from(v)),
                        "ttl" => {
                            let nanos = crate::compactor::parse_go_duration(v)
                                .ok()
                                .filter(|n| *n > 0)
                                .ok_or_else(|| {
                                    format!("auth: invalid auth options (invalid ttl {v})")
                                })?;
                            ttl = Duration::from_nanos(nanos as u64)
                        }
                        _ => {
                            return Err(format!("auth: invalid auth options (unknown option {k})"))
                        }
                    }
                }
                let sign_method = sign_method
                    .ok_or_else(|| "auth: invalid auth options (no sign-method)".to_string())?;
                let pub_key =
                    pub_key.ok_or_else(|| "auth: invalid auth options (no pub-key)".to_string())?;
                Ok(TokenConfig::Jwt {
                    sign_method,
                    pub_key,
                    priv_key,
                    ttl,
                })
            }
            other => Err(format!(
                "auth: invalid auth options (unknown token type: {other})"
            )),
        }
    }
}

struct SimpleToken {
    user: String,
    password_revision: u64,
    expires: Instant,
}

enum Kind {
    Simple {
        ttl: Duration,
    },
    Jwt {
        algorithm: Algorithm,
        sign: Option<EncodingKey>,
        verify: DecodingKey,
        ttl: Duration,
    },
}

/// This member's token issuer and checker, shared by every executor.
pub struct Tokens {
    kind: Kind,
    simple: Mutex<HashMap<String, SimpleToken>>,
    sequence: AtomicU64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens")
    }
}

impl Tokens {
    /// Reads the JWT keys if any (a bad key refuses to start, as etcd).
    pub fn new(cfg: &TokenConfig) -> Result<Tokens, Error> {
        let kind = match cfg {
            TokenConfig::Simple { ttl } => Kind::Simple { ttl: *ttl },
            TokenConfig::Jwt {
                sign_method,
                pub_key,
                priv_key,
                ttl,
            } => {
                let algorithm: Algorithm = sign_method.parse().map_err(|_| {
                    Error::Config(format!("auth: invalid sign-method {sign_method}"))
                })?;
                let read = |p: &PathBuf| {
                    std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
                };
                let bad = |e: jsonwebtoken::errors::Error| {
                    Error::Config(format!("auth: cannot use the JWT key: {e}"))
                };
                let public = read(pub_key)?;
                let rsa = matches!(
                    algorithm,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                );
                let ec = matches!(algorithm, Algorithm::ES256 | Algorithm::ES384);
                let verify = if rsa {
                    DecodingKey::from_rsa_pem(&public).map_err(bad)?
                } else if ec {
                    DecodingKey::from_ec_pem(&public).map_err(bad)?
                } else {
                    return Err(Error::Config(format!(
                        "auth: unsupported sign-method {sign_method}"
                    )));
                };
                let sign = match priv_key {
                    Some(p) => {
                        let private = read(p)?;
                        Some(if rsa {
                            EncodingKey::from_rsa_pem(&private).map_err(bad)?
                        } else {
                            EncodingKey::from_ec_pem(&private).map_err(bad)?
                        })
                    }
                    None => None,
                };
                Kind::Jwt {
                    algorithm,
                    sign,
                    verify,
                    ttl: *ttl,
                }
            }
        };
        Ok(Tokens {
            kind,
            simple: Mutex::new(HashMap::new()),
            sequence: AtomicU64::new(1),
        })
    }

    /// A token for `user`, who just gave the right password.
    pub fn issue(&self, state: &AuthState, user: &str) -> Result<String, Error> {
        let u = state.users.get(user).ok_or(Error::AuthFailed)?;
        match &self.kind {
            Kind::Simple { .. } => {
                let token = self.new_simple();
                self.assign(&token, user, u.password_revision);
                Ok(token)
            }
            Kind::Jwt {
                algorithm,
                sign,
                ttl,
                ..
            } => {
                let Some(key) = sign else {
                    // etcd: a verify-only member cannot issue tokens.
                    return Err(Error::Config(
                        "auth: the JWT private key is not configured".into(),
                    ));
                };
                let exp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    + ttl.as_secs();
                let claims = serde_json::json!({
                    "username": user,
                    "revision": state.revision,
                    "exp": exp,
                });
                jsonwebtoken::encode(&Header::new(*algorithm), &claims, key)
                    .map_err(|e| Error::Config(format!("auth: cannot sign a JWT: {e}")))
            }
        }
    }

    /// Whether tokens are etcd's `simple` ones, which every member learns
    /// through the log ([`Tokens::assign`]).
    pub fn is_simple(&self) -> bool {
        matches!(self.kind, Kind::Simple { .. })
    }

    /// A fresh simple token, not valid until assigned.
    pub fn new_simple(&self) -> String {
        format!(
            "{}.{}",
            random_letters(16),
            self.sequence.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Makes a simple `token` name `user` (whose password was set at
    /// `password_revision`) for `--auth-token-ttl`; nothing for jwt.
    pub fn assign(&self, token: &str, user: &str, password_revision: u64) {
        let Kind::Simple { ttl } = &self.kind else {
            return;
        };
        let mut table = self.simple.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if table.len() >= MAX_SIMPLE_TOKENS {
            table.retain(|_, t| t.expires > now);
        }
        if table.len() >= MAX_SIMPLE_TOKENS {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, t)| t.expires)
                .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        table.insert(
            token.to_string(),
            SimpleToken {
                user: user.to_string(),
                password_revision,
                expires: now + *ttl,
            },
        );
    }

    /// The user a token names and the auth revision it carries, or etcd's
    /// `invalid auth token`.
    pub fn verify(&self, token: &str, state: &AuthState) -> Result<(String, u64), Error> {
        match &self.kind {
            Kind::Simple { ttl } => {
                let mut table = self.simple.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let Some(t) = table.get_mut(token) else {
                    return Err(Error::InvalidAuthToken);
                };
                let valid = t.expires > now
                    && state
                        .users
                        .get(&t.user)
                        .is_some_and(|u| u.password_revision == t.password_revision);
                if !valid {
                    table.remove(token);
                    return Err(Error::InvalidAuthToken);
                }
                t.expires = now + *ttl;
                Ok((t.user.clone(), state.revision))
            }
            Kind::Jwt {
                algorithm, verify, ..
            } => {
                let data = jsonwebtoken::decode::<serde_json::Value>(
                    token,
                    verify,
                    &Validation::new(*algorithm),
                )
                .map_err(|_| Error::InvalidAuthToken)?;
                let user = data.claims.get("username").and_then(|v| v.as_str());
                let revision = data.claims.get("revision").and_then(|v| v.as_u64());
                match (user, revision) {
                    (Some(u), Some(r)) => Ok((u.to_string(), r)),
                    _ => Err(Error::InvalidAuthToken),
                }
            }
        }
    }
}

fn random_letters(n: usize) -> String {
    use ring::rand::SecureRandom;
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = vec![0u8; n];
    // The system's generator failing leaves zeros: still a token, only a
    // guessable one; it does not fail on Linux.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes
        .iter()
        .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthChange, Change};
    use crate::proto::etcdserverpb as pb;

    #[test]
    fn simple_tokens_look_like_etcds_and_die_with_the_password() {
        let mut s = AuthState::default();
        s.apply(&AuthChange::user_add("u", "h")).unwrap();
        let tokens = Tokens::new(&TokenConfig::default()).unwrap();
        let t = tokens.issue(&s, "u").unwrap();
        let (letters, seq) = t.split_once('.').unwrap();
        assert_eq!(letters.len(), 16);
        assert!(letters.chars().all(|c| c.is_ascii_alphabetic()));
        assert!(seq.parse::<u64>().is_ok());
        assert_eq!(tokens.verify(&t, &s).unwrap().0, "u");
        assert!(matches!(
            tokens.verify("nope.1", &s),
            Err(Error::InvalidAuthToken)
        ));
        s.apply(&AuthChange::new(Change::UserChangePassword(
            pb::AuthUserChangePasswordRequest {
                name: "u".into(),
                hashed_password: "h2".into(),
                ..Default::default()
            },
        )))
        .unwrap();
        assert!(matches!(
            tokens.verify(&t, &s),
            Err(Error::InvalidAuthToken)
        ));
    }

    #[test]
    fn simple_tokens_expire_unused() {
        let mut s = AuthState::default();
        s.apply(&AuthChange::user_add("u", "h")).unwrap();
        let tokens = Tokens::new(&TokenConfig::Simple {
            ttl: Duration::from_millis(50),
        })
        .unwrap();
        let t = tokens.issue(&s, "u").unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert!(tokens.verify(&t, &s).is_err());
    }

    /// An ES256 key pair in PEM files, as `--auth-token jwt,…` names them.
    fn es256_keys(dir: &std::path::Path) -> TokenConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
        std::fs::write(&private, key.serialize_pem()).unwrap();
        std::fs::write(&public, key.public_key_pem()).unwrap();
        TokenConfig::Jwt {
            sign_method: "ES256".into(),
            pub_key: public,
            priv_key: Some(private),
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn jwt_tokens_carry_user_and_revision_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = es256_keys(dir.path());
        let tokens = Tokens::new(&cfg).unwrap();
        let mut s = AuthState::default();
        s.apply(&AuthChange::user_add("u", "h")).unwrap();
        let t = tokens.issue(&s, "u").unwrap();
        assert_eq!(t.split('.').count(), 3, "a JWT");
        assert_eq!(tokens.verify(&t, &s).unwrap(), ("u".to_string(), 1));
        // Tampered: invalid.
        let mut bad = t.clone();
        bad.pop();
        assert!(matches!(
            tokens.verify(&bad, &s),
            Err(Error::InvalidAuthToken)
        ));
        // Another member with only the public key verifies it too.
        let TokenConfig::Jwt { pub_key, .. } = &cfg else {
            unreachable!()
        };
        let verify_only = Tokens::new(&TokenConfig::Jwt {
            sign_method: "ES256".into(),
            pub_key: pub_key.clone(),
            priv_key: None,
            ttl: Duration::from_secs(60),
        })
        .unwrap();
        assert!(verify_only.verify(&t, &s).is_ok());
        assert!(verify_only.issue(&s, "u").is_err());
        // A later auth change makes the token's revision old.
        s.apply(&AuthChange::user_add("v", "h")).unwrap();
        s.enabled = true;
        let state = std::sync::Arc::new(s);
        let mut headers = http::HeaderMap::new();
        headers.insert("token", t.parse().unwrap());
        let meta = crate::grpc::Metadata {
            path: String::new(),
            headers,
            deadline: None,
        };
        let caller = crate::auth::Caller::of(&meta, &state, &tokens).unwrap();
        assert!(matches!(
            caller.check(b"k", b"", crate::auth::Access::Read),
            Err(Error::AuthOldRevision)
        ));
    }

    #[test]
    fn token_options_parse_as_etcds() {
        let ttl = Duration::from_secs(7);
        assert_eq!(
            TokenConfig::parse("simple", ttl).unwrap(),
            TokenConfig::Simple { ttl }
        );
        let jwt = TokenConfig::parse(
            "jwt,pub-key=/a.pub,priv-key=/a,sign-method=RS256,ttl=10m",
            ttl,
        )
        .unwrap();
        assert_eq!(
            jwt,
            TokenConfig::Jwt {
                sign_method: "RS256".into(),
                pub_key: "/a.pub".into(),
                priv_key: Some("/a".into()),
                ttl: Duration::from_secs(600),
            }
        );
        assert!(TokenConfig::parse("jwt,pub-key=/a", ttl).is_err());
        assert!(TokenConfig::parse("magic", ttl).is_err());
    }
}
