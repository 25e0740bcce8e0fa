//! Logs: one JSON line per RPC with its method, code, latency, actor and
//! case, under the request id the response carries.

use std::time::Duration;

use invoice_cases::pb;
use serde_json::Value;
use tonic::{Code, Request, metadata::MetadataMap};
use uuid::Uuid;

use crate::{
    binary::{Binary, Options},
    helpers::*,
};

fn request_id(metadata: &MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id in the response: {metadata:?}"))
        .to_str()
        .expect("ascii")
        .to_owned()
}

fn with_request_id<T>(message: T, id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("metadata value"));
    request
}

/// An RPC's log line: its event fields and its span's fields.
#[derive(Debug)]
struct RpcLine {
    raw: String,
    event: Value,
    span: Value,
}

impl RpcLine {
    fn span_str(&self, field: &str) -> Option<&str> {
        self.span.get(field).and_then(Value::as_str)
    }
    fn event_str(&self, field: &str) -> Option<&str> {
        self.event.get(field).and_then(Value::as_str)
    }
}

/// The RPC lines of the service (not health) among JSON log lines.
fn rpc_lines(logs: &[String]) -> Vec<RpcLine> {
    logs.iter()
        .filter_map(|line| {
            let json: Value = serde_json::from_str(line).ok()?;
            // flatten_event: the event's fields are top-level; without it
            // they are under "fields".
            let event = match json.get("fields") {
                Some(fields) => fields.clone(),
                None => json.clone(),
            };
            if event.get("message").and_then(Value::as_str) != Some("rpc") {
                return None;
            }
            let span = json.get("span").cloned().unwrap_or(Value::Null);
            Some(RpcLine {
                raw: line.clone(),
                event,
                span,
            })
        })
        .collect()
}

/// A call made: (request id, method, code, actor, case number).
type Call = (
    String,
    &'static str,
    Code,
    Option<&'static str>,
    Option<String>,
);

