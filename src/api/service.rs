//! The `InvoiceCaseService` handlers. Every handler has one shape:
//! authorise → convert and validate → one store call → convert back.

use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{
    EncodedStream, WatchStream, filter, paging, requests, requests::Violations, status,
    subscriptions,
};
use crate::{
    auth::{AuthError, Authenticator, Caller, Permission},
    convert,
    domain::Command,
    domain::values::{MAX_ACTOR, MAX_IDENTIFIER, identifier, optional_text, required_text},
    pb::{self, invoice_case_service_server::InvoiceCaseService},
    store::{self, CaseKey, Idempotency, MutationMeta, Store, StoredResponse},
    telemetry,
    watch::{WatchHub, WatchSpec, WatchStart},
};

/// The gRPC service.
#[derive(Clone)]
pub struct InvoiceCaseApi {
    pub(super) store: Store,
    auth: Authenticator,
    pub(super) watch: WatchHub,
}

impl InvoiceCaseApi {
    pub fn new(store: Store, auth: Authenticator, watch: WatchHub) -> Self {
        InvoiceCaseApi { store, auth, watch }
    }

    /// WatchStateChanges: its stream of encoded messages.
    pub async fn watch(
        &self,
        request: Request<pb::WatchStateChangesRequest>,
    ) -> Result<Response<EncodedStream>, Status> {
        use futures::StreamExt;
        use pb::watch_state_changes_request::Start;

        let caller = self.authorize(&request, Permission::Read)?;
        let request = request.into_inner();
        // A field that fails its check is a violation, and `finish` then
        // refuses the request whatever the spec holds.
        let mut v = Violations::default();
        let subscription = (!request.subscription.is_empty())
            .then(|| v.check("subscription", subscriptions::name(&request.subscription)))
            .flatten();
        let given = subscriptions::fixed_fields(&request);
        let case = (!request.case_id.is_empty())
            .then(|| v.check("case_id", requests::case_key(&request.case_id)))
            .flatten();
        if let Some(key) = &case {
            // Named in the log only when it is one: never an unbounded echo.
            telemetry::record_case(&key.to_string());
        }
        let account_id = (!request.account_id.is_empty())
            .then(|| {
                v.check(
                    "account_id",
                    identifier(&request.account_id, MAX_IDENTIFIER),
                )
            })
            .flatten();
        let start = match request.start {
            None | Some(Start::FromNow(_)) => WatchStart::Now,
            Some(Start::FromBeginning(_)) => WatchStart::FromBeginning,
            Some(Start::WithSnapshot(_)) => WatchStart::WithSnapshot,
            Some(Start::AfterCursor(cursor)) => WatchStart::AfterCursor(cursor),
        };
        let spec = v
            .finish(Some(WatchSpec {
                case,
                account_id,
                start,
            }))
            .map_err(status::invalid_argument)?;
        if let Some(name) = subscription {
            return self.watch_subscription(caller, name, spec, given).await;
        }
        let case_id = request.case_id;
        let stream = self
            .watch
            .subscribe(&caller.access, caller.valid_until, spec)
            .await
            .map_err(|e| status::watch(e, &case_id))?;
        Ok(Response::new(Box::pin(
            stream.map(|item| item.map_err(|e| status::watch(e, ""))),
        )))
    }

    /// The caller the authentication layer found (or, when the service
    /// runs without it, the one its token names), if it may do
    /// `permission`.
    pub(super) fn authorize<T>(
        &self,
        request: &Request<T>,
        permission: Permission,
    ) -> Result<Caller, Status> {
        let caller = match request.extensions().get::<Caller>() {
            Some(caller) => caller.clone(),
            None => self
                .auth
                .authenticate(request.metadata())
                .map_err(status::auth)?,
        };
        telemetry::record_actor(&caller.subject);
        caller.may(permission).map_err(status::auth)
    }

    /// The shape every mutation on an existing case shares: authorise,
    /// convert the request into a store request, run it in one
    /// transaction, return the case.
    pub(super) async fn mutate<R>(
        &self,
        request: Request<R>,
        method: &'static str,
        permission: Permission,
        build: impl FnOnce(&R, &mut Violations) -> Option<store::Request>,
    ) -> Result<Response<pb::InvoiceCase>, Status>
    where
        R: Mutation,
    {
        let caller = self.authorize(&request, permission)?;
        let deadline = client_deadline(request.metadata());
        let request = request.into_inner();
        let mut v = Violations::default();
        let key = v.check("case_id", requests::case_key(request.case_id()));
        let meta = envelope_of(&mut v, &caller, method, &request, deadline);
        let store_request = build(&request, &mut v);
        let (key, meta, store_request) = v
            .finish((|| Some((key?, meta?, store_request?)))())
            .map_err(status::invalid_argument)?;
        let answer = self
            .store
            .act(&key, &caller.access, store_request, &meta)
            .await
            .map_err(|e| failed_on_case(e, request.case_id()))?;
        answered(answer)
    }
}

