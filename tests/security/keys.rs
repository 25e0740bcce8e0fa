//! Tokens and keys (SPEC §8): HS256 secrets, RS256 and ES256 public keys
//! from PEM and JWKS; signature, expiry (with a small leeway), not-before,
//! issuer and audience checks; `alg: none`, algorithm confusion, malformed
//! and oversized tokens. Every refusal is UNAUTHENTICATED with one message
//! that does not say why, and no details.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use invoice_cases::{
    auth::{KeySet, KeySettings},
    pb,
};
use jsonwebtoken::{
    Algorithm, EncodingKey,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Value, json};
use tonic::{Code, Status, metadata::AsciiMetadataValue};

use crate::{
    helpers::{Bearer, Client, TestApp},
    support::{app_with_keys, claims, ec_key, hs256, now, rsa_keys, sign},
};

const SECRET: &[u8] = b"an-hs256-secret-of-the-security-tests-0123456789";

/// A client sending `authorization: <value>` verbatim (or nothing).
async fn client_sending(app: &TestApp, value: Option<&str>) -> Client {
    let Some(value) = value else {
        return app.client_with(None).await;
    };
    pb::invoice_case_service_client::InvoiceCaseServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(AsciiMetadataValue::try_from(value).expect("ascii metadata")),
    )
}

/// A read with `token`: Ok when the token is accepted.
async fn read_with(app: &TestApp, token: &str) -> Result<(), Status> {
    let mut client = app.client_with(Some(token)).await;
    client
        .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
        .await
        .map(drop)
}

/// The refusal of a call without any token: every other refusal must look
/// exactly like it.
async fn baseline(app: &TestApp) -> Status {
    let mut client = client_sending(app, None).await;
    let status = client
        .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.details().is_empty(),
        "no details on UNAUTHENTICATED: {status:?}"
    );
    status
}

/// Asserts that `token` is refused exactly like a missing token, on a read
/// and on a mutation.
async fn assert_refused(app: &TestApp, what: &str, token: &str) {
    let expected = baseline(app).await;
    let mut client = app.client_with(Some(token)).await;
    let read = client
        .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
        .await
        .map(drop);
    let create = client
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(crate::helpers::new_case("ACME", 1)),
            request_id: String::new(),
            comment: String::new(),
        })
        .await
        .map(drop);
    for result in [read, create] {
        let status = match result {
            Ok(()) => panic!("{what}: the token was accepted"),
            Err(status) => status,
        };
        assert_same_refusal(&expected, &status, what);
    }
}

fn assert_same_refusal(expected: &Status, status: &Status, what: &str) {
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(
        status.message(),
        expected.message(),
        "{what}: every refusal says the same"
    );
    assert!(
        status.details().is_empty(),
        "{what}: a refusal carries no details: {status:?}"
    );
}

/// Claims with `edit` applied.
fn claims_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = claims("token-tester", &["admin"]);
    edit(claims.as_object_mut().expect("an object"));
    claims
}

