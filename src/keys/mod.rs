//! Keys: files in a directory -> verification keys by kid, and the one that signs.
//!
//! `<kid>.pem` holds an Ed25519, RSA or EC (P-256, P-384) key as PEM: a private
//! key (PKCS#8 `PRIVATE KEY`, or PKCS#1 `RSA PRIVATE KEY`) can sign and verify, a
//! public key (`PUBLIC KEY`) only verifies. `<kid>.secret` holds an HMAC secret
//! (HS256): the file's bytes, trailing whitespace trimmed, at least 32 bytes.
//! Each key has exactly one algorithm; a token's header must name it.
//!
//! This file owns the [`KeyRing`] (keys by kid, which one signs, loading a
//! directory) and the key types. The parts live beside it: `pem` (parsing PEM
//! key files), `keygen` (new key files), `watch` (noticing changed files and
//! reloading) and `jwk` (the public keys as a typed JWK Set). Everything is
//! re-exported here, so `crate::keys::X` names every public item.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::config::KeygenAlg;

mod jwk;
mod keygen;
mod pem;
mod watch;

pub use self::jwk::{Jwk, Jwks};
pub use self::keygen::{generate_private_pem, keygen};
pub use self::watch::{fingerprint, watch};

/// Shortest HMAC secret accepted, in bytes (the output size of SHA-256).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file's content is not a usable key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, never the key material.
        reason: String,
    },
    /// The key set as a whole cannot be used.
    #[error("{0}")]
    Set(String),
}

/// A key that verifies tokens whose header names its kid and algorithm.
pub struct VerifyingKey {
    /// The key id (`kid` header).
    pub kid: String,
    /// The one algorithm this key accepts.
    pub alg: Algorithm,
    /// The key material for jsonwebtoken.
    pub decoding: DecodingKey,
    /// The public key, for publishing (None for HMAC secrets, which are never published).
    pub public: Option<PublicKey>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The public half of an asymmetric key, in the form JWKS publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Ed25519: the 32-byte point.
    Ed25519 {
        /// The raw public key.
        x: Vec<u8>,
    },
    /// ECDSA: the affine coordinates.
    Ec {
        /// `P-256` or `P-384`.
        crv: &'static str,
        /// The x coordinate.
        x: Vec<u8>,
        /// The y coordinate.
        y: Vec<u8>,
    },
    /// RSA: modulus and exponent, big-endian.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
}

/// The key that signs new tokens.
pub struct SigningKey {
    /// The key id written into the `kid` header.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    /// The key material for jsonwebtoken.
    pub encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Every key revokd knows, by kid, and the one that signs.
pub struct KeyRing {
    verifying: HashMap<String, Arc<VerifyingKey>>,
    signing: Arc<SigningKey>,
    /// The public keys as a JWK Set, built once per load.
    jwks: Jwks,
    /// `jwks` serialized, as `/.well-known/jwks.json` and GetJwks serve it.
    jwks_json: String,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material never reaches a log line.
        let mut kids: Vec<_> = self.verifying.keys().collect();
        kids.sort();
        f.debug_struct("KeyRing")
            .field("kids", &kids)
            .field("signing_kid", &self.signing.kid)
            .finish()
    }
}

impl KeyRing {
    fn new(verifying: HashMap<String, Arc<VerifyingKey>>, signing: SigningKey) -> Self {
        let mut keys: Vec<_> = verifying.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let jwks = Jwks {
            keys: keys.iter().filter_map(|k| k.jwk()).collect(),
        };
        KeyRing {
            jwks_json: jwks.to_json(),
            jwks,
            verifying,
            signing: Arc::new(signing),
        }
    }

