//! Metrics: the Prometheus endpoint after real calls.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use http::uri::PathAndQuery;
use invoice_cases::pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;
use uuid::Uuid;

use crate::{
    binary::{Binary, Options, channel},
    helpers::*,
    watch_helpers::{open, read_events, watch},
};

/// `GET /metrics` over a plain HTTP/1.1 connection: (status line, content
/// type, body).
async fn scrape(addr: SocketAddr) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to /metrics");
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send the request");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the metrics endpoint answers")
        .expect("read the response");
    let response = String::from_utf8(response).expect("utf-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header");
    let status = head.lines().next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, header("content-type").unwrap_or_default(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// One sample of the exposition format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("a value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = BTreeMap::new();
                    let mut rest = rest;
                    while let Some((key, after)) = rest.split_once("=\"") {
                        let end = after.find('"').expect("closing quote");
                        labels.insert(
                            key.trim_start_matches(',').trim().to_owned(),
                            after[..end].to_owned(),
                        );
                        rest = &after[end + 1..];
                    }
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// The samples of `name` whose labels include `labels`.
fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(samples, name, labels).as_slice() {
        [one] => one.value,
        other => panic!("{name}{labels:?}: {} samples: {other:?}", other.len()),
    }
}

/// The sum of the samples of `name` whose labels include `labels` (0 when
/// there is none).
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).iter().map(|s| s.value).sum()
}

const SERVICE: &str = "invoicecase.v1.InvoiceCaseService";

/// A server with `/metrics`.
async fn serve_with_metrics() -> (Binary, SocketAddr) {
    let mut options = Options::owning(cluster().new_database());
    options.metrics = true;
    let server = Binary::start(options).await;
    let metrics = server.metrics.expect("a metrics address");
    (server, metrics)
}