/// The response to a mutation: the case after it, or the stored response
/// of the first call with its request id, as it was sent.
fn answered(answer: store::Answer) -> Result<Response<pb::InvoiceCase>, Status> {
    let case = match answer {
        store::Answer::Written(case) | store::Answer::Unchanged(case) => {
            convert::invoice_case(case)
        }
        store::Answer::Replayed(StoredResponse::Case(case)) => convert::invoice_case(*case),
        store::Answer::Replayed(StoredResponse::Encoded(bytes)) => {
            pb::InvoiceCase::decode(bytes.as_slice())
                .map_err(|e| status::internal(&format!("a stored response: {e}")))?
        }
    };
    committed(&case.number);
    Ok(Response::new(case))
}

/// How a mutation's response is stored for its request id: the message's
/// bytes.
fn encode_response(case: &crate::domain::Case) -> Vec<u8> {
    convert::invoice_case(case.clone()).encode_to_vec()
}

/// The status of a failed call on a case; the log line names the case as
/// the request did.
fn failed_on_case(error: store::StoreError, case: &str) -> Status {
    telemetry::record_case(case);
    status::store(error, case)
}

/// Logs a committed action (the store counts it in
/// `invoice_cases_transitions_total`, unless it was a replay).
fn committed(case: &str) {
    telemetry::record_case(case);
}

/// The fields every mutating request carries.
pub trait Mutation: Message {
    fn case_id(&self) -> &str;
    fn etag(&self) -> &str;
    fn request_id(&self) -> &str;
    fn comment(&self) -> &str;
}

macro_rules! mutation {
    ($($ty:ty),+ $(,)?) => {$(
        impl Mutation for $ty {
            fn case_id(&self) -> &str { &self.case_id }
            fn etag(&self) -> &str { &self.etag }
            fn request_id(&self) -> &str { &self.request_id }
            fn comment(&self) -> &str { &self.comment }
        }
    )+};
}

mutation!(
    pb::AddCaseLineRequest,
    pb::RemoveCaseLineRequest,
    pb::SubmitCaseRequest,
    pb::AssignToMeRequest,
    pb::AssignCaseRequest,
    pb::RequestInformationRequest,
    pb::InformationReceivedRequest,
    pb::CloseCaseRequest,
    pb::CancelCaseRequest,
    pb::ProposeSolutionRequest,
    pb::SetLineStateRequest,
);

/// Actor, etag, idempotency key, comment and deadline of a mutating
/// request.
#[allow(clippy::too_many_arguments)]
fn envelope<R: Message>(
    v: &mut Violations,
    caller: &Caller,
    method: &'static str,
    request: &R,
    request_id: &str,
    etag: &str,
    comment: &str,
    deadline: Option<Duration>,
) -> Option<MutationMeta> {
    let request_id = v.check("request_id", requests::request_id(request_id));
    let etag = v.check("etag", requests::etag(etag));
    let comment = v.check("comment", requests::comment(comment));
    Some(MutationMeta {
        actor: caller.subject.clone(),
        etag: etag?,
        idempotency: request_id?.map(|request_id| Idempotency {
            request_id,
            method,
            fingerprint: fingerprint(method, request),
            encode_response,
        }),
        comment: comment?,
        statement_timeout: deadline.map(statement_budget),
    })
}

/// The client's deadline (`grpc-timeout`), if it sent one.
fn client_deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// How long the database may work for a read: the client's deadline, if
/// it sent one, bounds it like a mutation's.
pub(super) fn read_timeout(metadata: &MetadataMap) -> Option<Duration> {
    client_deadline(metadata).map(statement_budget)
}

/// How long the database may work for a call with `deadline` left: a little
/// less, so that the database gives up (and rolls back) before the client
/// does, and the client learns why.
fn statement_budget(deadline: Duration) -> Duration {
    (deadline.mul_f64(0.9))
        .saturating_sub(Duration::from_millis(10))
        .max(Duration::from_millis(1))
}

fn envelope_of<R: Mutation>(
    v: &mut Violations,
    caller: &Caller,
    method: &'static str,
    request: &R,
    deadline: Option<Duration>,
) -> Option<MutationMeta> {
    envelope(
        v,
        caller,
        method,
        request,
        request.request_id(),
        request.etag(),
        request.comment(),
        deadline,
    )
}