/// An unsigned token (`alg` as given, the signature as given).
fn unsigned(alg: &str, claims: &Value, signature: &str) -> String {
    let header = json!({"alg": alg, "typ": "JWT"});
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn hs256_tokens_are_checked_for_signature_and_time() {
    let app = app_with_keys(KeySet::hs256(SECRET, KeySettings::default())).await;
    let valid = claims("alice", &["viewer"]);
    read_with(&app, &hs256(SECRET, &valid))
        .await
        .expect("a valid HS256 token");

    // Within the default leeway of 30 s: still accepted.
    let recently_expired = claims_with(|c| {
        c.insert("exp".into(), json!(now() - 10));
    });
    read_with(&app, &hs256(SECRET, &recently_expired))
        .await
        .expect("expired 10 s ago is within the leeway");
    let soon_valid = claims_with(|c| {
        c.insert("nbf".into(), json!(now() + 10));
    });
    read_with(&app, &hs256(SECRET, &soon_valid))
        .await
        .expect("valid in 10 s is within the leeway");
    let already_valid = claims_with(|c| {
        c.insert("nbf".into(), json!(now() - 60));
    });
    read_with(&app, &hs256(SECRET, &already_valid))
        .await
        .expect("nbf in the past");

    let refused: Vec<(&str, String)> = vec![
        (
            "another secret",
            hs256(b"another-secret-of-the-same-length-0123456789abcd", &valid),
        ),
        (
            "expired beyond the leeway",
            hs256(
                SECRET,
                &claims_with(|c| {
                    c.insert("exp".into(), json!(now() - 120));
                }),
            ),
        ),
        (
            "expired long ago",
            hs256(
                SECRET,
                &claims_with(|c| {
                    c.insert("exp".into(), json!(1_000_000_000));
                }),
            ),
        ),
        (
            "not valid before a minute from now",
            hs256(
                SECRET,
                &claims_with(|c| {
                    c.insert("nbf".into(), json!(now() + 120));
                }),
            ),
        ),
        (
            "without exp",
            hs256(
                SECRET,
                &claims_with(|c| {
                    c.remove("exp");
                }),
            ),
        ),
        (
            "exp not a number",
            hs256(
                SECRET,
                &claims_with(|c| {
                    c.insert("exp".into(), json!("tomorrow"));
                }),
            ),
        ),
        (
            "without sub",
            hs256(
                SECRET,
                &claims_with(|c| {
                    c.remove("sub");
                }),
            ),
        ),
        (
            "empty sub",
            hs256(
                SECRET,
                &claims_with(|c| {
                    c.insert("sub".into(), json!(""));
                }),
            ),
        ),
        (
            "roles not a list",
            hs256(
                SECRET,
                &claims_with(|c| {
                    c.insert("roles".into(), json!("admin"));
                }),
            ),
        ),
        (
            "HS384 with the right secret",
            sign(
                Algorithm::HS384,
                None,
                &valid,
                &EncodingKey::from_secret(SECRET),
            ),
        ),
        (
            "HS512 with the right secret",
            sign(
                Algorithm::HS512,
                None,
                &valid,
                &EncodingKey::from_secret(SECRET),
            ),
        ),
        ("alg none", unsigned("none", &valid, "")),
        ("alg None", unsigned("None", &valid, "")),
        (
            "alg NONE with a signature",
            unsigned("NONE", &valid, "c2ln"),
        ),
        ("alg none with the HS256 signature", {
            let good = hs256(SECRET, &valid);
            let signature = good.rsplit('.').next().expect("three parts").to_owned();
            unsigned("none", &valid, &signature)
        }),
        ("signature stripped", {
            let good = hs256(SECRET, &valid);
            let (unsigned_part, _) = good.rsplit_once('.').expect("three parts");
            format!("{unsigned_part}.")
        }),
        ("claims tampered", {
            let good = hs256(SECRET, &valid);
            let parts: Vec<&str> = good.split('.').collect();
            let forged = claims_with(|c| {
                c.insert("sub".into(), json!("root"));
            });
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(forged.to_string()),
                parts[2]
            )
        }),
    ];
    for (what, token) in refused {
        assert_refused(&app, what, &token).await;
    }
}

