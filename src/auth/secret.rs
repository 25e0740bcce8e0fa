//! The HS256 signing secret: the embedded default's, or one read from a
//! file; and minting tokens for local use.

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
use secrecy::{ExposeSecret, SecretString};

use super::Claims;

/// Shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secret in `<data_dir>/jwt-secret`, created (random, mode 0600) when
/// missing.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<SecretString> {
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
    let secret = SecretString::from(
        fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim(),
    );
    check_secret(&path.display().to_string(), &secret)?;
    Ok(secret)
}

/// The secret in `path`, the file `setting` names (errors name the
/// setting, never the content). One trailing newline (`\n` or `\r\n`) is
/// not part of it: editors and `echo` add one.
pub fn read_secret_file(setting: &str, path: &Path) -> anyhow::Result<SecretString> {
    let mut text = fs::read_to_string(path)
        .map(SecretString::from)
        .with_context(|| format!("{setting}: cannot read the JWT secret"))?;
    let content = text.expose_secret();
    let trimmed = content
        .strip_suffix('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .unwrap_or(content);
    if trimmed.len() != content.len() {
        text = SecretString::from(trimmed);
    }
    check_secret(setting, &text)?;
    Ok(text)
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

/// Refuses secrets too short to resist guessing; the error names
/// `setting`, where the secret came from.
pub fn check_secret(setting: &str, secret: &SecretString) -> anyhow::Result<()> {
    if secret.expose_secret().len() < MIN_SECRET_BYTES {
        anyhow::bail!("{setting}: the JWT secret must be at least {MIN_SECRET_BYTES} bytes long");
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
