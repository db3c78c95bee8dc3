//! Keys: files in a directory -> verification keys by kid, and the one that signs.
//!
//! `<kid>.pem` holds an Ed25519, RSA or EC (P-256, P-384) key as PEM: a private
//! key (PKCS#8 `PRIVATE KEY`, or PKCS#1 `RSA PRIVATE KEY`) can sign and verify, a
//! public key (`PUBLIC KEY`) only verifies. `<kid>.secret` holds an HMAC secret
//! (HS256): the file's bytes, trailing whitespace trimmed, at least 32 bytes.
//! Each key has exactly one algorithm; a token's header must name it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{self as sig, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::config::KeygenAlg;

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

impl VerifyingKey {
    /// The key as a JWK (`kty`, `kid`, `alg`, `use`, and its public parameters);
    /// None for an HMAC secret, which is never published.
    pub fn jwk(&self) -> Option<serde_json::Value> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = match self.public.as_ref()? {
            PublicKey::Ed25519 { x } => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}),
            PublicKey::Ec { crv, x, y } => serde_json::json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)}),
            PublicKey::Rsa { n, e } => serde_json::json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
        };
        let obj = jwk.as_object_mut().expect("built as an object");
        obj.insert("kid".into(), self.kid.clone().into());
        obj.insert("alg".into(), alg_name(self.alg).into());
        obj.insert("use".into(), "sig".into());
        Some(jwk)
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

/// Every key revokd knows, by kid, and the one that signs.
pub struct KeyRing {
    verifying: HashMap<String, Arc<VerifyingKey>>,
    signing: Arc<SigningKey>,
    /// The public keys as a JWK Set document, built once per load.
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
        let jwks: Vec<serde_json::Value> = keys.iter().filter_map(|k| k.jwk()).collect();
        KeyRing {
            jwks_json: serde_json::json!({ "keys": jwks }).to_string(),
            verifying,
            signing: Arc::new(signing),
        }
    }

    /// The public keys (never HMAC secrets) as a JWK Set document (RFC 7517).
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
        let pem = generate_private_pem(KeygenAlg::EdDsa)?;
        let (verifying, signing) = parse_pem_key(&kid, pem.as_bytes(), "<ephemeral>")?;
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
            let (v, s) = if ext == "pem" {
                parse_pem_key(&kid, &bytes, &shown)?
            } else {
                let (v, s) = hmac_key(&kid, &bytes, &shown)?;
                (v, Some(s))
            };
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

// DER encodings of the object identifiers that tell key types apart.
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_RSA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Clone, Copy)]
enum Family {
    Ed25519,
    Rsa,
    P256,
    P384,
}

fn family_of(tag: &str, der: &[u8]) -> Option<Family> {
    if tag.starts_with("RSA ") || contains(der, OID_RSA) {
        Some(Family::Rsa)
    } else if contains(der, OID_ED25519) {
        Some(Family::Ed25519)
    } else if contains(der, OID_P256) {
        Some(Family::P256)
    } else if contains(der, OID_P384) {
        Some(Family::P384)
    } else {
        None
    }
}