/// Scrapes until `done` holds for the samples (at most 5 s); returns them.
async fn scrape_until(
    metrics: SocketAddr,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, body) = scrape(metrics).await;
        let samples = parse(&body);
        if done(&samples) {
            return samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen in\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The distinct `(grpc_service, grpc_method)` label pairs of any sample.
fn method_labels(samples: &[Sample]) -> std::collections::BTreeSet<(String, String)> {
    samples
        .iter()
        .filter_map(|s| {
            Some((
                s.labels.get("grpc_service")?.clone(),
                s.labels.get("grpc_method")?.clone(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn calls_to_paths_not_served_count_as_unknown_and_add_no_series() {
    let (server, metrics) = serve_with_metrics().await;
    let mut admin = server.admin().await;
    create(&mut admin, "ACME", 1).await;
    let (_, _, before) = scrape(metrics).await;
    let before_samples = parse(&before);

    // Real gRPC calls (HTTP/2 POSTs) with an empty message, no token: half
    // to made-up services, half to made-up methods of the real service
    // (which the authentication layer refuses before routing).
    let mut grpc = tonic::client::Grpc::new(channel(server.addr).await);
    const CALLS: usize = 100;
    for i in 0..CALLS {
        let token = Uuid::new_v4().simple();
        let path = if i % 2 == 0 {
            format!("/made.up{token}.Service/Method{token}")
        } else {
            format!("/{SERVICE}/Method{token}")
        };
        grpc.ready().await.expect("the channel is ready");
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                PathAndQuery::try_from(path.as_str()).expect("a path"),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .expect_err("a path not served");
        let expected = if i % 2 == 0 {
            Code::Unimplemented
        } else {
            Code::Unauthenticated
        };
        assert_eq!(status.code(), expected, "{path}: {status:?}");
    }

    let (_, _, after) = scrape(metrics).await;
    eprintln!("GET /metrics after {CALLS} calls to made-up paths:\n{after}");
    let samples = parse(&after);
    let unknown = |code: &str| {
        value(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "unknown"),
                ("grpc_method", "unknown"),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(unknown("Unimplemented"), (CALLS / 2) as f64);
    assert_eq!(unknown("Unauthenticated"), (CALLS / 2) as f64);
    assert_eq!(
        value(
            &samples,
            "grpc_server_handling_seconds_count",
            &[("grpc_service", "unknown"), ("grpc_method", "unknown")],
        ),
        CALLS as f64
    );

    // The only new method labels are `unknown`: no path leaks into a label.
    let new: Vec<_> = method_labels(&samples)
        .difference(&method_labels(&before_samples))
        .cloned()
        .collect();
    assert_eq!(new, [("unknown".to_owned(), "unknown".to_owned())]);
    assert!(!after.contains("made.up"), "a made-up path is in a label");
    // Two counter series and one histogram, not a hundred of each.
    let handled_series = |samples: &[Sample]| find(samples, "grpc_server_handled_total", &[]).len();
    assert_eq!(
        handled_series(&samples),
        handled_series(&before_samples) + 2
    );
    let growth = samples.len() - before_samples.len();
    assert!(
        growth <= 2 + BUCKET_LINES + 2,
        "{growth} new samples for {CALLS} calls to made-up paths"
    );
}

/// The sample lines of one histogram series: its buckets (with +Inf).
const BUCKET_LINES: usize = 15;

/// The status code names go-grpc-prometheus uses, by code number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

#[tokio::test]
async fn grpc_code_labels_are_the_canonical_code_names() {
    let (server, metrics) = serve_with_metrics().await;
    let mut admin = server.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    expect_code(
        admin.assign_to_me(assign(&case.id)).await,
        Code::FailedPrecondition,
    );
    expect_code(
        admin
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: "not a case".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    let mut anonymous = crate::process::client(server.addr, "not a token").await;
    expect_code(
        anonymous
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: case.id.clone(),
            })
            .await,
        Code::Unauthenticated,
    );
    // A watch the client gives up: the server counts it cancelled.
    let mut watcher = server.admin().await;
    let stream = open(&mut watcher, watch("", "", None)).await;
    drop(stream);
    drop(watcher);

    let watch_labels = [
        ("grpc_service", SERVICE),
        ("grpc_method", "WatchStateChanges"),
    ];
    let samples = scrape_until(metrics, "a cancelled watch", |samples| {
        !find(samples, "grpc_server_handled_total", &watch_labels).is_empty()
    })
    .await;
    let handled = |method: &str, code: &str| {
        total(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", SERVICE),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(handled("CreateInvoiceCase", "OK"), 1.0);
    assert_eq!(handled("AssignToMe", "FailedPrecondition"), 1.0);
    assert_eq!(handled("GetInvoiceCase", "InvalidArgument"), 1.0);
    assert_eq!(handled("GetInvoiceCase", "Unauthenticated"), 1.0);
    assert_eq!(handled("WatchStateChanges", "Canceled"), 1.0);
    for sample in find(&samples, "grpc_server_handled_total", &[]) {
        let code = sample.labels.get("grpc_code").expect("a grpc_code label");
        assert!(
            CODE_NAMES.contains(&code.as_str()),
            "grpc_code {code:?} is not a canonical code name: {sample:?}"
        );
    }
}

#[tokio::test]
async fn every_metric_family_has_help_and_type() {
    let (server, metrics) = serve_with_metrics().await;
    let mut admin = server.admin().await;
    let mut watcher = server.admin().await;
    let mut stream = open(&mut watcher, watch("", "", None)).await;
    create(&mut admin, "ACME", 1).await;
    read_events(&mut stream, 1).await;

    let (_, _, body) = scrape(metrics).await;
    eprintln!("GET /metrics:\n{body}");
    let comment = |kind: &str| -> BTreeMap<String, String> {
        body.lines()
            .filter_map(|l| l.strip_prefix(&format!("# {kind} ")))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, text)| (name.to_owned(), text.trim().to_owned()))
            .collect()
    };
    let help = comment("HELP");
    let types = comment("TYPE");
    let families: std::collections::BTreeSet<String> = parse(&body)
        .into_iter()
        .map(|sample| {
            let name = sample.name;
            if types.contains_key(&name) {
                return name;
            }
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| types.get(*base).map(String::as_str) == Some("histogram"))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{name}: no # TYPE line"))
        })
        .collect();
    for family in [
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
        "invoice_cases_transitions_total",
        "invoice_cases_watch_streams",
        "invoice_cases_event_delivery_lag_seconds",
        "invoice_cases_db_pool_connections",
        "invoice_cases_db_pool_waiting",
    ] {
        assert!(families.contains(family), "{family} is not exposed");
    }
    for family in families.iter().chain(types.keys()) {
        let text = help.get(family).map(String::as_str).unwrap_or_default();
        assert!(!text.is_empty(), "{family}: no # HELP line");
    }
}

#[tokio::test]
async fn transitions_count_committed_actions_once_by_their_event_name() {
    let (server, metrics) = serve_with_metrics().await;
    let mut admin = server.admin().await;
    let transitions = |samples: &[Sample], action: &str| {
        total(
            samples,
            "invoice_cases_transitions_total",
            &[("action", action)],
        )
    };

    // A create, replayed with its request id.
    let create_request = pb::CreateInvoiceCaseRequest {
        invoice_case: Some(new_case("ACME", 1)),
        request_id: Uuid::new_v4().to_string(),
        comment: String::new(),
    };
    let case = ok(admin.create_invoice_case(create_request.clone()).await);
    let again = ok(admin.create_invoice_case(create_request).await);
    assert_eq!(again.id, case.id, "the replay answers the first reply");
    let (_, _, body) = scrape(metrics).await;
    let before = parse(&body);
    assert_eq!(transitions(&before, "CREATE"), 1.0, "{body}");
    assert_eq!(transitions(&before, "SUBMIT"), 0.0, "{body}");

    // A submit, replayed with its request id, then refused.
    let submit_request = pb::SubmitCaseRequest {
        case_id: case.id.clone(),
        request_id: Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let submitted = ok(admin.submit_case(submit_request.clone()).await);
    let replayed = ok(admin.submit_case(submit_request).await);
    assert_eq!(
        replayed.etag, submitted.etag,
        "the replay answers the first reply"
    );
    expect_code(
        admin.submit_case(submit(&case.id)).await,
        Code::FailedPrecondition,
    );

    let (_, _, body) = scrape(metrics).await;
    eprintln!("GET /metrics:\n{body}");
    let after = parse(&body);
    assert_eq!(
        transitions(&after, "SUBMIT") - transitions(&before, "SUBMIT"),
        1.0,
        "one committed SUBMIT; the replay and the refusal do not count"
    );
    assert_eq!(transitions(&after, "CREATE"), 1.0);
    // The action names of the events, nothing else.
    for sample in find(&after, "invoice_cases_transitions_total", &[]) {
        let action = sample.labels.get("action").expect("an action label");
        assert!(
            ["CREATE", "SUBMIT"].contains(&action.as_str()),
            "action {action:?}: {sample:?}"
        );
    }
    // The calls themselves all succeeded, and are counted as calls.
    assert_eq!(
        total(
            &after,
            "grpc_server_handled_total",
            &[("grpc_method", "SubmitCase"), ("grpc_code", "OK")]
        ),
        2.0
    );
    // The history agrees: one SUBMIT event.
    let events = history(&mut admin, &case.id).await;
    let submits = events
        .iter()
        .filter(|e| e.action() == pb::state_change_event::Action::Submit)
        .count();
    assert_eq!(submits, 1);
}

#[tokio::test]
async fn the_prometheus_endpoint_counts_calls_transitions_streams_and_connections() {
    let mut options = Options::owning(cluster().new_database());
    options.metrics = true;
    let server = Binary::start(options).await;
    let metrics = server.metrics.expect("a metrics address");
    let mut admin = server.admin().await;
    let mut watcher = server.admin().await;
    let mut stream = open(&mut watcher, watch("", "", None)).await;

    let case = create(&mut admin, "ACME", 2).await;
    ok(admin.submit_case(submit(&case.id)).await);
    expect_code(
        admin.submit_case(submit(&case.id)).await,
        Code::FailedPrecondition,
    );
    ok(admin.assign_to_me(assign(&case.id)).await);
    // The stream delivered the three events: the reader published them.
    let events = read_events(&mut stream, 3).await;
    assert_eq!(events.len(), 3);

    let (status, content_type, body) = scrape(metrics).await;
    eprintln!("GET /metrics -> {status} ({content_type})\n{body}");
    assert!(status.contains(" 200"), "{status}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let samples = parse(&body);

    let handled = |method: &str, code: &str| {
        value(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", SERVICE),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(handled("CreateInvoiceCase", "OK"), 1.0);
    assert_eq!(handled("SubmitCase", "OK"), 1.0);
    assert_eq!(handled("SubmitCase", "FailedPrecondition"), 1.0);
    assert_eq!(handled("AssignToMe", "OK"), 1.0);

    // The latency histogram of SubmitCase: cumulative buckets up to +Inf.
    let labels = [("grpc_service", SERVICE), ("grpc_method", "SubmitCase")];
    let mut buckets: Vec<(f64, f64)> =
        find(&samples, "grpc_server_handling_seconds_bucket", &labels)
            .iter()
            .map(|s| {
                let le = s.labels.get("le").expect("le label");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le")
                };
                (le, s.value)
            })
            .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() >= 10, "latency buckets: {buckets:?}");
    assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative buckets: {buckets:?}"
    );
    assert_eq!(
        buckets.last().map(|b| b.1),
        Some(2.0),
        "two SubmitCase calls"
    );
    assert_eq!(
        value(&samples, "grpc_server_handling_seconds_count", &labels),
        2.0
    );
    assert!(value(&samples, "grpc_server_handling_seconds_sum", &labels) > 0.0);

    // Committed actions only (the refused SubmitCase is not one), by the
    // action names the events carry.
    let transitions = |action: &str| {
        value(
            &samples,
            "invoice_cases_transitions_total",
            &[("action", action)],
        )
    };
    assert_eq!(transitions("CREATE"), 1.0);
    assert_eq!(transitions("SUBMIT"), 1.0);
    assert_eq!(transitions("ASSIGN_TO_ME"), 1.0);

    assert_eq!(
        value(&samples, "invoice_cases_watch_streams", &[]),
        1.0,
        "one stream open"
    );
    assert_eq!(
        value(
            &samples,
            "invoice_cases_event_delivery_lag_seconds_count",
            &[]
        ),
        3.0,
        "one lag observation per event"
    );
    assert!(
        !find(
            &samples,
            "invoice_cases_event_delivery_lag_seconds_bucket",
            &[]
        )
        .is_empty(),
        "the lag is a histogram"
    );
    let pool = |state: &str| {
        value(
            &samples,
            "invoice_cases_db_pool_connections",
            &[("state", state)],
        )
    };
    assert_eq!(pool("max"), 16.0, "--db-pool-size default");
    assert!(pool("idle") >= 1.0, "connections were opened and returned");
    assert!(pool("in_use") >= 0.0 && pool("in_use") <= 16.0);

    // The stream closes: the gauge follows.
    drop(stream);
    drop(watcher);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, body) = scrape(metrics).await;
        let open = value(&parse(&body), "invoice_cases_watch_streams", &[]);
        if open == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "invoice_cases_watch_streams is still {open} after the client left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn edits_count_as_update_transitions_and_an_edit_that_changes_nothing_does_not() {
    let (server, metrics) = serve_with_metrics().await;
    let mut admin = server.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let mask = |path: &str| {
        Some(prost_types::FieldMask {
            paths: vec![path.to_owned()],
        })
    };
    let edit = pb::UpdateInvoiceCaseRequest {
        case_id: case.id.clone(),
        invoice_case: Some(pb::InvoiceCase {
            priority: pb::invoice_case::Priority::High.into(),
            ..Default::default()
        }),
        update_mask: mask("priority"),
        ..Default::default()
    };
    let edited = ok(admin.update_invoice_case(edit.clone()).await);
    // The same again changes nothing: an answer, no transition.
    assert_eq!(ok(admin.update_invoice_case(edit).await), edited);
    ok(admin
        .update_case_line(pb::UpdateCaseLineRequest {
            case_id: case.id.clone(),
            line_id: case.lines[0].id.clone(),
            line: Some(pb::CaseLine {
                disputed_amount: "1.00".into(),
                ..Default::default()
            }),
            update_mask: mask("disputed_amount"),
            ..Default::default()
        })
        .await);
    let calls = |samples: &[Sample], method: &str| {
        total(
            samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", SERVICE),
                ("grpc_method", method),
                ("grpc_code", "OK"),
            ],
        )
    };
    let samples = scrape_until(metrics, "the edits' calls", |s| {
        calls(s, "UpdateInvoiceCase") == 2.0 && calls(s, "UpdateCaseLine") == 1.0
    })
    .await;
    assert_eq!(
        total(
            &samples,
            "invoice_cases_transitions_total",
            &[("action", "UPDATE")]
        ),
        2.0,
        "two edits changed something, one did not"
    );
}

#[tokio::test]
async fn subscription_rpcs_are_counted_under_their_names() {
    let (server, metrics) = serve_with_metrics().await;
    let mut admin = server.admin().await;
    create(&mut admin, "ACME", 1).await;
    let mut stream = open(
        &mut admin,
        pb::WatchStateChangesRequest {
            subscription: "metered".into(),
            ..watch(
                "",
                "",
                Some(pb::watch_state_changes_request::Start::FromBeginning(
                    pb::watch_state_changes_request::FromBeginning {},
                )),
            )
        },
    )
    .await;
    let event = read_events(&mut stream, 1).await.remove(0);
    drop(stream);
    ok(admin
        .acknowledge_state_changes(pb::AcknowledgeStateChangesRequest {
            subscription: "metered".into(),
            cursor: event.cursor,
        })
        .await);
    ok(admin
        .list_subscriptions(pb::ListSubscriptionsRequest::default())
        .await);
    for code in [Code::Ok, Code::NotFound] {
        let result = admin
            .delete_subscription(pb::DeleteSubscriptionRequest {
                name: "metered".into(),
            })
            .await;
        assert_eq!(result.map_or_else(|s| s.code(), |_| Code::Ok), code);
    }
    let handled = |samples: &[Sample], method: &str, code: &str| {
        total(
            samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", SERVICE),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    let samples = scrape_until(metrics, "the subscription calls", |samples| {
        handled(samples, "DeleteSubscription", "NotFound") == 1.0
    })
    .await;
    assert_eq!(handled(&samples, "AcknowledgeStateChanges", "OK"), 1.0);
    assert_eq!(handled(&samples, "ListSubscriptions", "OK"), 1.0);
    assert_eq!(handled(&samples, "DeleteSubscription", "OK"), 1.0);
}
