//! Shared pieces of the security tests: signed tokens and keys,
//! certificates, the table of every RPC, a raw bytes codec, and checks of
//! what a refusal may say.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use invoice_cases::{
    auth::KeySet,
    pb::{
        self,
        invoice_case::State as CaseState,
        watch_state_changes_request::{FromBeginning, Start},
    },
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use prost::bytes::{Buf, BufMut, Bytes};
use serde_json::{Value, json};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::helpers::{
    Client, TestApp, assign, cancel, close, cluster, create, info_received, ok, propose_all,
    request_info, set_line, settings, spawn_app_with, submit,
};

// ---- time and tokens ----------------------------------------------------

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The claims of a valid token of `sub` with `roles`, valid for an hour.
pub fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({
        "sub": sub,
        "roles": roles,
        "iat": now(),
        "exp": now() + 3600,
    })
}

/// Signs `claims` with `alg` and `key`, naming `kid` when given.
pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).expect("sign a token")
}

/// An HS256 token signed with `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// A private key (PKCS#8 PEM) and its public key (SPKI PEM).
pub struct KeyPem {
    pub private: String,
    pub public: String,
}

impl KeyPem {
    /// The key for signing RS256 tokens.
    pub fn rsa_encoding(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(self.private.as_bytes()).expect("an RSA private key")
    }

    /// The key for signing ES256 tokens.
    pub fn ec_encoding(&self) -> EncodingKey {
        EncodingKey::from_ec_pem(self.private.as_bytes()).expect("an EC private key")
    }
}

/// Two RSA key pairs (2048 bits), generated once per test process: ring
/// (rcgen's backend) cannot generate RSA keys, the `rsa` crate can.
pub fn rsa_keys() -> &'static [KeyPem; 2] {
    static KEYS: OnceLock<[KeyPem; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let generate = || {
            std::thread::spawn(|| {
                use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
                let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                    .expect("generate an RSA key");
                KeyPem {
                    private: private
                        .to_pkcs8_pem(LineEnding::LF)
                        .expect("PKCS#8 PEM")
                        .to_string(),
                    public: private
                        .to_public_key()
                        .to_public_key_pem(LineEnding::LF)
                        .expect("SPKI PEM"),
                }
            })
        };
        let (a, b) = (generate(), generate());
        [a.join().expect("RSA key"), b.join().expect("RSA key")]
    })
}

/// A fresh P-256 key pair (ring generates these).
pub fn ec_key() -> KeyPem {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate a P-256 key");
    KeyPem {
        private: key.serialize_pem(),
        public: key.public_key_pem(),
    }
}

/// The server on a fresh database, accepting tokens of `keys`.
pub async fn app_with_keys(keys: KeySet) -> TestApp {
    let database = cluster().new_database();
    let mut settings = settings(&database, "not-used-by-these-tests");
    settings.keys = keys;
    spawn_app_with(settings, "not-used-by-these-tests".into())
        .await
        .owning(database)
}

// ---- what a refusal may say ---------------------------------------------

/// Words that would show that internals leaked into a client's message.
pub const LEAKS: [&str; 12] = [
    "select",
    "insert",
    "update",
    "delete",
    "relation",
    "column",
    "constraint",
    "syntax",
    "panicked",
    "src/",
    ".rs:",
    "stack backtrace",
];

/// Whether `text` holds one of [`LEAKS`] (case-insensitive).
pub fn leak_in(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    LEAKS.into_iter().find(|word| lower.contains(word))
}

// ---- cases in a state ---------------------------------------------------

/// A case of `account` with two lines driven to `state` by `admin`.
pub async fn case_in(admin: &mut Client, account: &str, state: CaseState) -> pb::InvoiceCase {
    let case = create(admin, account, 2).await;
    let id = case.id.clone();
    match state {
        CaseState::Draft => return case,
        CaseState::Canceled => return ok(admin.cancel_case(cancel(&id)).await),
        _ => {}
    }
    let case = ok(admin.submit_case(submit(&id)).await);
    if state == CaseState::New {
        return case;
    }
    let case = ok(admin.assign_to_me(assign(&id)).await);
    match state {
        CaseState::WorkInProgress => case,
        CaseState::AwaitingInfo => ok(admin.request_information(request_info(&id)).await),
        CaseState::Resolved => ok(admin.propose_solution(propose_all(&id)).await),
        CaseState::Closed => {
            ok(admin.propose_solution(propose_all(&id)).await);
            ok(admin.close_case(close(&id)).await)
        }
        other => panic!("no fixture for {other:?}"),
    }
}

/// Every event of a case (as an unrestricted admin sees it).
pub async fn event_count(admin: &mut Client, case_id: &str) -> usize {
    crate::helpers::history(admin, case_id).await.len()
}

// ---- every RPC ----------------------------------------------------------

/// The RPCs of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    Create,
    Get,
    List,
    AddLine,
    RemoveLine,
    Submit,
    AssignToMe,
    AssignCase,
    RequestInformation,
    InformationReceived,
    ProposeSolution,
    Close,
    Cancel,
    SetLineState,
    ListStateChanges,
    Watch,
    UpdateCase,
    UpdateLine,
    WatchSubscription,
    AcknowledgeStateChanges,
    ListSubscriptions,
    DeleteSubscription,
}

