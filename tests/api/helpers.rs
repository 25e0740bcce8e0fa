#![allow(dead_code)]

//! The test harness: the test process's PostgreSQL cluster (shared with
//! the benchmarks, in `tests/support`), one database per test (cloned from
//! a template migrated once, dropped when the test is done), and the real
//! server on a free port with a real tonic client.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use invoice_cases::{
    auth::{KeySet, KeySettings},
    pb::{
        self, invoice_case::State as CaseState,
        invoice_case_service_client::InvoiceCaseServiceClient,
    },
    server::{self, Limits, RunningServer, ServerSettings},
    store::PoolSettings,
    watch::WatchSettings,
};
use secrecy::ExposeSecret as _;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;
use uuid::Uuid;

#[allow(unused_imports)]
pub use invoice_cases_test_support::{
    Bearer, Client, authorized,
    cluster::{TestDatabase, shared as cluster},
};

/// A running server on its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub database_url: String,
    pub secret: String,
    server: Option<RunningServer>,
    /// The database the app owns (dropped after the server).
    database: Option<TestDatabase>,
}

/// Settings for [`spawn_app_with`].
pub fn settings(database_url: &str, secret: &str) -> ServerSettings {
    ServerSettings {
        listen: "127.0.0.1:0".parse().expect("address"),
        database_url: database_url.into(),
        pool: PoolSettings {
            max_size: 8,
            stream_max_size: 4,
            wait_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        },
        keys: KeySet::hs256(secret.as_bytes(), KeySettings::default()),
        idempotency_retention: Duration::from_secs(48 * 3600),
        health_interval: Duration::from_millis(500),
        watch: WatchSettings {
            progress_interval: Duration::from_millis(500),
            poll_interval: Duration::from_millis(200),
            ..WatchSettings::default()
        },
        tls: None,
        limits: Limits::default(),
        metrics: None,
    }
}

/// The real server on a free port, on a fresh database.
pub async fn spawn_app() -> TestApp {
    let database = cluster().new_database();
    spawn_app_on(&database).await.owning(database)
}

/// The real server on a free port, on `database_url`.
pub async fn spawn_app_on(database_url: &str) -> TestApp {
    let secret = format!("test-secret-{}", Uuid::new_v4().simple());
    spawn_app_with(settings(database_url, &secret), secret).await
}

/// The real server with the given settings.
pub async fn spawn_app_with(settings: ServerSettings, secret: String) -> TestApp {
    let database_url = settings.database_url.expose_secret().to_owned();
    let server = server::start(settings).await.expect("start the server");
    TestApp {
        addr: server.local_addr,
        database_url,
        secret,
        server: Some(server),
        database: None,
    }
}

impl TestApp {
    /// Keeps `database` as long as the app: it is dropped after the server.
    pub fn owning(mut self, database: TestDatabase) -> TestApp {
        self.database = Some(database);
        self
    }

    /// A token for `sub` with `roles`, limited to `accounts` when given.
    pub fn token(&self, sub: &str, roles: &[&str], accounts: Option<&[&str]>) -> String {
        invoice_cases_test_support::token(&self.secret, sub, roles, accounts, 3600)
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the server")
    }

    /// A client authenticated with `token` (or with none).
    pub async fn client_with(&self, token: Option<&str>) -> Client {
        InvoiceCaseServiceClient::with_interceptor(self.channel().await, Bearer::token(token))
    }

    /// A client of an admin (every permission, every account).
    pub async fn admin(&self) -> Client {
        self.client_for("admin", &["admin"]).await
    }

    /// A client of `sub` with `roles`.
    pub async fn client_for(&self, sub: &str, roles: &[&str]) -> Client {
        let token = self.token(sub, roles, None);
        self.client_with(Some(&token)).await
    }

    /// Watch streams the server has open.
    pub fn watch_streams(&self) -> usize {
        self.server
            .as_ref()
            .map(RunningServer::active_watch_streams)
            .unwrap_or(0)
    }

    /// Stops the server (graceful).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server
                .shutdown(Duration::from_secs(5))
                .await
                .expect("server shutdown");
        }
    }
}

// ---- fixtures ----------------------------------------------------------

/// A valid line.
pub fn line(description: &str) -> pb::CaseLine {
    pb::CaseLine {
        dispute_code: pb::case_line::DisputeCode::PricingDiscrepancy.into(),
        short_description: description.to_owned(),
        invoiced_amount: "100.00".into(),
        disputed_amount: "40.00".into(),
        ..Default::default()
    }
}