/// A hash of the whole request: a reused request id must come with the
/// same request.
fn fingerprint<R: Message>(method: &str, request: &R) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update([0]);
    hash.update(request.encode_to_vec());
    hash.finalize().to_vec()
}

#[tonic::async_trait]
impl InvoiceCaseService for InvoiceCaseApi {
    async fn create_invoice_case(
        &self,
        request: Request<pb::CreateInvoiceCaseRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        let caller = self.authorize(&request, Permission::Create)?;
        let deadline = client_deadline(request.metadata());
        let request = request.into_inner();
        let mut v = Violations::default();
        let meta = envelope(
            &mut v,
            &caller,
            "CreateInvoiceCase",
            &request,
            &request.request_id,
            "",
            &request.comment,
            deadline,
        );
        let new = match requests::new_case(request.invoice_case.as_ref()) {
            Ok(new) => Some(new),
            Err(violations) => {
                for violation in violations {
                    v.check::<()>(violation.field, Err(violation.description));
                }
                None
            }
        };
        let (meta, new) = v
            .finish((|| Some((meta?, new?)))())
            .map_err(status::invalid_argument)?;
        if !caller.access.allows(&new.account_id) {
            return Err(status::auth(AuthError::AccountDenied));
        }
        let answer = self
            .store
            .create_case(new, &meta)
            .await
            .map_err(|e| status::store(e, ""))?;
        answered(answer)
    }

    async fn get_invoice_case(
        &self,
        request: Request<pb::GetInvoiceCaseRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        let caller = self.authorize(&request, Permission::Read)?;
        let timeout = read_timeout(request.metadata());
        let request = request.into_inner();
        let key = requests::case_key(&request.case_id)
            .map_err(|e| status::invalid_field("case_id", e))?;
        let case = self
            .store
            .get_case(&key, &caller.access, timeout)
            .await
            .map_err(|e| failed_on_case(e, &request.case_id))?;
        telemetry::record_case(&case.number);
        Ok(Response::new(convert::invoice_case(case)))
    }

    async fn list_invoice_cases(
        &self,
        request: Request<pb::ListInvoiceCasesRequest>,
    ) -> Result<Response<pb::ListInvoiceCasesResponse>, Status> {
        let caller = self.authorize(&request, Permission::Read)?;
        let timeout = read_timeout(request.metadata());
        let request = request.into_inner();
        let mut v = Violations::default();
        let size = v.check(
            "page_size",
            paging::page_size(
                request.page_size,
                paging::DEFAULT_CASE_PAGE,
                paging::MAX_CASE_PAGE,
            ),
        );
        let filter = v.check("filter", filter::parse(&request.filter));
        let after = v.check(
            "page_token",
            paging::parse_case_token(&request.page_token, &request.filter),
        );
        let (size, filter, after) = v
            .finish((|| Some((size?, filter?, after?)))())
            .map_err(status::invalid_argument)?;
        let page = self
            .store
            .list_cases(&filter, &caller.access, after, size, timeout)
            .await
            .map_err(|e| status::store(e, ""))?;
        Ok(Response::new(pb::ListInvoiceCasesResponse {
            invoice_cases: page.cases.into_iter().map(convert::invoice_case).collect(),
            next_page_token: page
                .next
                .map(|key| paging::case_token(key, &request.filter))
                .unwrap_or_default(),
        }))
    }

