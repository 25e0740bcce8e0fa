//! The keys tokens are checked with.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

use super::{Claims, MAX_TOKEN_BYTES};

/// How tokens are checked.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            leeway_seconds: 30,
            issuer: None,
            audience: None,
        }
    }
}

/// One verification key, bound to its one algorithm.
#[derive(Clone)]
struct Key {
    /// The JWKS `kid`, when the key has one.
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Written by hand so that no key material can show: `DecodingKey`'s own
/// `Debug` redacts it today, but that is the dependency's choice to keep.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// The verification keys, each bound to its one algorithm (so that an
/// HMAC secret can never check an RS256/ES256 token or the reverse, and
/// `alg: none` matches nothing). `Debug` shows each key's algorithm and
/// `kid`, never its material.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<Key>,
    settings: KeySettings,
}

impl KeySet {
    /// An empty set; add keys to it.
    pub fn new(settings: KeySettings) -> Self {
        KeySet {
            keys: Vec::new(),
            settings,
        }
    }

    /// Keys accepting HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8], settings: KeySettings) -> Self {
        let mut keys = KeySet::new(settings);
        keys.add_hs256(secret);
        keys
    }

    /// Accepts HS256 tokens signed with `secret`.
    pub fn add_hs256(&mut self, secret: &[u8]) {
        self.keys.push(Key {
            kid: None,
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        });
    }

    /// Accepts RS256 (an RSA public key) or ES256 (a P-256 public key)
    /// tokens, from a PEM file.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<Algorithm, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            self.keys.push(Key {
                kid: None,
                algorithm: Algorithm::RS256,
                key,
            });
            return Ok(Algorithm::RS256);
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            self.keys.push(Key {
                kid: None,
                algorithm: Algorithm::ES256,
                key,
            });
            return Ok(Algorithm::ES256);
        }
        Err("not a PEM RSA or EC public key".into())
    }

    /// Accepts tokens signed by the RS256 and ES256 keys of a JWKS
    /// document; returns how many keys it took. Keys of other algorithms
    /// are refused.
    pub fn add_jwks(&mut self, json: &[u8]) -> Result<usize, String> {
        use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut added = 0;
        for jwk in &set.keys {
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => {
                    return Err(format!(
                        "key {:?}: only RS256 (RSA) and ES256 (P-256) keys are accepted",
                        jwk.common.key_id.as_deref().unwrap_or("without kid")
                    ));
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad key: {e}"))?;
            self.keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
            added += 1;
        }
        Ok(added)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub fn leeway_seconds(&self) -> u64 {
        self.settings.leeway_seconds
    }

    /// Checks a token's signature and claims; the error is for the log.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("token too long".into());
        }
        let header = decode_header(token).map_err(|e| format!("bad token header: {e}"))?;
        let mut last_error = format!("no key for algorithm {:?}", header.alg);
        let candidates = self.keys.iter().filter(|key| {
            key.algorithm == header.alg
                && match (&header.kid, &key.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                }
        });
        for key in candidates {
            match decode::<Claims>(token, &key.key, &self.validation(key.algorithm)) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last_error = format!("token refused: {e}"),
            }
        }
        Err(last_error)
    }
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.settings.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_key_material() {
        let secret = b"keys-unit-test-secret-0123456789abcdef";
        let mut keys = KeySet::hs256(
            secret,
            KeySettings {
                issuer: Some("issuer-x".into()),
                ..KeySettings::default()
            },
        );
        keys.add_hs256(b"another-secret-0123456789abcdef-xyz");
        let printed = format!("{keys:?} {keys:#?}");
        assert!(
            printed.contains("HS256") && printed.contains("issuer-x"),
            "{printed}"
        );
        assert!(
            !printed.contains("keys-unit-test-secret"),
            "the secret as text: {printed}"
        );
        // Bytes print as a list of numbers.
        let as_numbers = format!("{:?}", &secret[..8]);
        let as_numbers = as_numbers.trim_matches(|c| c == '[' || c == ']');
        assert!(
            !printed.contains(as_numbers),
            "the secret's bytes: {printed}"
        );
    }
}