    /// The public keys (never HMAC secrets) as a JWK Set, sorted by kid.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The public keys (never HMAC secrets) as a JWK Set document (RFC 7517):
    /// [`KeyRing::jwks`] serialized.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// The key a `kid` names.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.verifying.get(kid)
    }

    /// The key that signs.
    pub fn signing(&self) -> &Arc<SigningKey> {
        &self.signing
    }

    /// Every verifying key, sorted by kid.
    pub fn verifying_keys(&self) -> Vec<&Arc<VerifyingKey>> {
        let mut keys: Vec<_> = self.verifying.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys
    }

    /// A ring with one fresh Ed25519 key, for when no key directory is configured.
    pub fn ephemeral() -> Result<Self, KeyError> {
        let mut id = [0u8; 6];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| KeyError::Set("no randomness for a key id".into()))?;
        let kid = format!("ephemeral-{}", URL_SAFE_NO_PAD.encode(id));
        let text = generate_private_pem(KeygenAlg::EdDsa)?;
        let (verifying, signing) = pem::parse_pem_key(&kid, text.as_bytes(), "<ephemeral>")?;
        let signing = signing.ok_or_else(|| KeyError::Set("ephemeral key cannot sign".into()))?;
        Ok(KeyRing::new(HashMap::from([(kid, Arc::new(verifying))]), signing))
    }

    /// Loads every `*.pem` and `*.secret` file of `dir`. `signing_kid` picks the
    /// signing key; without it the directory must hold exactly one private key.
    pub fn load_dir(dir: &Path, signing_kid: Option<&str>) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut verifying = HashMap::new();
        let mut signers: HashMap<String, SigningKey> = HashMap::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes' Secret volumes keep `..data` and `..<timestamp>` entries beside the links.
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            let (kid, ext) = match name.rsplit_once('.') {
                Some((kid, ext @ ("pem" | "secret"))) if !kid.is_empty() => (kid.to_string(), ext),
                _ => continue,
            };
            let shown = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|source| KeyError::Io {
                path: shown.clone(),
                source,
            })?;
            let (v, s) = parse_key_file(&kid, ext, &bytes, &shown)?;
            if verifying.contains_key(&kid) {
                return Err(KeyError::Set(format!(
                    "kid {kid:?} is defined twice in {}",
                    dir.display()
                )));
            }
            verifying.insert(kid.clone(), Arc::new(v));
            if let Some(s) = s {
                signers.insert(kid, s);
            }
        }
        if verifying.is_empty() {
            return Err(KeyError::Set(format!(
                "{}: no *.pem or *.secret key files",
                dir.display()
            )));
        }
        let signing = match signing_kid {
            Some(kid) => signers.remove(kid).ok_or_else(|| {
                KeyError::Set(format!(
                    "--signing-kid {kid:?}: no private key or secret with that kid in {}",
                    dir.display()
                ))
            })?,
            None if signers.len() == 1 => signers.into_values().next().expect("one signer"),
            None if signers.is_empty() => {
                return Err(KeyError::Set(format!(
                    "{}: no private key or secret to sign with",
                    dir.display()
                )));
            }
            None => {
                let mut kids: Vec<_> = signers.into_keys().collect();
                kids.sort();
                return Err(KeyError::Set(format!(
                    "{}: several keys can sign ({}); choose one with --signing-kid",
                    dir.display(),
                    kids.join(", ")
                )));
            }
        };
        Ok(KeyRing::new(verifying, signing))
    }
}

/// JOSE name of an algorithm (`EdDSA`, `RS256`, ...).
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // jsonwebtoken's enum is non-exhaustive; no key of ours has another algorithm.
        _ => "unsupported",
    }
}

/// One key file's contents: `ext` `pem` (a public or private key) or
/// `secret` (an HMAC secret); `shown` names it in errors.
pub fn parse_key_file(
    kid: &str,
    ext: &str,
    bytes: &[u8],
    shown: &str,
) -> Result<(VerifyingKey, Option<SigningKey>), KeyError> {
    if ext == "pem" {
        pem::parse_pem_key(kid, bytes, shown)
    } else {
        let (v, s) = hmac_key(kid, bytes, shown)?;
        Ok((v, Some(s)))
    }
}

