//! The HS256 signing secret of the embedded default, and minting tokens
//! for local use.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rand::RngCore;

use super::Claims;

/// Shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secret in `<data_dir>/jwt-secret`, created (random, mode 0600) when
/// missing.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("jwt-secret");
    if !path.exists() {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        create_secret_file(&path, &hex)?;
    }
    let mode = fs::metadata(&path)?.permissions().mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by other users (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        );
    }
    let secret = fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned();
    check_secret(&secret)?;
    Ok(secret)
}

/// Creates `path` (mode 0600) holding `content`, unless it exists: then
/// the existing file wins. Readers never see a partly written file: the
/// content is written to a temporary file first and linked into place.
pub fn create_secret_file(path: &Path, content: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("a secret file needs a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let temporary = dir.join(format!(
        ".{}.{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        std::process::id()
    ));
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("cannot create {}", temporary.display()))?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
    }
    let linked = fs::hard_link(&temporary, path);
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(()),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Refuses secrets too short to resist guessing.
pub fn check_secret(secret: &str) -> anyhow::Result<()> {
    if secret.len() < MIN_SECRET_BYTES {
        anyhow::bail!("the JWT secret must be at least {MIN_SECRET_BYTES} bytes long");
    }
    Ok(())
}

/// Signs an HS256 token for `sub` with `roles`, limited to `accounts` when
/// given, valid for `ttl_seconds`.
pub fn mint_token(
    secret: &str,
    sub: &str,
    roles: &[String],
    accounts: Option<Vec<String>>,
    ttl_seconds: u64,
    issuer: Option<String>,
    audience: Option<String>,
) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: sub.to_owned(),
        roles: roles.to_vec(),
        accounts,
        exp: now + ttl_seconds,
        iat: Some(now),
        nbf: None,
        iss: issuer,
        aud: audience.map(super::Audience::One),
    };
    Ok(encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