#[tokio::test]
async fn malformed_and_oversized_tokens_are_refused_alike() {
    let app = app_with_keys(KeySet::hs256(SECRET, KeySettings::default())).await;
    let expected = baseline(&app).await;
    let valid = hs256(SECRET, &claims("alice", &["admin"]));

    // A long token below 8 KiB is still accepted (the limit is the limit).
    let long = hs256(
        SECRET,
        &claims_with(|c| {
            c.insert("pad".into(), json!("x".repeat(5_500)));
        }),
    );
    assert!(long.len() < 8 * 1024, "{}", long.len());
    read_with(&app, &long).await.expect("a long valid token");

    // Over 8 KiB: refused although correctly signed.
    let oversized = hs256(
        SECRET,
        &claims_with(|c| {
            c.insert("pad".into(), json!("x".repeat(7_000)));
        }),
    );
    assert!(oversized.len() > 8 * 1024, "{}", oversized.len());
    let values: Vec<(&str, String)> = vec![
        ("oversized", format!("Bearer {oversized}")),
        ("garbage", "Bearer garbage".into()),
        ("three dots", "Bearer ...".into()),
        ("two parts", "Bearer abc.def".into()),
        ("four parts", format!("Bearer {valid}.extra")),
        ("not base64", "Bearer !!!.@@@.###".into()),
        (
            "header not JSON",
            format!(
                "Bearer {}.{}.{}",
                URL_SAFE_NO_PAD.encode("not json"),
                URL_SAFE_NO_PAD.encode("{}"),
                "c2ln"
            ),
        ),
        ("empty bearer", "Bearer ".into()),
        ("scheme only", "Bearer".into()),
        ("basic scheme", format!("Basic {valid}")),
        ("no scheme", valid.clone()),
        ("token scheme", format!("Token {valid}")),
        ("two tokens", format!("Bearer {valid} {valid}")),
        ("empty", String::new()),
    ];
    for (what, value) in values {
        let mut client = client_sending(&app, Some(&value)).await;
        let status = client
            .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
            .await
            .expect_err(what);
        assert_same_refusal(&expected, &status, what);
        let status = client
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .expect_err(what);
        assert_same_refusal(&expected, &status, what);
    }

    // The scheme is case-insensitive (RFC 7235); the control of the above.
    let mut client = client_sending(&app, Some(&format!("bearer {valid}"))).await;
    client
        .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
        .await
        .expect("lower-case scheme");

    // A sub longer than 255 characters.
    let long_sub = hs256(
        SECRET,
        &claims_with(|c| {
            c.insert("sub".into(), json!("s".repeat(256)));
        }),
    );
    assert_refused(&app, "sub of 256 characters", &long_sub).await;
}

/// A JWKS document of `keys` (algorithm and kid each).
fn jwks(keys: &[(&EncodingKey, Algorithm, &str)]) -> Vec<u8> {
    let set = JwkSet {
        keys: keys
            .iter()
            .map(|(key, alg, kid)| {
                let mut jwk = Jwk::from_encoding_key(key, *alg).expect("a JWK");
                jwk.common.key_id = Some((*kid).to_owned());
                jwk
            })
            .collect(),
    };
    serde_json::to_vec(&set).expect("JSON")
}

#[tokio::test]
async fn rs256_and_es256_public_keys_from_pem_files() {
    let [rsa, other_rsa] = rsa_keys();
    let ec = ec_key();
    let other_ec = ec_key();
    let mut keys = KeySet::new(KeySettings::default());
    assert_eq!(
        keys.add_pem(rsa.public.as_bytes()),
        Ok(Algorithm::RS256),
        "an RSA public key"
    );
    assert_eq!(
        keys.add_pem(ec.public.as_bytes()),
        Ok(Algorithm::ES256),
        "a P-256 public key"
    );
    let app = app_with_keys(keys).await;
    let valid = claims("pem-user", &["viewer"]);

    read_with(
        &app,
        &sign(Algorithm::RS256, None, &valid, &rsa.rsa_encoding()),
    )
    .await
    .expect("an RS256 token of the configured key");
    read_with(
        &app,
        &sign(Algorithm::ES256, None, &valid, &ec.ec_encoding()),
    )
    .await
    .expect("an ES256 token of the configured key");

    let expired = claims_with(|c| {
        c.insert("exp".into(), json!(now() - 120));
    });
    let refused: Vec<(&str, String)> = vec![
        (
            "RS256 of another key",
            sign(Algorithm::RS256, None, &valid, &other_rsa.rsa_encoding()),
        ),
        (
            "ES256 of another key",
            sign(Algorithm::ES256, None, &valid, &other_ec.ec_encoding()),
        ),
        (
            "RS256 expired",
            sign(Algorithm::RS256, None, &expired, &rsa.rsa_encoding()),
        ),
        (
            "ES256 expired",
            sign(Algorithm::ES256, None, &expired, &ec.ec_encoding()),
        ),
        (
            "RS384 of the configured key",
            sign(Algorithm::RS384, None, &valid, &rsa.rsa_encoding()),
        ),
        (
            "PS256 of the configured key",
            sign(Algorithm::PS256, None, &valid, &rsa.rsa_encoding()),
        ),
        (
            "HS256 with no HMAC secret configured",
            hs256(SECRET, &valid),
        ),
        ("alg none", unsigned("none", &valid, "")),
    ];
    for (what, token) in refused {
        assert_refused(&app, what, &token).await;
    }
}

