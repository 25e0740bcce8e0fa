//! Authentication (JWT bearer tokens) and authorisation (roles and
//! accounts, SPEC §8).
//!
//! Handlers call [`Authenticator::authorize`] first: it reads the bearer
//! token, checks it, and checks the caller's roles against the one
//! permission matrix in [`permissions`].

mod keys;
mod permissions;
pub mod secret;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};

use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

pub use keys::{KeySet, KeySettings};
pub use permissions::{Permission, Role};
pub use secret::{load_or_create_secret, mint_token};

use crate::{
    domain::values::{MAX_ACTOR, MAX_IDENTIFIER, identifier},
    store::Access,
};

/// Longest token accepted; longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims this service reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The caller: recorded as the actor, assignee of Assign to me.
    pub sub: String,
    /// `viewer`, `requester`, `agent`, `admin`; others are ignored.
    #[serde(default)]
    pub roles: Vec<String>,
    /// When present, the only accounts whose cases the caller may see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// One audience or several (identity providers send both forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// The `aud` claim: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub roles: HashSet<Role>,
    pub access: Access,
    /// When the token stops being valid (its `exp`, plus the leeway).
    pub valid_until: SystemTime,
}

impl Caller {
    /// The caller, if its roles allow `permission`.
    pub fn may(self, permission: Permission) -> Result<Caller, AuthError> {
        if self.roles.iter().any(|role| role.allows(permission)) {
            Ok(self)
        } else {
            Err(AuthError::PermissionDenied(permission))
        }
    }

    /// Whether the token is still valid now.
    pub fn is_valid_now(&self) -> bool {
        SystemTime::now() < self.valid_until
    }
}

/// A verified token, remembered so that the next call with it skips the
/// signature check (its times are still checked on every call).
#[derive(Clone)]
struct Verified {
    caller: Caller,
    /// `nbf` minus the leeway, when the token has one.
    valid_from: Option<SystemTime>,
}

/// Verified tokens remembered, at most (by the SHA-256 of the token, so
/// that memory stays small whatever tokens clients send).
const VERIFIED_TOKENS: usize = 4096;

/// Why a call is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable token. The reason is for the log only: clients get one
    /// message whatever went wrong.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller's roles do not allow the call.
    #[error("the caller's roles do not allow {0}")]
    PermissionDenied(Permission),
    /// The caller may not create cases for that account.
    #[error("the caller may not create cases for that account")]
    AccountDenied,
}

/// Checks bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    keys: KeySet,
    verified: Arc<quick_cache::sync::Cache<[u8; 32], Verified>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator that accepts tokens signed with these keys.
    pub fn new(keys: KeySet) -> Self {
        Authenticator {
            keys,
            verified: Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS)),
        }
    }

    /// Authenticates the call and checks that the caller may do `permission`.
    pub fn authorize(
        &self,
        metadata: &MetadataMap,
        permission: Permission,
    ) -> Result<Caller, AuthError> {
        self.authenticate(metadata)?.may(permission)
    }

    /// Reads and checks the bearer token.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, AuthError> {
        self.authenticate_value(metadata.get("authorization").map(|v| v.as_ref()))
    }

    /// Checks the value of an `authorization` header (`Bearer <token>`).
    pub fn authenticate_value(&self, value: Option<&[u8]>) -> Result<Caller, AuthError> {
        let unauthenticated = |why: &str| AuthError::Unauthenticated(why.to_owned());
        let value = value.ok_or_else(|| unauthenticated("no authorization metadata"))?;
        if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
            return Err(unauthenticated("token too long"));
        }
        let value = std::str::from_utf8(value)
            .ok()
            .filter(|v| v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .ok_or_else(|| unauthenticated("authorization is not ASCII"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthenticated("authorization is not a bearer token")),
        };
        self.check_token(token)
    }

    /// Verifies a bearer token (or finds it verified before) and checks its
    /// times now.
    fn check_token(&self, token: &str) -> Result<Caller, AuthError> {
        let unauthenticated = |why: &str| AuthError::Unauthenticated(why.to_owned());
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = SystemTime::now();
        if let Some(verified) = self.verified.get(&key) {
            if now >= verified.caller.valid_until {
                self.verified.remove(&key);
                return Err(unauthenticated("token expired"));
            }
            if verified.valid_from.is_some_and(|from| now < from) {
                return Err(unauthenticated("token not yet valid"));
            }
            return Ok(verified.caller);
        }
        let claims = self
            .keys
            .verify(token)
            .map_err(AuthError::Unauthenticated)?;
        let sub_ok = !claims.sub.is_empty()
            && identifier(&claims.sub, MAX_ACTOR).is_ok()
            && claims.sub.trim() == claims.sub;
        if !sub_ok {
            return Err(unauthenticated(
                "sub is empty, too long, or has control characters or edge spaces",
            ));
        }
        if let Some(accounts) = &claims.accounts
            && accounts
                .iter()
                .any(|a| a.is_empty() || identifier(a, MAX_IDENTIFIER).is_err())
        {
            return Err(unauthenticated("accounts holds an invalid account id"));
        }
        let leeway = Duration::from_secs(self.keys.leeway_seconds());
        let at = |seconds: u64| UNIX_EPOCH + Duration::from_secs(seconds);
        let caller = Caller {
            subject: claims.sub,
            roles: claims.roles.iter().filter_map(|r| Role::parse(r)).collect(),
            access: Access {
                accounts: claims.accounts,
            },
            valid_until: at(claims.exp) + leeway,
        };
        self.verified.insert(
            key,
            Verified {
                caller: caller.clone(),
                valid_from: claims
                    .nbf
                    .map(|nbf| at(nbf).checked_sub(leeway).unwrap_or(UNIX_EPOCH)),
            },
        );
        Ok(caller)
    }
}