/// Parses one PEM key file into its verifying half and, for a private key, its signing half.
fn parse_pem_key(kid: &str, bytes: &[u8], path: &str) -> Result<(VerifyingKey, Option<SigningKey>), KeyError> {
    let invalid = |reason: &str| KeyError::Invalid {
        path: path.into(),
        reason: reason.into(),
    };
    let block = pem::parse(bytes).map_err(|_| invalid("not a PEM file"))?;
    let tag = block.tag();
    let der = block.contents();
    let family = family_of(tag, der).ok_or_else(|| invalid("not an Ed25519, RSA, P-256 or P-384 key"))?;
    let private = match tag {
        "PRIVATE KEY" | "RSA PRIVATE KEY" => true,
        "PUBLIC KEY" | "RSA PUBLIC KEY" => false,
        "EC PRIVATE KEY" => {
            return Err(invalid("SEC1 EC key: convert it with `openssl pkcs8 -topk8 -nocrypt`"));
        }
        "ENCRYPTED PRIVATE KEY" => return Err(invalid("encrypted keys are not supported")),
        _ => {
            return Err(invalid("unsupported PEM block (want PRIVATE KEY or PUBLIC KEY)"));
        }
    };
    let alg = match family {
        Family::Ed25519 => Algorithm::EdDSA,
        Family::Rsa => Algorithm::RS256,
        Family::P256 => Algorithm::ES256,
        Family::P384 => Algorithm::ES384,
    };
    let bad = |_| invalid("key rejected by the crypto library");
    let bad_jwt = |_| invalid("key rejected by the JWT library");
    let (decoding, public, encoding) = if private {
        match family {
            Family::Ed25519 => {
                let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(bad)?;
                let x = pair.public_key().as_ref().to_vec();
                (
                    DecodingKey::from_ed_der(&x),
                    PublicKey::Ed25519 { x },
                    EncodingKey::from_ed_pem(bytes).map_err(bad_jwt)?,
                )
            }
            Family::P256 | Family::P384 => {
                let (signing_alg, crv) = match family {
                    Family::P256 => (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
                    _ => (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
                };
                let pair = sig::EcdsaKeyPair::from_pkcs8(signing_alg, der).map_err(bad)?;
                let point = pair.public_key().as_ref().to_vec();
                (
                    DecodingKey::from_ec_der(&point),
                    ec_public(crv, &point).ok_or_else(|| invalid("unexpected EC point encoding"))?,
                    EncodingKey::from_ec_pem(bytes).map_err(bad_jwt)?,
                )
            }
            Family::Rsa => {
                let encoding = EncodingKey::from_rsa_pem(bytes).map_err(bad_jwt)?;
                let pair = sig::RsaKeyPair::from_der(encoding.as_bytes()).map_err(bad)?;
                let public = pair.public_key();
                let n = public.modulus().big_endian_without_leading_zero().to_vec();
                let e = public.exponent().big_endian_without_leading_zero().to_vec();
                (
                    DecodingKey::from_rsa_raw_components(&n, &e),
                    PublicKey::Rsa { n, e },
                    encoding,
                )
            }
        }
    } else {
        match family {
            Family::Ed25519 => {
                let decoding = DecodingKey::from_ed_pem(bytes).map_err(bad_jwt)?;
                let x = decoding.try_get_as_bytes().map_err(bad_jwt)?.to_vec();
                return Ok((verifying(kid, alg, decoding, PublicKey::Ed25519 { x }), None));
            }
            Family::P256 | Family::P384 => {
                let crv = if matches!(family, Family::P256) {
                    "P-256"
                } else {
                    "P-384"
                };
                let decoding = DecodingKey::from_ec_pem(bytes).map_err(bad_jwt)?;
                let point = decoding.try_get_as_bytes().map_err(bad_jwt)?.to_vec();
                let public = ec_public(crv, &point).ok_or_else(|| invalid("unexpected EC point encoding"))?;
                return Ok((verifying(kid, alg, decoding, public), None));
            }
            Family::Rsa => {
                let decoding = DecodingKey::from_rsa_pem(bytes).map_err(bad_jwt)?;
                let public = match decoding.kind() {
                    jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e } => PublicKey::Rsa {
                        n: n.clone(),
                        e: e.clone(),
                    },
                    jsonwebtoken::DecodingKeyKind::SecretOrDer(der) => {
                        let public = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(bad)?;
                        PublicKey::Rsa {
                            n: public.modulus().big_endian_without_leading_zero().to_vec(),
                            e: public.exponent().big_endian_without_leading_zero().to_vec(),
                        }
                    }
                };
                return Ok((verifying(kid, alg, decoding, public), None));
            }
        }
    };
    let signing = SigningKey {
        kid: kid.into(),
        alg,
        encoding,
    };
    Ok((verifying(kid, alg, decoding, public), Some(signing)))
}

fn verifying(kid: &str, alg: Algorithm, decoding: DecodingKey, public: PublicKey) -> VerifyingKey {
    VerifyingKey {
        kid: kid.into(),
        alg,
        decoding,
        public: Some(public),
    }
}

/// Splits an uncompressed SEC1 point (0x04 || x || y) into coordinates.
fn ec_public(crv: &'static str, point: &[u8]) -> Option<PublicKey> {
    let coords = point.strip_prefix(&[0x04])?;
    if coords.is_empty() || coords.len() % 2 != 0 {
        return None;
    }
    let (x, y) = coords.split_at(coords.len() / 2);
    Some(PublicKey::Ec {
        crv,
        x: x.to_vec(),
        y: y.to_vec(),
    })
}

/// A new private key as the text of a key file (PEM, or the secret for HS256).
pub fn generate_private_pem(alg: KeygenAlg) -> Result<String, KeyError> {
    let fail = || KeyError::Set("key generation failed".into());
    let pkcs8: Vec<u8> = match alg {
        KeygenAlg::EdDsa => sig::Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| fail())?
            .as_ref()
            .to_vec(),
        KeygenAlg::Es256 => sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| fail())?
            .as_ref()
            .to_vec(),
        KeygenAlg::Rs256 => {
            use aws_lc_rs::encoding::AsDer;
            sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map_err(|_| fail())?
                .as_ref()
                .to_vec()
        }
        KeygenAlg::Hs256 => {
            let mut secret = [0u8; 48];
            aws_lc_rs::rand::SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| fail())?;
            return Ok(format!("{}\n", URL_SAFE_NO_PAD.encode(secret)));
        }
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8)))
}

/// Writes a new key file `<kid>.pem` or `<kid>.secret` into `dir` (mode 0600); returns its path.
pub fn keygen(alg: KeygenAlg, kid: &str, dir: &Path) -> Result<std::path::PathBuf, KeyError> {
    if kid.is_empty() || kid.starts_with('.') || kid.contains(['/', '\\']) {
        return Err(KeyError::Set(format!("--kid {kid:?}: not usable as a file name")));
    }
    let ext = if alg == KeygenAlg::Hs256 { "secret" } else { "pem" };
    let path = dir.join(format!("{kid}.{ext}"));
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = generate_private_pem(alg)?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
    Ok(path)
}