/// Reads a `<kid>.secret` file: an HS256 key that both verifies and signs.
fn hmac_key(kid: &str, bytes: &[u8], path: &str) -> Result<(VerifyingKey, SigningKey), KeyError> {
    let secret = bytes.trim_ascii_end();
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(KeyError::Invalid {
            path: path.into(),
            reason: format!("HMAC secret shorter than {MIN_HMAC_SECRET_BYTES} bytes"),
        });
    }
    Ok((
        VerifyingKey {
            kid: kid.into(),
            alg: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
            public: None,
        },
        SigningKey {
            kid: kid.into(),
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
        },
    ))
}

/// The kid legacy tokens (migration mode) are reported with; they carry none.
pub const LEGACY_KID: &str = "legacy";

/// Loads the legacy key of migration mode (`--legacy-key-file`): an HMAC
/// secret for the HS algorithms, else a PEM public or private key of
/// exactly `alg`. Never signs.
pub fn load_legacy_key(path: &Path, alg: Algorithm) -> Result<VerifyingKey, KeyError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| KeyError::Invalid {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        // The app's secret as it is (PyJWT takes any): revokd only verifies with it.
        let secret = bytes.trim_ascii_end();
        if secret.is_empty() {
            return Err(KeyError::Invalid {
                path: shown,
                reason: "empty HMAC secret".into(),
            });
        }
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            tracing::warn!(path = %shown, "legacy HMAC secret shorter than {MIN_HMAC_SECRET_BYTES} bytes");
        }
        return Ok(VerifyingKey {
            kid: LEGACY_KID.into(),
            alg,
            decoding: DecodingKey::from_secret(secret),
            public: None,
        });
    }
    let (key, _signing) = pem::parse_pem_key(LEGACY_KID, &bytes, &shown)?;
    if key.alg != alg {
        return Err(KeyError::Invalid {
            path: shown,
            reason: format!("a {} key, but --legacy-alg is {}", alg_name(key.alg), alg_name(alg)),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_choice() {
        let dir = tempfile::tempdir().unwrap();
        keygen(KeygenAlg::EdDsa, "a", dir.path()).unwrap();
        keygen(KeygenAlg::Hs256, "b", dir.path()).unwrap();
        let err = KeyRing::load_dir(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("--signing-kid"), "{err}");
        let ring = KeyRing::load_dir(dir.path(), Some("b")).unwrap();
        assert_eq!(ring.signing().kid, "b");
        assert!(ring.get("a").is_some(), "the other key still verifies");
        assert!(KeyRing::load_dir(dir.path(), Some("zzz")).is_err());
    }

    #[test]
    fn bad_key_files_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short.secret"), b"too-short").unwrap();
        let err = KeyRing::load_dir(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("shorter than 32"), "{err}");
        assert!(!err.contains("too-short"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("junk.pem"),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(KeyRing::load_dir(dir.path(), None).is_err());

        let dir = tempfile::tempdir().unwrap();
        assert!(
            KeyRing::load_dir(dir.path(), None)
                .unwrap_err()
                .to_string()
                .contains("no *.pem")
        );
    }

    #[test]
    fn kubernetes_secret_layout_loads() {
        // A Secret volume: ..data -> ..2026_01_01, and <kid>.pem -> ..data/<kid>.pem.
        let dir = tempfile::tempdir().unwrap();
        let ts = dir.path().join("..2026_01_01");
        std::fs::create_dir(&ts).unwrap();
        keygen(KeygenAlg::EdDsa, "k1", &ts).unwrap();
        std::os::unix::fs::symlink("..2026_01_01", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/k1.pem", dir.path().join("k1.pem")).unwrap();
        let ring = KeyRing::load_dir(dir.path(), None).unwrap();
        assert_eq!(ring.signing().kid, "k1");
        assert_eq!(ring.verifying_keys().len(), 1);
    }
}