#[tokio::test]
async fn json_logs_have_one_line_per_rpc_under_the_request_id() {
    let database_url = cluster().new_database();
    let server = Binary::start(Options::new(&database_url).args(&["--log-format", "json"])).await;
    let mut admin = server.admin().await;

    let mut calls: Vec<Call> = Vec::new();

    let created = admin
        .create_invoice_case(with_request_id(
            pb::CreateInvoiceCaseRequest {
                invoice_case: Some(new_case("ACME", 2)),
                request_id: String::new(),
                comment: String::new(),
            },
            "test-123",
        ))
        .await
        .expect("create");
    assert_eq!(
        request_id(created.metadata()),
        "test-123",
        "the client's request id comes back"
    );
    let case = created.into_inner();
    calls.push((
        "test-123".into(),
        "CreateInvoiceCase",
        Code::Ok,
        Some("admin"),
        Some(case.number.clone()),
    ));

    let submitted = admin.submit_case(submit(&case.id)).await.expect("submit");
    let id = request_id(submitted.metadata());
    assert!(
        Uuid::parse_str(&id).is_ok(),
        "a generated request id is a UUID: {id}"
    );
    calls.push((
        id,
        "SubmitCase",
        Code::Ok,
        Some("admin"),
        Some(case.number.clone()),
    ));

    // A failing call: the case is not a draft any more.
    let refused = admin
        .submit_case(submit(&case.id))
        .await
        .expect_err("submitted twice");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let id = request_id(refused.metadata());
    assert!(Uuid::parse_str(&id).is_ok(), "{id}");
    calls.push((
        id,
        "SubmitCase",
        Code::FailedPrecondition,
        Some("admin"),
        Some(case.number.clone()),
    ));

    // A request id the server does not accept is replaced.
    let got = admin
        .get_invoice_case(with_request_id(
            pb::GetInvoiceCaseRequest {
                case_id: case.number.clone(),
            },
            "not valid!",
        ))
        .await
        .expect("get");
    let id = request_id(got.metadata());
    assert!(Uuid::parse_str(&id).is_ok(), "{id}");
    calls.push((
        id,
        "GetInvoiceCase",
        Code::Ok,
        Some("admin"),
        Some(case.number.clone()),
    ));

    // Without a token: no actor.
    let mut anonymous = pb::invoice_case_service_client::InvoiceCaseServiceClient::new(
        crate::binary::channel(server.addr).await,
    );
    let denied = anonymous
        .get_invoice_case(with_request_id(
            pb::GetInvoiceCaseRequest {
                case_id: case.id.clone(),
            },
            "anon-1",
        ))
        .await
        .expect_err("no token");
    assert_eq!(denied.code(), Code::Unauthenticated);
    assert_eq!(request_id(denied.metadata()), "anon-1");
    calls.push((
        "anon-1".into(),
        "GetInvoiceCase",
        Code::Unauthenticated,
        None,
        None,
    ));

    // A call its client abandons before the server answers (its case is
    // locked, so the handler waits): the server drops the call, and still
    // writes its line, Cancelled.
    let lock = lock_table(&database_url, "invoice_cases").await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(500),
        admin.get_invoice_case(with_request_id(
            pb::GetInvoiceCaseRequest {
                case_id: case.id.clone(),
            },
            "abandoned-1",
        )),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the call waits for the lock: {abandoned:?}"
    );
    calls.push((
        "abandoned-1".into(),
        "GetInvoiceCase",
        Code::Cancelled,
        Some("admin"),
        None,
    ));

    // The lines are written when the calls end: wait for each call's line.
    let log = server.log_lines();
    for (id, ..) in &calls {
        log.wait_for(0, Duration::from_secs(10), |line| {
            rpc_lines(&[line.to_owned()])
                .iter()
                .any(|l| l.span_str("request_id") == Some(id.as_str()))
        })
        .await
        .unwrap_or_else(|| panic!("no log line for the call {id}:\n{}", log.all().join("\n")));
    }
    drop(lock);
    let logs = server.logs();
    let lines = rpc_lines(&logs);
    eprintln!("the server's JSON log lines:\n{}", logs.join("\n"));
    for line in &logs {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "with --log-format json every line is JSON: {line}"
        );
    }
    let service_lines: Vec<&RpcLine> = lines
        .iter()
        .filter(|l| !l.span_str("method").unwrap_or_default().is_empty())
        .collect();
    assert_eq!(
        service_lines.len(),
        calls.len(),
        "one line per RPC: {:#?}",
        service_lines.iter().map(|l| &l.raw).collect::<Vec<_>>()
    );
    let mut problems = Vec::new();
    for (id, method, code, actor, case_number) in &calls {
        let matching: Vec<&&RpcLine> = service_lines
            .iter()
            .filter(|l| l.span_str("request_id") == Some(id.as_str()))
            .collect();
        let [line] = matching.as_slice() else {
            problems.push(format!(
                "{method} ({id}): {} lines with its request id",
                matching.len()
            ));
            continue;
        };
        if line.span_str("method") != Some(*method) {
            problems.push(format!("{method} ({id}): method field in {}", line.raw));
        }
        if line.event_str("code") != Some(&format!("{code:?}")) {
            problems.push(format!("{method} ({id}): code {code:?} in {}", line.raw));
        }
        if !line.event.get("latency_ms").is_some_and(Value::is_number) {
            problems.push(format!(
                "{method} ({id}): numeric latency_ms in {}",
                line.raw
            ));
        }
        if line.span_str("actor") != *actor {
            problems.push(format!("{method} ({id}): actor {actor:?} in {}", line.raw));
        }
        if let Some(number) = case_number {
            // The case as the client named it or its number.
            let logged = line.span_str("case");
            if logged != Some(number.as_str()) && logged != Some(case.id.as_str()) {
                problems.push(format!(
                    "{method} {code:?} ({id}): case {number} (or {}) in {}",
                    case.id, line.raw
                ));
            }
        }
        if line.event.get("level").and_then(Value::as_str).is_none()
            && !line.raw.contains("\"level\"")
        {
            problems.push(format!("{method} ({id}): no level in {}", line.raw));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn log_format_comes_from_the_environment_too() {
    // An empty database (no migrations), dropped when the test is done.
    let database = cluster().new_empty_database();
    let url = database.url.clone();
    let output = tokio::process::Command::new(crate::binary::BIN)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("run migrate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("migrate with LOG_FORMAT=json:\n{stderr}");
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.lines().count() >= 1, "migrate logs what it applied");
    for line in stderr.lines() {
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("LOG_FORMAT=json: not JSON ({e}): {line}"));
        assert!(json.get("level").is_some(), "{line}");
    }
}
