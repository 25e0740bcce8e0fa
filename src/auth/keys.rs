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

/// The verification keys, each bound to its one algorithm (so that an
/// HMAC secret can never check an RS256/ES256 token or the reverse).
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<(Algorithm, DecodingKey)>,
    settings: KeySettings,
}

impl KeySet {
    /// Keys accepting HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8], settings: KeySettings) -> Self {
        KeySet {
            keys: vec![(Algorithm::HS256, DecodingKey::from_secret(secret))],
            settings,
        }
    }

    /// Checks a token's signature and claims; the error is for the log.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("token too long".into());
        }
        let header = decode_header(token).map_err(|e| format!("bad token header: {e}"))?;
        let mut last_error = format!("no key for algorithm {:?}", header.alg);
        for (algorithm, key) in &self.keys {
            if *algorithm != header.alg {
                continue;
            }
            match decode::<Claims>(token, key, &self.validation(*algorithm)) {
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