    async fn add_case_line(
        &self,
        request: Request<pb::AddCaseLineRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "AddCaseLine", Permission::EditLines, |r, v| {
            let Some(line) = &r.line else {
                v.check::<()>("line", Err("is required".into()));
                return None;
            };
            requests::new_line(line, "line", v).map(store::Request::AddLine)
        })
        .await
    }

    async fn remove_case_line(
        &self,
        request: Request<pb::RemoveCaseLineRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "RemoveCaseLine", Permission::EditLines, |r, v| {
            let line = v.check("line_id", requests::line_ref(&r.line_id))?;
            Some(store::Request::Command(Command::RemoveLine { line }))
        })
        .await
    }

    async fn submit_case(
        &self,
        request: Request<pb::SubmitCaseRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "SubmitCase", Permission::SubmitOrCancel, |_, _| {
            Some(store::Request::Command(Command::Submit))
        })
        .await
    }

    async fn assign_to_me(
        &self,
        request: Request<pb::AssignToMeRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "AssignToMe", Permission::Work, |_, _| {
            Some(store::Request::Command(Command::AssignToMe))
        })
        .await
    }

    async fn assign_case(
        &self,
        request: Request<pb::AssignCaseRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "AssignCase", Permission::Assign, |r, v| {
            let assignee = v.check("assignee", required_text(&r.assignee, MAX_ACTOR));
            let group = v.check(
                "assignment_group",
                optional_text(&r.assignment_group, MAX_IDENTIFIER),
            );
            Some(store::Request::Command(Command::Assign {
                assignee: assignee?,
                group: group?,
            }))
        })
        .await
    }

    async fn request_information(
        &self,
        request: Request<pb::RequestInformationRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "RequestInformation", Permission::Work, |_, _| {
            Some(store::Request::Command(Command::RequestInformation))
        })
        .await
    }

    async fn information_received(
        &self,
        request: Request<pb::InformationReceivedRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "InformationReceived", Permission::Work, |_, _| {
            Some(store::Request::Command(Command::InformationReceived))
        })
        .await
    }

    async fn propose_solution(
        &self,
        request: Request<pb::ProposeSolutionRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "ProposeSolution", Permission::Work, |r, v| {
            requests::propose_solution(r, v)
                .map(|solution| store::Request::Command(Command::ProposeSolution(solution)))
        })
        .await
    }

    async fn close_case(
        &self,
        request: Request<pb::CloseCaseRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "CloseCase", Permission::Work, |_, _| {
            Some(store::Request::Command(Command::Close))
        })
        .await
    }

    async fn cancel_case(
        &self,
        request: Request<pb::CancelCaseRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "CancelCase", Permission::SubmitOrCancel, |_, _| {
            Some(store::Request::Command(Command::Cancel))
        })
        .await
    }

    async fn set_line_state(
        &self,
        request: Request<pb::SetLineStateRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.mutate(request, "SetLineState", Permission::Work, |r, v| {
            let (line, target, resolution) = requests::set_line_state(r, v)?;
            Some(store::Request::Command(Command::SetLineState {
                line,
                target,
                resolution,
            }))
        })
        .await
    }

    async fn update_invoice_case(
        &self,
        request: Request<pb::UpdateInvoiceCaseRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.update_case(request).await
    }

    async fn update_case_line(
        &self,
        request: Request<pb::UpdateCaseLineRequest>,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        self.update_line(request).await
    }

    async fn list_state_changes(
        &self,
        request: Request<pb::ListStateChangesRequest>,
    ) -> Result<Response<pb::ListStateChangesResponse>, Status> {
        let caller = self.authorize(&request, Permission::Read)?;
        let timeout = read_timeout(request.metadata());
        let request = request.into_inner();
        let mut v = Violations::default();
        let key = v.check("case_id", requests::case_key(&request.case_id));
        let size = v.check(
            "page_size",
            paging::page_size(
                request.page_size,
                paging::DEFAULT_EVENT_PAGE,
                paging::MAX_EVENT_PAGE,
            ),
        );
        let (key, size): (CaseKey, usize) = v
            .finish((|| Some((key?, size?)))())
            .map_err(status::invalid_argument)?;
        telemetry::record_case(&request.case_id);
        let (case_id, _) = self
            .store
            .find_case(&key, &caller.access, timeout)
            .await
            .map_err(|e| status::store(e, &request.case_id))?;
        let after = paging::parse_event_token(&request.page_token, case_id)
            .map_err(|e| status::invalid_field("page_token", e))?;
        let page = self
            .store
            .list_events(case_id, after, size, timeout)
            .await
            .map_err(|e| status::store(e, &request.case_id))?;
        Ok(Response::new(pb::ListStateChangesResponse {
            events: page
                .events
                .into_iter()
                .map(|event| {
                    let cursor = crate::watch::cursor::encode_event(event.position);
                    convert::event(event, cursor)
                })
                .collect(),
            next_page_token: page
                .next_after
                .map(|after| paging::event_token(case_id, after))
                .unwrap_or_default(),
        }))
    }

    async fn acknowledge_state_changes(
        &self,
        request: Request<pb::AcknowledgeStateChangesRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        self.acknowledge(request).await
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        self.list_subscriptions(request).await
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<()>, Status> {
        self.delete_subscription(request).await
    }

    type WatchStateChangesStream = WatchStream;

    /// The server serves watches through [`InvoiceCaseApi::watch`] and
    /// sends their encoded messages as they are; this decodes them again,
    /// for whoever uses the generated service on its own.
    async fn watch_state_changes(
        &self,
        request: Request<pb::WatchStateChangesRequest>,
    ) -> Result<Response<Self::WatchStateChangesStream>, Status> {
        use futures::StreamExt;
        let stream = self.watch(request).await?.into_inner();
        Ok(Response::new(Box::pin(stream.map(|item| {
            item.and_then(|encoded| {
                encoded
                    .decode()
                    .map_err(|e| status::internal(&format!("a watch message: {e}")))
            })
        }))))
    }
}