/// A valid single-invoice case of `account` with `lines` lines.
pub fn new_case(account: &str, lines: usize) -> pb::InvoiceCase {
    pb::InvoiceCase {
        account_id: account.to_owned(),
        invoice_number: "ARINV0012345".into(),
        request_source: pb::invoice_case::RequestSource::SingleInvoice.into(),
        short_description: "Invoice disputed".into(),
        currency_code: "EUR".into(),
        lines: (0..lines).map(|i| line(&format!("line {i}"))).collect(),
        ..Default::default()
    }
}

/// Creates a case of `account` with `lines` lines.
pub async fn create(client: &mut Client, account: &str, lines: usize) -> pb::InvoiceCase {
    client
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(new_case(account, lines)),
            ..Default::default()
        })
        .await
        .expect("create a case")
        .into_inner()
}

/// A case with two lines driven to `state` with the RPCs, by an admin.
pub async fn case_in_state(client: &mut Client, state: CaseState) -> pb::InvoiceCase {
    let case = create(client, "ACME", 2).await;
    let id = case.id.clone();
    if state == CaseState::Draft {
        return case;
    }
    if state == CaseState::Canceled {
        return ok(client.cancel_case(cancel(&id)).await);
    }
    let case = ok(client.submit_case(submit(&id)).await);
    if state == CaseState::New {
        return case;
    }
    let case = ok(client.assign_to_me(assign(&id)).await);
    match state {
        CaseState::WorkInProgress => case,
        CaseState::AwaitingInfo => ok(client.request_information(request_info(&id)).await),
        CaseState::Resolved => ok(client.propose_solution(propose_all(&id)).await),
        CaseState::Closed => {
            ok(client.propose_solution(propose_all(&id)).await);
            ok(client.close_case(close(&id)).await)
        }
        other => panic!("no fixture for {other:?}"),
    }
}

pub fn ok<T>(result: Result<tonic::Response<T>, Status>) -> T {
    match result {
        Ok(response) => response.into_inner(),
        Err(status) => panic!("call failed: {status:?}"),
    }
}

pub fn submit(id: &str) -> pb::SubmitCaseRequest {
    pb::SubmitCaseRequest {
        case_id: id.to_owned(),
        ..Default::default()
    }
}

pub fn assign(id: &str) -> pb::AssignToMeRequest {
    pb::AssignToMeRequest {
        case_id: id.to_owned(),
        ..Default::default()
    }
}

pub fn request_info(id: &str) -> pb::RequestInformationRequest {
    pb::RequestInformationRequest {
        case_id: id.to_owned(),
        ..Default::default()
    }
}

pub fn info_received(id: &str) -> pb::InformationReceivedRequest {
    pb::InformationReceivedRequest {
        case_id: id.to_owned(),
        ..Default::default()
    }
}

pub fn close(id: &str) -> pb::CloseCaseRequest {
    pb::CloseCaseRequest {
        case_id: id.to_owned(),
        ..Default::default()
    }
}

pub fn cancel(id: &str) -> pb::CancelCaseRequest {
    pb::CancelCaseRequest {
        case_id: id.to_owned(),
        ..Default::default()
    }
}

/// Propose solution accepting every open line.
pub fn propose_all(id: &str) -> pb::ProposeSolutionRequest {
    pb::ProposeSolutionRequest {
        case_id: id.to_owned(),
        resolution_code: pb::invoice_case::ResolutionCode::SolvedCredit.into(),
        resolution_notes: "credit note issued".into(),
        default_outcome: pb::case_line::State::ResolvedAccepted.into(),
        ..Default::default()
    }
}

pub fn set_line(id: &str, line_id: &str, state: pb::case_line::State) -> pb::SetLineStateRequest {
    pb::SetLineStateRequest {
        case_id: id.to_owned(),
        line_id: line_id.to_owned(),
        state: state.into(),
        ..Default::default()
    }
}

pub async fn get(client: &mut Client, id: &str) -> pb::InvoiceCase {
    ok(client
        .get_invoice_case(pb::GetInvoiceCaseRequest {
            case_id: id.to_owned(),
        })
        .await)
}

/// Every event of a case, all pages.
pub async fn history(client: &mut Client, id: &str) -> Vec<pb::StateChangeEvent> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ok(client
            .list_state_changes(pb::ListStateChangesRequest {
                case_id: id.to_owned(),
                page_size: 7,
                page_token: page_token.clone(),
            })
            .await);
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

// ---- assertions --------------------------------------------------------