/// What a call names: a case, one of its lines, and an account.
#[derive(Debug, Clone)]
pub struct Target {
    pub case_id: String,
    pub line_id: String,
    pub account: String,
}

impl Target {
    /// The case and its first line, named by UUID.
    pub fn of(case: &pb::InvoiceCase) -> Target {
        Target {
            case_id: case.id.clone(),
            line_id: case.lines.first().map(|l| l.id.clone()).unwrap_or_default(),
            account: case.account_id.clone(),
        }
    }

    /// The case and its first line, named by number.
    pub fn by_number(case: &pb::InvoiceCase) -> Target {
        Target {
            case_id: case.number.clone(),
            line_id: case
                .lines
                .first()
                .map(|l| l.number.clone())
                .unwrap_or_default(),
            account: case.account_id.clone(),
        }
    }
}

impl Rpc {
    /// Every one.
    pub const ALL: [Rpc; 22] = [
        Rpc::Create,
        Rpc::Get,
        Rpc::List,
        Rpc::AddLine,
        Rpc::RemoveLine,
        Rpc::Submit,
        Rpc::AssignToMe,
        Rpc::AssignCase,
        Rpc::RequestInformation,
        Rpc::InformationReceived,
        Rpc::ProposeSolution,
        Rpc::Close,
        Rpc::Cancel,
        Rpc::SetLineState,
        Rpc::ListStateChanges,
        Rpc::Watch,
        Rpc::UpdateCase,
        Rpc::UpdateLine,
        Rpc::WatchSubscription,
        Rpc::AcknowledgeStateChanges,
        Rpc::ListSubscriptions,
        Rpc::DeleteSubscription,
    ];