#[tokio::test]
async fn hmac_with_a_public_key_as_the_secret_is_refused() {
    // The server knows an HS256 secret and the RSA and EC public keys: a
    // token "signed" with a public key as the HMAC secret must not pass
    // (classic RS256 -> HS256 confusion).
    let [rsa, _] = rsa_keys();
    let ec = ec_key();
    let mut keys = KeySet::hs256(SECRET, KeySettings::default());
    keys.add_pem(rsa.public.as_bytes()).expect("RSA key");
    keys.add_pem(ec.public.as_bytes()).expect("EC key");
    let json = jwks(&[(&rsa.rsa_encoding(), Algorithm::RS256, "rsa-1")]);
    keys.add_jwks(&json).expect("JWKS");
    let app = app_with_keys(keys).await;
    let valid = claims("confused", &["admin"]);

    // The controls: every configured key works for its own algorithm.
    read_with(&app, &hs256(SECRET, &valid))
        .await
        .expect("HS256");
    read_with(
        &app,
        &sign(Algorithm::RS256, None, &valid, &rsa.rsa_encoding()),
    )
    .await
    .expect("RS256");

    let der_of = |pem: &str| -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("PEM body")
    };
    let public_secrets: Vec<(&str, Vec<u8>)> = vec![
        ("the RSA public key PEM", rsa.public.as_bytes().to_vec()),
        (
            "the RSA public key PEM without its final newline",
            rsa.public.trim_end().as_bytes().to_vec(),
        ),
        ("the RSA public key DER", der_of(&rsa.public)),
        ("the EC public key PEM", ec.public.as_bytes().to_vec()),
        ("the EC public key DER", der_of(&ec.public)),
    ];
    for (what, secret) in public_secrets {
        let key = EncodingKey::from_secret(&secret);
        for (alg, kid) in [
            (Algorithm::HS256, None),
            (Algorithm::HS256, Some("rsa-1")),
            (Algorithm::HS384, None),
            (Algorithm::HS512, None),
        ] {
            let token = sign(alg, kid, &valid, &key);
            assert_refused(&app, &format!("{alg:?} kid {kid:?} with {what}"), &token).await;
        }
    }
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid() {
    let [rsa, other_rsa] = rsa_keys();
    let ec = ec_key();
    let other_ec = ec_key();
    let json = jwks(&[
        (&rsa.rsa_encoding(), Algorithm::RS256, "rsa-1"),
        (&ec.ec_encoding(), Algorithm::ES256, "ec-1"),
    ]);
    let mut keys = KeySet::new(KeySettings::default());
    assert_eq!(keys.add_jwks(&json), Ok(2));
    let app = app_with_keys(keys).await;
    let valid = claims("jwks-user", &["viewer"]);

    for (what, token) in [
        (
            "RS256 with its kid",
            sign(Algorithm::RS256, Some("rsa-1"), &valid, &rsa.rsa_encoding()),
        ),
        (
            "ES256 with its kid",
            sign(Algorithm::ES256, Some("ec-1"), &valid, &ec.ec_encoding()),
        ),
        (
            "RS256 without a kid",
            sign(Algorithm::RS256, None, &valid, &rsa.rsa_encoding()),
        ),
    ] {
        if let Err(status) = read_with(&app, &token).await {
            panic!("{what}: {status:?}");
        }
    }

    let refused: Vec<(&str, String)> = vec![
        (
            "an unknown kid",
            sign(Algorithm::RS256, Some("rsa-2"), &valid, &rsa.rsa_encoding()),
        ),
        (
            "the kid of the EC key on an RS256 token",
            sign(Algorithm::RS256, Some("ec-1"), &valid, &rsa.rsa_encoding()),
        ),
        (
            "another RSA key under the known kid",
            sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &valid,
                &other_rsa.rsa_encoding(),
            ),
        ),
        (
            "another EC key under the known kid",
            sign(
                Algorithm::ES256,
                Some("ec-1"),
                &valid,
                &other_ec.ec_encoding(),
            ),
        ),
        (
            "another RSA key without a kid",
            sign(Algorithm::RS256, None, &valid, &other_rsa.rsa_encoding()),
        ),
        (
            "expired, with its kid",
            sign(
                Algorithm::ES256,
                Some("ec-1"),
                &claims_with(|c| {
                    c.insert("exp".into(), json!(now() - 3600));
                }),
                &ec.ec_encoding(),
            ),
        ),
        (
            "HS256 with the RSA key's kid and its public PEM as the secret",
            sign(
                Algorithm::HS256,
                Some("rsa-1"),
                &valid,
                &EncodingKey::from_secret(rsa.public.as_bytes()),
            ),
        ),
    ];
    for (what, token) in refused {
        assert_refused(&app, what, &token).await;
    }

    // A JWKS of an algorithm the service does not take is refused whole.
    let hmac = jwks(&[(&EncodingKey::from_secret(SECRET), Algorithm::HS256, "oct")]);
    assert!(KeySet::new(KeySettings::default()).add_jwks(&hmac).is_err());
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let [rsa, _] = rsa_keys();
    let settings = KeySettings {
        issuer: Some("https://issuer.example".into()),
        audience: Some("invoice-cases".into()),
        ..KeySettings::default()
    };
    let mut keys = KeySet::hs256(SECRET, settings);
    keys.add_pem(rsa.public.as_bytes()).expect("RSA key");
    let app = app_with_keys(keys).await;
    let with = |iss: Option<&str>, aud: Option<&str>| {
        claims_with(|c| {
            if let Some(iss) = iss {
                c.insert("iss".into(), json!(iss));
            }
            if let Some(aud) = aud {
                c.insert("aud".into(), json!(aud));
            }
        })
    };
    let good = with(Some("https://issuer.example"), Some("invoice-cases"));
    read_with(&app, &hs256(SECRET, &good))
        .await
        .expect("HS256 with the right iss and aud");
    read_with(
        &app,
        &sign(Algorithm::RS256, None, &good, &rsa.rsa_encoding()),
    )
    .await
    .expect("RS256 with the right iss and aud");

    let cases = [
        (
            "wrong issuer",
            with(Some("https://evil.example"), Some("invoice-cases")),
        ),
        (
            "issuer with a trailing slash",
            with(Some("https://issuer.example/"), Some("invoice-cases")),
        ),
        ("no issuer", with(None, Some("invoice-cases"))),
        (
            "wrong audience",
            with(Some("https://issuer.example"), Some("billing")),
        ),
        ("no audience", with(Some("https://issuer.example"), None)),
        (
            "audience of another case",
            with(Some("https://issuer.example"), Some("Invoice-Cases")),
        ),
        ("neither", with(None, None)),
    ];
    for (what, claims) in &cases {
        assert_refused(&app, &format!("HS256 {what}"), &hs256(SECRET, claims)).await;
        assert_refused(
            &app,
            &format!("RS256 {what}"),
            &sign(Algorithm::RS256, None, claims, &rsa.rsa_encoding()),
        )
        .await;
    }
}