/// The §3.5 invariants, checked on the case as the API returns it
/// (written independently of the domain module's own check).
pub fn assert_invariants(case: &pb::InvoiceCase) {
    use pb::case_line::State as L;
    let state = case.state();
    let lines: Vec<L> = case.lines.iter().map(|l| l.state()).collect();
    let is_final = |s: &L| matches!(s, L::ResolvedAccepted | L::ResolvedDenied | L::Canceled);
    let only = |allowed: &[L]| lines.iter().all(|s| allowed.contains(s));
    let ok = match state {
        CaseState::Draft => only(&[L::Draft, L::Canceled]),
        CaseState::New => only(&[L::New, L::Canceled]),
        CaseState::WorkInProgress | CaseState::AwaitingInfo => {
            !lines.iter().any(|s| matches!(s, L::Draft | L::New))
                && lines.iter().any(|s| !is_final(s))
        }
        CaseState::Resolved | CaseState::Closed => lines.iter().all(is_final),
        CaseState::Canceled => only(&[L::Canceled]),
        CaseState::Unspecified => false,
    };
    assert!(ok, "case {} is {state:?} with lines {lines:?}", case.number);
    let assigned = matches!(
        state,
        CaseState::WorkInProgress
            | CaseState::AwaitingInfo
            | CaseState::Resolved
            | CaseState::Closed
    );
    assert_eq!(
        !case.assigned_to.is_empty(),
        assigned,
        "case {} is {state:?} with assigned_to {:?}",
        case.number,
        case.assigned_to
    );
}

/// Replays a case's event log and checks it yields the stored states, and
/// the stored values of every field the events changed: each field change
/// starts from the value the previous change of that field left.
pub async fn assert_replay_matches(client: &mut Client, id: &str) {
    use pb::state_change::Transition;
    let case = get(client, id).await;
    let events = history(client, id).await;
    let mut case_state = pb::invoice_case::State::Unspecified;
    let mut lines: HashMap<String, pb::case_line::State> = HashMap::new();
    // (line id, or "" for the case; field) → value, as events write it.
    let mut fields: HashMap<(String, String), String> = HashMap::new();
    for event in &events {
        assert_eq!(event.case_id, case.id);
        assert!(
            !event.changes.is_empty()
                || !event.field_changes.is_empty()
                || !event.comment.is_empty(),
            "an event that records nothing: {event:?}"
        );
        for change in &event.field_changes {
            let key = (change.line_id.clone(), change.field.clone());
            if let Some(value) = fields.get(&key) {
                assert_eq!(&change.old_value, value, "{change:?} in {event:?}");
            }
            assert_ne!(change.old_value, change.new_value, "{change:?}");
            fields.insert(key, change.new_value.clone());
        }
        for change in &event.changes {
            match &change.transition {
                Some(Transition::CaseTransition(t)) => {
                    assert_eq!(t.from_state(), case_state, "{event:?}");
                    case_state = t.to_state();
                }
                Some(Transition::LineTransition(t)) => {
                    let from = lines
                        .get(&t.id)
                        .copied()
                        .unwrap_or(pb::case_line::State::Unspecified);
                    assert_eq!(t.from_state(), from, "{event:?}");
                    match t.to_state() {
                        pb::case_line::State::Unspecified => {
                            lines.remove(&t.id);
                            fields.retain(|(line, _), _| *line != t.id);
                        }
                        to => {
                            lines.insert(t.id.clone(), to);
                        }
                    }
                }
                None => panic!("change without transition: {change:?}"),
            }
        }
    }
    assert_eq!(case_state, case.state(), "replayed case state");
    let stored: HashMap<String, pb::case_line::State> = case
        .lines
        .iter()
        .map(|l| (l.id.clone(), l.state()))
        .collect();
    assert_eq!(lines, stored, "replayed line states");
    for ((line_id, field), value) in &fields {
        let stored = if line_id.is_empty() {
            case_field_text(&case, field)
        } else {
            let line = case
                .lines
                .iter()
                .find(|l| &l.id == line_id)
                .unwrap_or_else(|| panic!("no line {line_id} for the change of {field}"));
            line_field_text(line, field)
        };
        assert_eq!(&stored, value, "replayed {field} of {line_id:?}");
    }
    assert_eq!(
        events.last().map(|e| e.etag.clone()),
        Some(case.etag.clone()),
        "the last event carries the case's etag"
    );
}

