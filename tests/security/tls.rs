//! TLS and mutual TLS (SPEC §8), with certificates made by the test: a CA,
//! a server certificate for localhost and 127.0.0.1 signed by it, a client
//! certificate signed by it, and a client certificate of another CA.

use std::time::Duration;

use invoice_cases::{
    pb::{self, invoice_case_service_client::InvoiceCaseServiceClient},
    server::TlsSettings,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::{
    Code,
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
};
use uuid::Uuid;

use crate::helpers::{Bearer, TestApp, cluster, settings, spawn_app_with};

/// PEM material of the tests.
pub struct Pki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
    pub other_ca_cert: String,
    pub other_client_cert: String,
    pub other_client_key: String,
}

/// A CA that signs certificates.
fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// A leaf certificate signed by `ca`: (certificate PEM, key PEM).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>(),
    )
    .expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &**ca).expect("sign a leaf");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let ca = certificate_authority("invoice-cases test CA");
        let (server_cert, server_key) = leaf(
            &ca,
            &["localhost", "127.0.0.1"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &ca,
            &[],
            "trusted client",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let other_ca = certificate_authority("another CA");
        let (other_client_cert, other_client_key) = leaf(
            &other_ca,
            &[],
            "untrusted client",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca_cert: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
            other_ca_cert: other_ca.pem(),
            other_client_cert,
            other_client_key,
        }
    }
}

/// The server with TLS; client certificates required when `mutual`.
async fn tls_app(pki: &Pki, mutual: bool) -> TestApp {
    let database = cluster().new_database();
    let secret = format!("tls-secret-{}", Uuid::new_v4().simple());
    let mut settings = settings(&database, &secret);
    settings.tls = Some(TlsSettings {
        certificate_chain: pki.server_cert.clone().into_bytes(),
        private_key: pki.server_key.clone().into_bytes().into(),
        client_ca: mutual.then(|| pki.ca_cert.clone().into_bytes()),
    });
    spawn_app_with(settings, secret).await.owning(database)
}

/// How a client connects.
#[derive(Clone, Copy)]
struct Connect<'a> {
    scheme: &'a str,
    /// The CA the client trusts (TLS only).
    trust: Option<&'a str>,
    /// The name the client expects in the server certificate.
    domain: &'a str,
    /// The client certificate and key.
    identity: Option<(&'a str, &'a str)>,
    token: Option<&'a str>,
}

impl Connect<'_> {
    /// Connects and lists cases; Err says how it failed. Bounded in time:
    /// a refused client must fail, not hang.
    async fn list(&self, app: &TestApp) -> Result<(), String> {
        let attempt = async {
            let mut endpoint =
                Endpoint::from_shared(format!("{}://127.0.0.1:{}", self.scheme, app.addr.port()))
                    .map_err(|e| format!("endpoint: {e}"))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(10));
            if let Some(ca) = self.trust {
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(self.domain);
                if let Some((cert, key)) = self.identity {
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| format!("tls config: {e}"))?;
            }
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            // With no token the call goes out without authorization.
            let mut client =
                InvoiceCaseServiceClient::with_interceptor(channel, Bearer::token(self.token));
            client
                .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
                .await
                .map(drop)
                .map_err(|status| format!("call: {status:?}"))
        };
        tokio::time::timeout(Duration::from_secs(20), attempt)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }
}

#[tokio::test]
async fn tls_clients_are_served_and_plaintext_clients_are_not() {
    let pki = Pki::new();
    let app = tls_app(&pki, false).await;
    let token = app.token("tls-user", &["viewer"], None);
    let tls = Connect {
        scheme: "https",
        trust: Some(&pki.ca_cert),
        domain: "localhost",
        identity: None,
        token: Some(&token),
    };
    tls.list(&app).await.expect("a TLS client is served");

    // With a client certificate as well (not required here): still served.
    Connect {
        identity: Some((&pki.client_cert, &pki.client_key)),
        ..tls
    }
    .list(&app)
    .await
    .expect("a TLS client with a certificate is served");

    // A plaintext client is not.
    let plain = Connect {
        scheme: "http",
        trust: None,
        domain: "localhost",
        identity: None,
        token: Some(&token),
    }
    .list(&app)
    .await;
    assert!(plain.is_err(), "a plaintext client was served");

    // A client that does not trust the server's CA, or expects another
    // name, does not talk to it.
    let untrusting = Connect {
        scheme: "https",
        trust: Some(&pki.other_ca_cert),
        domain: "localhost",
        identity: None,
        token: Some(&token),
    }
    .list(&app)
    .await;
    assert!(untrusting.is_err(), "the server's CA was not checked");
    let wrong_name = Connect {
        scheme: "https",
        trust: Some(&pki.ca_cert),
        domain: "billing.example",
        identity: None,
        token: Some(&token),
    }
    .list(&app)
    .await;
    assert!(wrong_name.is_err(), "the server's name was not checked");

    // TLS does not replace the token.
    let anonymous = Connect {
        scheme: "https",
        trust: Some(&pki.ca_cert),
        domain: "localhost",
        identity: None,
        token: None,
    }
    .list(&app)
    .await
    .expect_err("a TLS client without a token");
    assert!(
        anonymous.contains(&format!("{:?}", Code::Unauthenticated)),
        "{anonymous}"
    );
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_of_the_configured_ca() {
    let pki = Pki::new();
    let app = tls_app(&pki, true).await;
    let token = app.token("mtls-user", &["viewer"], None);
    let trusted = Connect {
        scheme: "https",
        trust: Some(&pki.ca_cert),
        domain: "localhost",
        identity: Some((&pki.client_cert, &pki.client_key)),
        token: Some(&token),
    };
    trusted
        .list(&app)
        .await
        .expect("a client with a certificate of the CA is served");

    let without = Connect {
        identity: None,
        ..trusted
    }
    .list(&app)
    .await;
    assert!(
        without.is_err(),
        "a client without a certificate was served under mutual TLS"
    );

    let foreign = Connect {
        identity: Some((&pki.other_client_cert, &pki.other_client_key)),
        ..trusted
    }
    .list(&app)
    .await;
    assert!(
        foreign.is_err(),
        "a client with a certificate of another CA was served under mutual TLS"
    );

    let plain = Connect {
        scheme: "http",
        trust: None,
        domain: "localhost",
        identity: None,
        token: Some(&token),
    }
    .list(&app)
    .await;
    assert!(plain.is_err(), "a plaintext client was served");

    // The server still serves the trusted client afterwards.
    Connect {
        scheme: "https",
        trust: Some(&pki.ca_cert),
        domain: "localhost",
        identity: Some((&pki.client_cert, &pki.client_key)),
        token: Some(&token),
    }
    .list(&app)
    .await
    .expect("the trusted client is still served");
}