/// A fingerprint of the key files in `dir` (names and contents), to notice
/// changes. Take it before loading: a change in between then shows as a
/// difference at the next check, never as a missed update.
pub fn fingerprint(dir: &Path) -> std::io::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && (n.ends_with(".pem") || n.ends_with(".secret")))
        .collect();
    names.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for name in names {
        name.hash(&mut h);
        // Read through the links, as a Kubernetes Secret volume swaps `..data` underneath them.
        std::fs::read(dir.join(&name)).unwrap_or_default().hash(&mut h);
    }
    Ok(h.finish())
}

/// Reloads the key ring whenever the files in `dir` change from the
/// fingerprint `loaded_from` the ring in force was loaded at (checked every
/// `every`). A key set that does not load is refused with a log line and the
/// ring in force stays. `on_reload` runs after each successful swap (to drop
/// cached verifications made with keys that may be gone).
pub fn watch(
    dir: std::path::PathBuf,
    signing_kid: Option<String>,
    ring: Arc<arc_swap::ArcSwap<KeyRing>>,
    every: std::time::Duration,
    loaded_from: Option<u64>,
    on_reload: impl Fn(&KeyRing) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = loaded_from;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = match fingerprint(&dir) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot read the keys directory; keeping the keys in force");
                    continue;
                }
            };
            if now == last {
                continue;
            }
            last = now;
            // Without --signing-kid, the key that signs now keeps signing while it is there,
            // so adding a second private key for a rotation is not refused.
            let current = ring.load().signing().kid.clone();
            let loaded = match &signing_kid {
                Some(kid) => KeyRing::load_dir(&dir, Some(kid)),
                None => KeyRing::load_dir(&dir, Some(&current)).or_else(|_| KeyRing::load_dir(&dir, None)),
            };
            match loaded {
                Ok(new) => {
                    tracing::info!(keys = ?new, "keys reloaded");
                    ring.store(Arc::new(new));
                    on_reload(&ring.load());
                }
                Err(e) => tracing::error!(error = %e, "new key set refused; keeping the keys in force"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_and_verify(ring: &KeyRing, kid: &str) {
        let key = ring.get(kid).expect("kid loaded");
        let signing = ring.signing();
        assert_eq!(signing.kid, kid);
        let message = b"header.payload";
        let sig = jsonwebtoken::crypto::sign(message, &signing.encoding, signing.alg).unwrap();
        assert!(jsonwebtoken::crypto::verify(&sig, message, &key.decoding, key.alg).unwrap());
        assert!(!jsonwebtoken::crypto::verify(&sig, b"header.other", &key.decoding, key.alg).unwrap());
    }

    #[test]
    fn keygen_writes_keys_that_load_sign_and_verify() {
        for (alg, kid, expected) in [
            (KeygenAlg::EdDsa, "ed", Algorithm::EdDSA),
            (KeygenAlg::Es256, "ec", Algorithm::ES256),
            (KeygenAlg::Rs256, "rsa", Algorithm::RS256),
            (KeygenAlg::Hs256, "hs", Algorithm::HS256),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = keygen(alg, kid, dir.path()).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            let ring = KeyRing::load_dir(dir.path(), None).unwrap();
            assert_eq!(ring.get(kid).unwrap().alg, expected);
            assert_eq!(ring.get(kid).unwrap().public.is_none(), alg == KeygenAlg::Hs256);
            sign_and_verify(&ring, kid);
            // keygen never overwrites.
            assert!(keygen(alg, kid, dir.path()).is_err());
        }
    }

    #[test]
    fn public_keys_verify_only_and_match_the_private_half() {
        let dir = tempfile::tempdir().unwrap();
        keygen(KeygenAlg::EdDsa, "signer", dir.path()).unwrap();
        let ring = KeyRing::load_dir(dir.path(), None).unwrap();
        let Some(PublicKey::Ed25519 { x }) = ring.get("signer").unwrap().public.clone() else {
            panic!("ed25519 public key")
        };
        // Write the public half as SPKI PEM under another kid.
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(&x);
        std::fs::write(
            dir.path().join("old.pem"),
            pem::encode(&pem::Pem::new("PUBLIC KEY", spki)),
        )
        .unwrap();
        let ring = KeyRing::load_dir(dir.path(), None).unwrap();
        let old = ring.get("old").unwrap();
        assert_eq!(old.alg, Algorithm::EdDSA);
        assert_eq!(old.public, Some(PublicKey::Ed25519 { x }));
        let sig = jsonwebtoken::crypto::sign(b"m", &ring.signing().encoding, Algorithm::EdDSA).unwrap();
        assert!(jsonwebtoken::crypto::verify(&sig, b"m", &old.decoding, old.alg).unwrap());
    }

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