    /// The method name of the service.
    pub fn method(self) -> &'static str {
        match self {
            Rpc::Create => "CreateInvoiceCase",
            Rpc::Get => "GetInvoiceCase",
            Rpc::List => "ListInvoiceCases",
            Rpc::AddLine => "AddCaseLine",
            Rpc::RemoveLine => "RemoveCaseLine",
            Rpc::Submit => "SubmitCase",
            Rpc::AssignToMe => "AssignToMe",
            Rpc::AssignCase => "AssignCase",
            Rpc::RequestInformation => "RequestInformation",
            Rpc::InformationReceived => "InformationReceived",
            Rpc::ProposeSolution => "ProposeSolution",
            Rpc::Close => "CloseCase",
            Rpc::Cancel => "CancelCase",
            Rpc::SetLineState => "SetLineState",
            Rpc::ListStateChanges => "ListStateChanges",
            Rpc::Watch => "WatchStateChanges",
            Rpc::UpdateCase => "UpdateInvoiceCase",
            Rpc::UpdateLine => "UpdateCaseLine",
            Rpc::WatchSubscription => "WatchStateChanges (subscription)",
            Rpc::AcknowledgeStateChanges => "AcknowledgeStateChanges",
            Rpc::ListSubscriptions => "ListSubscriptions",
            Rpc::DeleteSubscription => "DeleteSubscription",
        }
    }

    /// Whether it changes a case that exists.
    pub fn mutates_a_case(self) -> bool {
        !matches!(
            self,
            Rpc::Create
                | Rpc::Get
                | Rpc::List
                | Rpc::ListStateChanges
                | Rpc::Watch
                | Rpc::WatchSubscription
                | Rpc::AcknowledgeStateChanges
                | Rpc::ListSubscriptions
                | Rpc::DeleteSubscription
        )
    }

    /// The state a case must be in for the call to succeed.
    pub fn needs(self) -> CaseState {
        match self {
            Rpc::AssignToMe | Rpc::AssignCase => CaseState::New,
            Rpc::RequestInformation | Rpc::ProposeSolution | Rpc::SetLineState => {
                CaseState::WorkInProgress
            }
            Rpc::InformationReceived => CaseState::AwaitingInfo,
            Rpc::Close => CaseState::Resolved,
            _ => CaseState::Draft,
        }
    }

    /// Makes the call on `target` with a request that succeeds when the
    /// case is in [`Rpc::needs`] and the caller may make it. Create creates
    /// a case of the target's account; Watch opens a stream of the case
    /// (from the beginning) and drops it.
    pub async fn call(self, client: &mut Client, target: &Target) -> Result<(), Status> {
        let id = target.case_id.as_str();
        match self {
            Rpc::Create => client
                .create_invoice_case(pb::CreateInvoiceCaseRequest {
                    invoice_case: Some(crate::helpers::new_case(&target.account, 1)),
                    request_id: String::new(),
                    comment: String::new(),
                })
                .await
                .map(drop),
            Rpc::Get => client
                .get_invoice_case(pb::GetInvoiceCaseRequest {
                    case_id: id.to_owned(),
                })
                .await
                .map(drop),
            Rpc::List => client
                .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
                .await
                .map(drop),
            Rpc::AddLine => client
                .add_case_line(pb::AddCaseLineRequest {
                    case_id: id.to_owned(),
                    line: Some(crate::helpers::line("added line")),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::RemoveLine => client
                .remove_case_line(pb::RemoveCaseLineRequest {
                    case_id: id.to_owned(),
                    line_id: target.line_id.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Submit => client.submit_case(submit(id)).await.map(drop),
            Rpc::AssignToMe => client.assign_to_me(assign(id)).await.map(drop),
            Rpc::AssignCase => client
                .assign_case(pb::AssignCaseRequest {
                    case_id: id.to_owned(),
                    assignee: "agent-7".into(),
                    assignment_group: "billing".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::RequestInformation => client.request_information(request_info(id)).await.map(drop),
            Rpc::InformationReceived => client
                .information_received(info_received(id))
                .await
                .map(drop),
            Rpc::ProposeSolution => client.propose_solution(propose_all(id)).await.map(drop),
            Rpc::Close => client.close_case(close(id)).await.map(drop),
            Rpc::Cancel => client.cancel_case(cancel(id)).await.map(drop),
            Rpc::SetLineState => client
                .set_line_state(set_line(
                    id,
                    &target.line_id,
                    pb::case_line::State::AwaitingInfo,
                ))
                .await
                .map(drop),
            Rpc::ListStateChanges => client
                .list_state_changes(pb::ListStateChangesRequest {
                    case_id: id.to_owned(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Watch => client
                .watch_state_changes(pb::WatchStateChangesRequest {
                    case_id: id.to_owned(),
                    account_id: String::new(),
                    start: Some(Start::FromBeginning(FromBeginning {})),
                    subscription: String::new(),
                })
                .await
                .map(drop),
            Rpc::UpdateCase => client
                .update_invoice_case(pb::UpdateInvoiceCaseRequest {
                    case_id: id.to_owned(),
                    invoice_case: Some(pb::InvoiceCase {
                        priority: pb::invoice_case::Priority::High.into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["priority".into()],
                    }),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::UpdateLine => client
                .update_case_line(pb::UpdateCaseLineRequest {
                    case_id: id.to_owned(),
                    line_id: target.line_id.clone(),
                    line: Some(pb::CaseLine {
                        disputed_amount: "30.00".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["disputed_amount".into()],
                    }),
                    ..Default::default()
                })
                .await
                .map(drop),
            // A durable subscription of the caller's own, created by the
            // watch (and, to acknowledge or delete it, left there).
            Rpc::WatchSubscription => subscribe(client, id).await.map(drop),
            Rpc::AcknowledgeStateChanges => {
                let (name, cursor) = subscribe(client, id).await?;
                client
                    .acknowledge_state_changes(pb::AcknowledgeStateChangesRequest {
                        subscription: name,
                        cursor,
                    })
                    .await
                    .map(drop)
            }
            Rpc::ListSubscriptions => client
                .list_subscriptions(pb::ListSubscriptionsRequest::default())
                .await
                .map(drop),
            Rpc::DeleteSubscription => {
                // Named whether or not the caller could create it.
                let name = match subscribe(client, id).await {
                    Ok((name, _)) => name,
                    Err(_) => "never-created".to_owned(),
                };
                client
                    .delete_subscription(pb::DeleteSubscriptionRequest { name })
                    .await
                    .map(drop)
            }
        }
    }
}

/// Creates a durable subscription of `case_id` from the beginning with a
/// watch by `client`; returns its name and the cursor of the first event
/// it delivered.
async fn subscribe(client: &mut Client, case_id: &str) -> Result<(String, String), Status> {
    let name = format!("roles-{}", uuid::Uuid::new_v4().simple());
    let mut stream = client
        .watch_state_changes(pb::WatchStateChangesRequest {
            case_id: case_id.to_owned(),
            account_id: String::new(),
            start: Some(Start::FromBeginning(FromBeginning {})),
            subscription: name.clone(),
        })
        .await?
        .into_inner();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no event within 10 s"))??
            .ok_or_else(|| Status::unknown("the stream ended"))?;
        if let Some(pb::watch_state_changes_response::Kind::Event(event)) = message.kind {
            return Ok((name, event.cursor));
        }
    }
}

// ---- a codec of raw bytes -----------------------------------------------

/// Sends and receives message bodies as they are, so that a test can send
/// bytes that are not a valid message.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// Calls the unary `method` of the service with `body` as the request
/// message, on `channel`, as `token`.
pub async fn raw_unary(
    channel: tonic::transport::Channel,
    method: &str,
    token: &str,
    body: Vec<u8>,
) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path =
        http::uri::PathAndQuery::try_from(format!("/invoicecase.v1.InvoiceCaseService/{method}"))
            .expect("a path");
    let mut request = tonic::Request::new(Bytes::from(body));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// Whether the service still answers, within a few seconds: a read by
/// `client` succeeds.
pub async fn assert_healthy(client: &mut Client, case_id: &str) {
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_invoice_case(pb::GetInvoiceCaseRequest {
            case_id: case_id.to_owned(),
        }),
    )
    .await
    .expect("the server answers within 10 s");
    answer.expect("the server still serves a plain read");
}