/// A case field as events write it (enums by value name, empty = unset).
pub fn case_field_text(case: &pb::InvoiceCase, field: &str) -> String {
    let unset_if = |name: &str, unspecified: &str| {
        if name == unspecified {
            String::new()
        } else {
            name.to_owned()
        }
    };
    match field {
        "contact_id" => case.contact_id.clone(),
        "invoice_number" => case.invoice_number.clone(),
        "request_source" => unset_if(
            case.request_source().as_str_name(),
            "REQUEST_SOURCE_UNSPECIFIED",
        ),
        "short_description" => case.short_description.clone(),
        "description" => case.description.clone(),
        "priority" => unset_if(case.priority().as_str_name(), "PRIORITY_UNSPECIFIED"),
        "currency_code" => case.currency_code.clone(),
        "assigned_to" => case.assigned_to.clone(),
        "assignment_group" => case.assignment_group.clone(),
        "resolution_code" => unset_if(
            case.resolution_code().as_str_name(),
            "RESOLUTION_CODE_UNSPECIFIED",
        ),
        "resolution_notes" => case.resolution_notes.clone(),
        other => panic!("the replay does not know the case field {other:?}: add it here"),
    }
}

/// A line field as events write it (enums by value name, empty = unset).
pub fn line_field_text(line: &pb::CaseLine, field: &str) -> String {
    match field {
        "dispute_code" => match line.dispute_code() {
            pb::case_line::DisputeCode::Unspecified => String::new(),
            code => code.as_str_name().to_owned(),
        },
        "invoice_line_ref" => line.invoice_line_ref.clone(),
        "invoice_number" => line.invoice_number.clone(),
        "short_description" => line.short_description.clone(),
        "invoiced_amount" => line.invoiced_amount.clone(),
        "disputed_amount" => line.disputed_amount.clone(),
        "approved_amount" => line.approved_amount.clone().unwrap_or_default(),
        "invoiced_quantity" => line.invoiced_quantity.clone().unwrap_or_default(),
        "disputed_quantity" => line.disputed_quantity.clone().unwrap_or_default(),
        "resolution_code" => match line.resolution_code() {
            pb::invoice_case::ResolutionCode::Unspecified => String::new(),
            code => code.as_str_name().to_owned(),
        },
        "resolution_notes" => line.resolution_notes.clone(),
        other => panic!("the replay does not know the line field {other:?}: add it here"),
    }
}

/// Asserts the status code and returns the status.
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
) -> Status {
    match result {
        Ok(response) => panic!("expected {code:?}, got {:?}", response.into_inner()),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// Asserts FAILED_PRECONDITION with INVALID_STATE_TRANSITION details.
pub fn expect_invalid_transition<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    action: &str,
    current_state: &str,
) {
    let status = expect_code(result, Code::FailedPrecondition);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "INVALID_STATE_TRANSITION");
    assert_eq!(
        info.metadata.get("action").map(String::as_str),
        Some(action)
    );
    assert_eq!(
        info.metadata.get("currentState").map(String::as_str),
        Some(current_state),
        "{info:?}"
    );
}

/// Every case the client can see, all pages.
pub async fn all_cases(client: &mut Client) -> Vec<pb::InvoiceCase> {
    let mut cases = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ok(client
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                page_size: 500,
                page_token: page_token.clone(),
                filter: String::new(),
            })
            .await);
        cases.extend(page.invoice_cases);
        if page.next_page_token.is_empty() {
            return cases;
        }
        page_token = page.next_page_token;
    }
}

/// A transaction of the test's own, on a connection of its own, open until
/// [`OpenTransaction::end`] (or dropped: PostgreSQL then rolls it back).
pub struct OpenTransaction(diesel_async::AsyncPgConnection);

impl OpenTransaction {
    pub async fn begin(database_url: &str) -> OpenTransaction {
        use diesel_async::AsyncConnection;
        let conn = diesel_async::AsyncPgConnection::establish(database_url)
            .await
            .expect("a raw connection");
        let mut open = OpenTransaction(conn);
        open.run("BEGIN").await;
        open
    }

    /// Runs one statement in the transaction.
    pub async fn run(&mut self, sql: &str) {
        diesel_async::RunQueryDsl::execute(diesel::sql_query(sql), &mut self.0)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Ends it with `COMMIT` or `ROLLBACK`.
    pub async fn end(mut self, sql: &str) {
        self.run(sql).await;
    }
}

/// Holds an exclusive lock on `table` until the transaction ends.
pub async fn lock_table(database_url: &str, table: &str) -> OpenTransaction {
    let mut open = OpenTransaction::begin(database_url).await;
    open.run(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await;
    open
}

/// The number `sql` returns as its one column `n` (a bigint), read on
/// `conn`.
pub async fn count_rows(conn: &mut diesel_async::AsyncPgConnection, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql), conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    count.n
}

/// The field names of a BadRequest detail.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}
