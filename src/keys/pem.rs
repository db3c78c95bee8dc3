//! PEM key files: which key family a block holds (Ed25519, RSA, P-256, P-384),
//! and the key it makes: a private key verifies and signs, a public key only
//! verifies. Errors name the file and what is wrong, never the key material.

use aws_lc_rs::signature::{self as sig, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::{KeyError, PublicKey, SigningKey, VerifyingKey};

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

impl Family {
    /// The one algorithm a key of this family is used with.
    fn alg(self) -> Algorithm {
        match self {
            Family::Ed25519 => Algorithm::EdDSA,
            Family::Rsa => Algorithm::RS256,
            Family::P256 => Algorithm::ES256,
            Family::P384 => Algorithm::ES384,
        }
    }
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

fn invalid(path: &str, reason: &str) -> KeyError {
    KeyError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Parses one PEM key file into its verifying half and, for a private key, its signing half.
pub(super) fn parse_pem_key(
    kid: &str,
    bytes: &[u8],
    path: &str,
) -> Result<(VerifyingKey, Option<SigningKey>), KeyError> {
    let block = pem::parse(bytes).map_err(|_| invalid(path, "not a PEM file"))?;
    let tag = block.tag();
    let der = block.contents();
    let family = family_of(tag, der).ok_or_else(|| invalid(path, "not an Ed25519, RSA, P-256 or P-384 key"))?;
    match tag {
        "PRIVATE KEY" | "RSA PRIVATE KEY" => {
            let (verifying, signing) = private_key(kid, family, der, bytes, path)?;
            Ok((verifying, Some(signing)))
        }
        "PUBLIC KEY" | "RSA PUBLIC KEY" => Ok((public_key(kid, family, bytes, path)?, None)),
        "EC PRIVATE KEY" => Err(invalid(
            path,
            "SEC1 EC key: convert it with `openssl pkcs8 -topk8 -nocrypt`",
        )),
        "ENCRYPTED PRIVATE KEY" => Err(invalid(path, "encrypted keys are not supported")),
        _ => Err(invalid(path, "unsupported PEM block (want PRIVATE KEY or PUBLIC KEY)")),
    }
}

/// A private key (PKCS#8, or PKCS#1 for RSA): `der` is the block's content,
/// `bytes` the whole file (which jsonwebtoken parses itself).
fn private_key(
    kid: &str,
    family: Family,
    der: &[u8],
    bytes: &[u8],
    path: &str,
) -> Result<(VerifyingKey, SigningKey), KeyError> {
    let bad = |_| invalid(path, "key rejected by the crypto library");
    let bad_jwt = |_| invalid(path, "key rejected by the JWT library");
    let (decoding, public, encoding) = match family {
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
                ec_public(crv, &point).ok_or_else(|| invalid(path, "unexpected EC point encoding"))?,
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
    };
    let alg = family.alg();
    let signing = SigningKey {
        kid: kid.into(),
        alg,
        encoding,
    };
    Ok((verifying(kid, alg, decoding, public), signing))
}

/// A public key (SPKI `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`): verifies only.
fn public_key(kid: &str, family: Family, bytes: &[u8], path: &str) -> Result<VerifyingKey, KeyError> {
    let bad = |_| invalid(path, "key rejected by the crypto library");
    let bad_jwt = |_| invalid(path, "key rejected by the JWT library");
    let (decoding, public) = match family {
        Family::Ed25519 => {
            let decoding = DecodingKey::from_ed_pem(bytes).map_err(bad_jwt)?;
            let x = decoding.try_get_as_bytes().map_err(bad_jwt)?.to_vec();
            (decoding, PublicKey::Ed25519 { x })
        }
        Family::P256 | Family::P384 => {
            let crv = if matches!(family, Family::P256) {
                "P-256"
            } else {
                "P-384"
            };
            let decoding = DecodingKey::from_ec_pem(bytes).map_err(bad_jwt)?;
            let point = decoding.try_get_as_bytes().map_err(bad_jwt)?.to_vec();
            let public = ec_public(crv, &point).ok_or_else(|| invalid(path, "unexpected EC point encoding"))?;
            (decoding, public)
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
            (decoding, public)
        }
    };
    Ok(verifying(kid, family.alg(), decoding, public))
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

#[cfg(test)]
mod tests {
    use super::super::{KeyRing, keygen};
    use super::*;
    use crate::config::KeygenAlg;

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
}
