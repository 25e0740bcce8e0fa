//! Hostile input through the real server: arbitrary request messages
//! (proptest) and arbitrary bytes as protobuf bodies. The server must not
//! panic, must keep answering, must answer with client-error codes only,
//! and must not show internals (SQL, source paths, panics) in messages.

use std::time::Duration;

use invoice_cases::pb::{
    self,
    watch_state_changes_request::{FromBeginning, FromNow, Start, WithSnapshot},
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use prost::Message;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::{
    helpers::{Client, TestApp, create, spawn_app},
    support::{RawCodec, assert_healthy, case_in, leak_in, raw_unary},
};

/// Strings that look like attacks, free of the words the leak check looks
/// for (the server may quote a caller's input back; it must not add SQL).
const INJECTIONS: [&str; 16] = [
    "' OR '1'='1",
    "'; DROP TABLE invoice_cases; --",
    "\" OR \"\"=\"",
    "1; --",
    "state = NEW' OR 1=1 --",
    "account_id = \"a\" OR \"1\"=\"1\"",
    "%s%s%s%n",
    "${jndi:ldap://example.invalid/a}",
    "../../../../etc/passwd",
    "<script>alert(1)</script>",
    "\u{0}",
    "\\",
    "'",
    "\"",
    "$1",
    "AND AND AND = = !=",
];

/// Characters that often break things.
const SPECIAL: [char; 16] = [
    '\0',
    '\n',
    '\r',
    '\t',
    '\u{7}',
    '\u{1b}',
    '\u{7f}',
    '\u{85}',
    '\u{a0}',
    '\u{200b}',
    '\u{202e}',
    '\u{feff}',
    '\u{fffd}',
    '\u{10ffff}',
    '"',
    '\'',
];

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        6 => prop::collection::vec(any::<char>(), 0..48).prop_map(String::from_iter),
        3 => prop::collection::vec(prop::sample::select(SPECIAL.to_vec()), 1..24)
            .prop_map(String::from_iter),
        3 => prop::sample::select(INJECTIONS.to_vec()).prop_map(str::to_owned),
        2 => "[A-Za-z0-9 =!\"'_.\\\\-]{0,40}",
        1 => (1usize..40_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
    ]
    .prop_filter("no word the leak check looks for", |s| leak_in(s).is_none())
    .boxed()
}

fn enum_value() -> BoxedStrategy<i32> {
    prop_oneof![4 => -1i32..9, 1 => any::<i32>()].boxed()
}

fn amount() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[0-9]{1,20}(\\.[0-9]{0,6})?",
        1 => Just("-1".to_owned()),
        1 => Just("1e3".to_owned()),
        1 => Just("NaN".to_owned()),
        1 => Just(" 1".to_owned()),
        1 => Just("1,5".to_owned()),
        2 => text(),
    ]
    .boxed()
}

fn uuid_text() -> BoxedStrategy<String> {
    any::<u128>()
        .prop_map(|n| Uuid::from_u128(n).to_string())
        .boxed()
}

/// Ids of real cases and lines, so that some requests reach the store.
#[derive(Debug, Clone)]
struct Known {
    cases: Vec<String>,
    lines: Vec<String>,
}

fn case_id(known: &Known) -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(known.cases.clone()),
        2 => uuid_text(),
        1 => (0u32..10_000_000).prop_map(|n| format!("INVCS{n:07}")),
        3 => text(),
    ]
    .boxed()
}

fn line_id(known: &Known) -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(known.lines.clone()),
        2 => uuid_text(),
        1 => (0u32..10_000_000).prop_map(|n| format!("INVCSL{n:07}")),
        3 => text(),
    ]
    .boxed()
}

fn request_id() -> BoxedStrategy<String> {
    prop_oneof![2 => Just(String::new()), 1 => uuid_text(), 1 => text()].boxed()
}

fn etag() -> BoxedStrategy<String> {
    prop_oneof![3 => Just(String::new()), 1 => "[0-9]{1,4}", 1 => text()].boxed()
}

fn line() -> BoxedStrategy<pb::CaseLine> {
    (
        (text(), text(), enum_value(), text(), text(), text()),
        (amount(), amount(), proptest::option::of(amount())),
        (
            proptest::option::of(amount()),
            proptest::option::of(amount()),
            enum_value(),
            text(),
        ),
    )
        .prop_map(
            |(
                (id, number, dispute_code, invoice_line_ref, invoice_number, short_description),
                (invoiced_amount, disputed_amount, approved_amount),
                (invoiced_quantity, disputed_quantity, resolution_code, resolution_notes),
            )| pb::CaseLine {
                id,
                number,
                state: 0,
                dispute_code,
                invoice_line_ref,
                invoice_number,
                short_description,
                invoiced_amount,
                disputed_amount,
                approved_amount,
                invoiced_quantity,
                disputed_quantity,
                resolution_code,
                resolution_notes,
                create_time: None,
                update_time: None,
            },
        )
        .boxed()
}

fn invoice_case() -> BoxedStrategy<pb::InvoiceCase> {
    (
        (text(), text(), enum_value(), text(), text()),
        (enum_value(), text(), text(), enum_value(), text()),
        (text(), enum_value(), text(), text()),
        prop::collection::vec(line(), 0..4),
    )
        .prop_map(
            |(
                (id, number, state, account_id, contact_id),
                (request_source, invoice_number, short_description, priority, description),
                (currency_code, resolution_code, assigned_to, etag),
                lines,
            )| pb::InvoiceCase {
                id,
                number,
                state,
                account_id,
                contact_id,
                invoice_number,
                request_source,
                short_description,
                description,
                priority,
                currency_code,
                assigned_to,
                resolution_code,
                etag,
                lines,
                ..Default::default()
            },
        )
        .boxed()
}

/// One hostile request.
#[derive(Debug, Clone)]
enum Hostile {
    Create(pb::CreateInvoiceCaseRequest),
    AddLine(pb::AddCaseLineRequest),
    SetLineState(pb::SetLineStateRequest),
    Propose(pb::ProposeSolutionRequest),
    List(pb::ListInvoiceCasesRequest),
    Get(pb::GetInvoiceCaseRequest),
    History(pb::ListStateChangesRequest),
    Watch(pb::WatchStateChangesRequest),
    Acknowledge(pb::AcknowledgeStateChangesRequest),
    ListSubscriptions(pb::ListSubscriptionsRequest),
    DeleteSubscription(pb::DeleteSubscriptionRequest),
}

impl Hostile {
    fn encoded_len(&self) -> usize {
        match self {
            Hostile::Create(r) => r.encoded_len(),
            Hostile::AddLine(r) => r.encoded_len(),
            Hostile::SetLineState(r) => r.encoded_len(),
            Hostile::Propose(r) => r.encoded_len(),
            Hostile::List(r) => r.encoded_len(),
            Hostile::Get(r) => r.encoded_len(),
            Hostile::History(r) => r.encoded_len(),
            Hostile::Watch(r) => r.encoded_len(),
            Hostile::Acknowledge(r) => r.encoded_len(),
            Hostile::ListSubscriptions(r) => r.encoded_len(),
            Hostile::DeleteSubscription(r) => r.encoded_len(),
        }
    }

    /// Whether the request carries an etag (a stale one is ABORTED).
    fn has_etag(&self) -> bool {
        match self {
            Hostile::AddLine(r) => !r.etag.is_empty(),
            Hostile::SetLineState(r) => !r.etag.is_empty(),
            Hostile::Propose(r) => !r.etag.is_empty(),
            _ => false,
        }
    }

    async fn send(self, client: &mut Client) -> Result<(), Status> {
        match self {
            Hostile::Create(r) => client.create_invoice_case(r).await.map(drop),
            Hostile::AddLine(r) => client.add_case_line(r).await.map(drop),
            Hostile::SetLineState(r) => client.set_line_state(r).await.map(drop),
            Hostile::Propose(r) => client.propose_solution(r).await.map(drop),
            Hostile::List(r) => client.list_invoice_cases(r).await.map(drop),
            Hostile::Get(r) => client.get_invoice_case(r).await.map(drop),
            Hostile::History(r) => client.list_state_changes(r).await.map(drop),
            Hostile::Acknowledge(r) => client.acknowledge_state_changes(r).await.map(drop),
            Hostile::ListSubscriptions(r) => client.list_subscriptions(r).await.map(drop),
            Hostile::DeleteSubscription(r) => client.delete_subscription(r).await.map(drop),
            Hostile::Watch(r) => {
                // A stream that opens must also start well: its first
                // message (a progress message at the latest) is not an
                // error.
                let mut stream = client.watch_state_changes(r).await?.into_inner();
                match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                    Ok(Ok(Some(_))) => Ok(()),
                    Ok(Ok(None)) => Err(Status::unknown("the stream ended without a status")),
                    Ok(Err(status)) => Err(status),
                    Err(_) => Err(Status::unknown("the stream sent nothing for 5 s")),
                }
            }
        }
    }
}

fn hostile(known: &Known) -> BoxedStrategy<Hostile> {
    let create = (invoice_case(), request_id(), text())
        .prop_map(|(case, request_id, comment)| {
            Hostile::Create(pb::CreateInvoiceCaseRequest {
                invoice_case: Some(case),
                request_id,
                comment,
            })
        })
        .boxed();
    let add_line = (
        case_id(known),
        proptest::option::of(line()),
        etag(),
        request_id(),
        text(),
    )
        .prop_map(|(case_id, line, etag, request_id, comment)| {
            Hostile::AddLine(pb::AddCaseLineRequest {
                case_id,
                line,
                etag,
                request_id,
                comment,
            })
        })
        .boxed();
    let set_line_state = (
        (case_id(known), line_id(known), enum_value(), enum_value()),
        (text(), proptest::option::of(amount())),
        (etag(), request_id(), text()),
    )
        .prop_map(
            |(
                (case_id, line_id, state, resolution_code),
                (resolution_notes, approved_amount),
                (etag, request_id, comment),
            )| {
                Hostile::SetLineState(pb::SetLineStateRequest {
                    case_id,
                    line_id,
                    state,
                    resolution_code,
                    resolution_notes,
                    approved_amount,
                    etag,
                    request_id,
                    comment,
                })
            },
        )
        .boxed();
    let outcome = (
        line_id(known),
        enum_value(),
        proptest::option::of(amount()),
        enum_value(),
        text(),
    )
        .prop_map(
            |(line_id, outcome, approved_amount, resolution_code, resolution_notes)| {
                pb::propose_solution_request::LineOutcome {
                    line_id,
                    outcome,
                    approved_amount,
                    resolution_code,
                    resolution_notes,
                }
            },
        );
    let propose = (
        (case_id(known), etag(), request_id(), text()),
        (enum_value(), text(), enum_value()),
        prop::collection::vec(outcome, 0..4),
    )
        .prop_map(
            |(
                (case_id, etag, request_id, comment),
                (resolution_code, resolution_notes, default_outcome),
                line_outcomes,
            )| {
                Hostile::Propose(pb::ProposeSolutionRequest {
                    case_id,
                    etag,
                    request_id,
                    comment,
                    resolution_code,
                    resolution_notes,
                    default_outcome,
                    line_outcomes,
                })
            },
        )
        .boxed();
    let list = (any::<i32>(), text(), text())
        .prop_map(|(page_size, page_token, filter)| {
            Hostile::List(pb::ListInvoiceCasesRequest {
                page_size,
                page_token,
                filter,
            })
        })
        .boxed();
    let get = case_id(known)
        .prop_map(|case_id| Hostile::Get(pb::GetInvoiceCaseRequest { case_id }))
        .boxed();
    let history = (case_id(known), any::<i32>(), text())
        .prop_map(|(case_id, page_size, page_token)| {
            Hostile::History(pb::ListStateChangesRequest {
                case_id,
                page_size,
                page_token,
            })
        })
        .boxed();
    let start = prop_oneof![
        Just(None),
        text().prop_map(|c| Some(Start::AfterCursor(c))),
        "[A-Za-z0-9_-]{0,30}".prop_map(|c| Some(Start::AfterCursor(c))),
        Just(Some(Start::FromBeginning(FromBeginning {}))),
        Just(Some(Start::WithSnapshot(WithSnapshot {}))),
        Just(Some(Start::FromNow(FromNow {}))),
    ];
    let watch_case = prop_oneof![Just(String::new()), case_id(known)];
    let watch = (watch_case, text(), start, subscription())
        .prop_map(|(case_id, account_id, start, subscription)| {
            Hostile::Watch(pb::WatchStateChangesRequest {
                case_id,
                account_id,
                start,
                subscription,
            })
        })
        .boxed();
    let cursor = prop_oneof![text(), "[A-Za-z0-9_-]{0,40}"];
    let acknowledge = (subscription(), cursor)
        .prop_map(|(subscription, cursor)| {
            Hostile::Acknowledge(pb::AcknowledgeStateChangesRequest {
                subscription,
                cursor,
            })
        })
        .boxed();
    let list_subscriptions = (any::<i32>(), text())
        .prop_map(|(page_size, page_token)| {
            Hostile::ListSubscriptions(pb::ListSubscriptionsRequest {
                page_size,
                page_token,
            })
        })
        .boxed();
    let delete_subscription = subscription()
        .prop_map(|name| Hostile::DeleteSubscription(pb::DeleteSubscriptionRequest { name }))
        .boxed();
    prop_oneof![
        create,
        add_line,
        set_line_state,
        propose,
        list,
        get,
        history,
        watch,
        acknowledge,
        list_subscriptions,
        delete_subscription
    ]
    .boxed()
}

/// A subscription name: none, one of a few (so that the owner's limit is
/// never reached), or any text.
fn subscription() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        prop::sample::select(vec!["hostile-a", "hostile.b", "hostile_c"]).prop_map(String::from),
        text(),
    ]
    .boxed()
}

/// A runtime for a test that drives proptest (which is synchronous).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        // A failure is reported within half a minute of shrinking.
        max_shrink_time: 30_000,
        ..Config::default()
    }
}

/// Cases in several states, and their ids and numbers.
async fn fixtures(app: &TestApp) -> Known {
    use pb::invoice_case::State as S;
    let mut admin = app.admin().await;
    let mut cases = Vec::new();
    for state in [
        S::Draft,
        S::New,
        S::WorkInProgress,
        S::AwaitingInfo,
        S::Resolved,
    ] {
        cases.push(case_in(&mut admin, "ACME", state).await);
    }
    cases.push(create(&mut admin, "GLOBEX", 3).await);
    Known {
        cases: cases
            .iter()
            .flat_map(|c| [c.id.clone(), c.number.clone()])
            .collect(),
        lines: cases
            .iter()
            .flat_map(|c| &c.lines)
            .flat_map(|l| [l.id.clone(), l.number.clone()])
            .collect(),
    }
}

/// Whether an answer is one a hostile request may get.
fn judge(result: &Result<(), Status>, etag_given: bool) -> Result<(), TestCaseError> {
    let Err(status) = result else {
        return Ok(());
    };
    let code = status.code();
    let allowed = matches!(
        code,
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound
    ) || (etag_given && code == Code::Aborted);
    prop_assert!(allowed, "unexpected code {:?}: {:?}", code, status);
    prop_assert!(
        leak_in(status.message()).is_none(),
        "the message shows internals: {:?}",
        status
    );
    Ok(())
}

#[test]
fn arbitrary_requests_get_client_errors_only() {
    let rt = runtime();
    let app = rt.block_on(spawn_app());
    let known = rt.block_on(fixtures(&app));
    let client = rt.block_on(app.admin());
    let mut runner = TestRunner::new(config(128));
    runner
        .run(&hostile(&known), |request| {
            // Huge strings stay within the message limit (4 MiB).
            prop_assume!(request.encoded_len() < 3 * 1024 * 1024);
            let etag_given = request.has_etag();
            let mut client = client.clone();
            let result = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), request.send(&mut client))
                    .await
                    .unwrap_or_else(|_| Err(Status::unknown("no answer in 20 s")))
            });
            judge(&result, etag_given)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let mut admin = app.admin().await;
        assert_healthy(&mut admin, &known.cases[0]).await;
    });
}

#[test]
fn hostile_filters_ids_and_tokens_do_not_reach_sql() {
    // Attack strings with SQL words in them: the message may quote the
    // input back, so the check first takes the input out of the message.
    let payloads = [
        "state = NEW' OR '1'='1",
        "state = NEW; SELECT * FROM invoice_cases",
        "account_id = \"x' UNION SELECT password FROM pg_shadow --\"",
        "account_id = ''; DELETE FROM invoice_cases; --",
        "priority = 1 OR 1=1",
        "state = \"NEW\\\" OR \\\"1\\\"=\\\"1\"",
        "assigned_to = \"') OR pg_sleep(10) IS NULL --\"",
        "state = NEW AND AND",
        "column = 1",
        "relation != x",
        "' UPDATE invoice_cases SET state = 'CLOSED",
    ];
    let rt = runtime();
    let app = rt.block_on(spawn_app());
    let known = rt.block_on(fixtures(&app));
    rt.block_on(async {
        let mut admin = app.admin().await;
        for payload in payloads {
            let results = [
                admin
                    .list_invoice_cases(pb::ListInvoiceCasesRequest {
                        filter: payload.to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                admin
                    .list_invoice_cases(pb::ListInvoiceCasesRequest {
                        page_token: payload.to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                admin
                    .get_invoice_case(pb::GetInvoiceCaseRequest {
                        case_id: payload.to_owned(),
                    })
                    .await
                    .map(drop),
                admin
                    .watch_state_changes(pb::WatchStateChangesRequest {
                        start: Some(Start::AfterCursor(payload.to_owned())),
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                admin
                    .list_state_changes(pb::ListStateChangesRequest {
                        case_id: known.cases[0].clone(),
                        page_size: 0,
                        page_token: payload.to_owned(),
                    })
                    .await
                    .map(drop),
            ];
            for (i, result) in results.into_iter().enumerate() {
                let status = match result {
                    // A filter may be valid (a quoted value is a value).
                    Ok(()) if i == 0 => continue,
                    Ok(()) => panic!("{payload}: accepted as an id, token or cursor"),
                    Err(status) => status,
                };
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{payload}: {status:?}"
                );
                let message = without_echo(status.message(), payload);
                assert!(
                    leak_in(&message).is_none(),
                    "{payload}: the message shows internals: {status:?}"
                );
            }
        }
        // An injection inside a quoted value is only a value: nothing
        // matches, and every case is still there.
        let page = admin
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                filter: "account_id = \"ACME' OR '1'='1\"".into(),
                ..Default::default()
            })
            .await
            .expect("a quoted value is a value")
            .into_inner();
        assert!(page.invoice_cases.is_empty(), "{page:?}");
        assert_healthy(&mut admin, &known.cases[0]).await;
        let all = admin
            .list_invoice_cases(pb::ListInvoiceCasesRequest::default())
            .await
            .expect("list")
            .into_inner();
        assert_eq!(all.invoice_cases.len(), 6);
    });
}

#[tokio::test]
async fn a_nul_character_in_a_filter_or_watch_value_is_a_client_error() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let mut wrong = Vec::new();
    for filter in [
        "account_id = \"\u{0}\"",
        "account_id = a\u{0}b",
        "assigned_to = \"x\u{0}\"",
        "account_id != '\u{0}'",
    ] {
        // Either no case matches, or the filter is refused; never INTERNAL.
        let result = admin
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                filter: filter.to_owned(),
                ..Default::default()
            })
            .await;
        if let Err(status) = result
            && status.code() != Code::InvalidArgument
        {
            wrong.push(format!("filter {filter:?}: {}", short(&status)));
        }
    }
    for start in [
        None,
        Some(Start::FromBeginning(FromBeginning {})),
        Some(Start::WithSnapshot(WithSnapshot {})),
    ] {
        let result = Hostile::Watch(pb::WatchStateChangesRequest {
            case_id: String::new(),
            account_id: "A\u{0}".into(),
            start: start.clone(),
            subscription: String::new(),
        })
        .send(&mut admin)
        .await;
        if let Err(status) = result
            && status.code() != Code::InvalidArgument
        {
            wrong.push(format!(
                "watch of account \"A\\0\" {start:?}: {}",
                short(&status)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "a NUL character is not refused as INVALID_ARGUMENT:\n{}",
        wrong.join("\n")
    );
    assert_healthy(&mut admin, &case.id).await;
}

/// The longest message and details a refusal of one field may have: the
/// message may quote a short prefix of the input, not all of it (a status
/// travels in HTTP/2 trailers, which clients limit to 16 KiB or less).
const MAX_MESSAGE: usize = 1024;
const MAX_DETAILS: usize = 4096;

#[tokio::test]
async fn huge_invalid_values_get_small_refusals() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let wip = case_in(&mut admin, "ACME", pb::invoice_case::State::WorkInProgress).await;
    let draft = create(&mut admin, "ACME", 1).await;
    let huge = "x".repeat(100_000);
    let controls = "\u{1}".repeat(2_000);

    let mut calls: Vec<(&str, Hostile)> = Vec::new();
    let mut case = crate::helpers::new_case("ACME", 1);
    case.currency_code = huge.clone();
    calls.push(("currency_code", create_case(case)));
    for (field, edit) in [
        ("invoiced_amount", 0),
        ("disputed_amount", 1),
        ("invoiced_quantity", 2),
        ("disputed_quantity", 3),
    ] {
        let mut case = crate::helpers::new_case("ACME", 1);
        let line = &mut case.lines[0];
        match edit {
            0 => line.invoiced_amount = huge.clone(),
            1 => line.disputed_amount = huge.clone(),
            2 => line.invoiced_quantity = Some(huge.clone()),
            _ => line.disputed_quantity = Some(huge.clone()),
        }
        calls.push((field, create_case(case)));
    }
    let mut line = crate::helpers::line("huge amount");
    line.invoiced_amount = huge.clone();
    calls.push((
        "AddCaseLine line.invoiced_amount",
        Hostile::AddLine(pb::AddCaseLineRequest {
            case_id: draft.id.clone(),
            line: Some(line),
            ..Default::default()
        }),
    ));
    let mut set = crate::helpers::set_line(
        &wip.id,
        &wip.lines[0].id,
        pb::case_line::State::ResolvedAccepted,
    );
    set.approved_amount = Some(huge.clone());
    calls.push(("SetLineState approved_amount", Hostile::SetLineState(set)));
    let mut propose = crate::helpers::propose_all(&wip.id);
    propose.line_outcomes = vec![pb::propose_solution_request::LineOutcome {
        line_id: wip.lines[0].id.clone(),
        outcome: pb::case_line::State::ResolvedAccepted.into(),
        approved_amount: Some(huge.clone()),
        ..Default::default()
    }];
    calls.push(("ProposeSolution approved_amount", Hostile::Propose(propose)));
    for (what, filter) in [
        ("filter word", controls.clone()),
        ("filter state", format!("state = {controls}")),
        ("filter priority", format!("priority = {controls}")),
        ("filter field", format!("{controls} = 1")),
    ] {
        calls.push((
            what,
            Hostile::List(pb::ListInvoiceCasesRequest {
                filter,
                ..Default::default()
            }),
        ));
    }
    calls.push((
        "case_id",
        Hostile::Get(pb::GetInvoiceCaseRequest {
            case_id: huge.clone(),
        }),
    ));
    calls.push((
        "after_cursor",
        Hostile::Watch(pb::WatchStateChangesRequest {
            start: Some(Start::AfterCursor(huge.clone())),
            ..Default::default()
        }),
    ));

    let mut wrong = Vec::new();
    for (what, call) in calls {
        let status = call.send(&mut admin).await.expect_err("an invalid value");
        if status.code() != Code::InvalidArgument
            || status.message().len() > MAX_MESSAGE
            || status.details().len() > MAX_DETAILS
        {
            wrong.push(format!(
                "{what}: {} and {} bytes of details",
                short(&status),
                status.details().len()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "refusals that are not a short INVALID_ARGUMENT:\n{}",
        wrong.join("\n")
    );
    assert_healthy(&mut admin, &wip.id).await;
    assert_eq!(crate::helpers::get(&mut admin, &wip.id).await, wip);
    assert_eq!(crate::helpers::get(&mut admin, &draft.id).await, draft);
}

fn create_case(case: pb::InvoiceCase) -> Hostile {
    Hostile::Create(pb::CreateInvoiceCaseRequest {
        invoice_case: Some(case),
        request_id: String::new(),
        comment: String::new(),
    })
}

/// A status, its message cut to 300 characters.
fn short(status: &Status) -> String {
    let message: String = status.message().chars().take(300).collect();
    format!(
        "{:?} {message:?} ({} bytes of message)",
        status.code(),
        status.message().len()
    )
}

/// `message` without the parts of `input` a message may quote back: the
/// input, its tokens, and their quoted (Debug) forms.
fn without_echo(message: &str, input: &str) -> String {
    let mut pieces: Vec<String> = vec![input.to_owned(), format!("{input:?}")];
    let short: String = input.chars().take(80).collect();
    pieces.push(format!("{:?}", format!("{short}…")));
    for token in input.split(|c: char| c.is_whitespace() || "=!;()'\"".contains(c)) {
        if !token.is_empty() {
            pieces.push(format!("{token:?}"));
            pieces.push(token.to_owned());
        }
    }
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut message = message.to_owned();
    for piece in pieces {
        message = message.replace(&piece, "");
    }
    message
}

/// The methods of the service, with a check whether bytes decode as their
/// request.
type Decodes = fn(&[u8]) -> bool;

const METHODS: [(&str, Decodes); 19] = [
    ("CreateInvoiceCase", |b| {
        pb::CreateInvoiceCaseRequest::decode(b).is_ok()
    }),
    ("GetInvoiceCase", |b| {
        pb::GetInvoiceCaseRequest::decode(b).is_ok()
    }),
    ("ListInvoiceCases", |b| {
        pb::ListInvoiceCasesRequest::decode(b).is_ok()
    }),
    ("AddCaseLine", |b| pb::AddCaseLineRequest::decode(b).is_ok()),
    ("RemoveCaseLine", |b| {
        pb::RemoveCaseLineRequest::decode(b).is_ok()
    }),
    ("SubmitCase", |b| pb::SubmitCaseRequest::decode(b).is_ok()),
    ("AssignToMe", |b| pb::AssignToMeRequest::decode(b).is_ok()),
    ("AssignCase", |b| pb::AssignCaseRequest::decode(b).is_ok()),
    ("RequestInformation", |b| {
        pb::RequestInformationRequest::decode(b).is_ok()
    }),
    ("InformationReceived", |b| {
        pb::InformationReceivedRequest::decode(b).is_ok()
    }),
    ("ProposeSolution", |b| {
        pb::ProposeSolutionRequest::decode(b).is_ok()
    }),
    ("CloseCase", |b| pb::CloseCaseRequest::decode(b).is_ok()),
    ("CancelCase", |b| pb::CancelCaseRequest::decode(b).is_ok()),
    ("SetLineState", |b| {
        pb::SetLineStateRequest::decode(b).is_ok()
    }),
    ("ListStateChanges", |b| {
        pb::ListStateChangesRequest::decode(b).is_ok()
    }),
    ("WatchStateChanges", |b| {
        pb::WatchStateChangesRequest::decode(b).is_ok()
    }),
    ("AcknowledgeStateChanges", |b| {
        pb::AcknowledgeStateChangesRequest::decode(b).is_ok()
    }),
    ("ListSubscriptions", |b| {
        pb::ListSubscriptionsRequest::decode(b).is_ok()
    }),
    ("DeleteSubscription", |b| {
        pb::DeleteSubscriptionRequest::decode(b).is_ok()
    }),
];

/// Valid encodings of requests on real cases, to be corrupted.
fn valid_bodies(known: &Known) -> Vec<Vec<u8>> {
    let case_id = known.cases[0].clone();
    vec![
        pb::GetInvoiceCaseRequest {
            case_id: case_id.clone(),
        }
        .encode_to_vec(),
        pb::SubmitCaseRequest {
            case_id: case_id.clone(),
            comment: "a comment".into(),
            etag: "1".into(),
            request_id: Uuid::new_v4().to_string(),
        }
        .encode_to_vec(),
        pb::CreateInvoiceCaseRequest {
            invoice_case: Some(crate::helpers::new_case("ACME", 2)),
            request_id: String::new(),
            comment: String::new(),
        }
        .encode_to_vec(),
        pb::ListInvoiceCasesRequest {
            page_size: 5,
            page_token: String::new(),
            filter: "state = NEW".into(),
        }
        .encode_to_vec(),
    ]
}

fn body(known: &Known) -> BoxedStrategy<Vec<u8>> {
    let valid = valid_bodies(known);
    let corrupted = (
        prop::sample::select(valid),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    )
        .prop_map(|(mut bytes, flips)| {
            for (at, xor) in flips {
                let len = bytes.len();
                bytes[at % len] ^= xor.max(1);
            }
            bytes
        });
    prop_oneof![
        1 => Just(Vec::new()),
        4 => prop::collection::vec(any::<u8>(), 1..64),
        2 => prop::collection::vec(any::<u8>(), 64..4096),
        3 => corrupted,
        // Field tags with every wire type, including the invalid ones.
        2 => prop::collection::vec(
            prop_oneof![Just(0x0au8), Just(0x0b), Just(0x0f), Just(0x12), Just(0x80), Just(0xff), any::<u8>()],
            1..32,
        ),
    ]
    .boxed()
}

#[test]
fn arbitrary_bytes_as_request_bodies_are_invalid_argument() {
    let rt = runtime();
    let app = rt.block_on(spawn_app());
    let known = rt.block_on(fixtures(&app));
    let token = app.token("admin", &["admin"], None);
    let channel = rt.block_on(app.channel());
    let mut runner = TestRunner::new(config(128));
    let strategy = (0..METHODS.len(), body(&known));
    runner
        .run(&strategy, |(method, bytes)| {
            let (name, decodes) = METHODS[method];
            let decodes = decodes(&bytes);
            let result = rt.block_on(async {
                let call = async {
                    if name == "WatchStateChanges" {
                        raw_stream(channel.clone(), &token, bytes.clone()).await
                    } else {
                        raw_unary(channel.clone(), name, &token, bytes.clone())
                            .await
                            .map(drop)
                    }
                };
                tokio::time::timeout(Duration::from_secs(20), call)
                    .await
                    .unwrap_or_else(|_| Err(Status::unknown("no answer in 20 s")))
            });
            if decodes {
                // A normal answer to whatever the bytes say.
                let etag_possible = true;
                judge(&result, etag_possible)?;
            } else {
                let status = match &result {
                    Ok(()) => {
                        return Err(TestCaseError::fail(format!(
                            "{name}: bytes that are not a message were accepted"
                        )));
                    }
                    Err(status) => status,
                };
                prop_assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{}: {:?}",
                    name,
                    status
                );
                prop_assert!(leak_in(status.message()).is_none(), "{:?}", status);
                let violations = status
                    .get_details_bad_request()
                    .map(|bad| bad.field_violations)
                    .unwrap_or_default();
                prop_assert!(
                    !violations.is_empty(),
                    "{}: no BadRequest details: {:?}",
                    name,
                    status
                );
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));

    rt.block_on(async {
        let mut admin = app.admin().await;
        assert_healthy(&mut admin, &known.cases[0]).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "invoicecase.v1.InvoiceCaseService".into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            answer.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    });
}

/// WatchStateChanges with `body` as the request message.
async fn raw_stream(
    channel: tonic::transport::Channel,
    token: &str,
    body: Vec<u8>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let mut request = tonic::Request::new(prost::bytes::Bytes::from(body));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    grpc.server_streaming(
        request,
        http::uri::PathAndQuery::from_static(
            "/invoicecase.v1.InvoiceCaseService/WatchStateChanges",
        ),
        RawCodec,
    )
    .await
    .map(drop)
}

/// A health method with `body` as the request message, no token: Check's
/// answer, or Watch's first message.
async fn raw_health(
    channel: tonic::transport::Channel,
    method: &str,
    body: Vec<u8>,
) -> Result<prost::bytes::Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path = http::uri::PathAndQuery::try_from(format!("/grpc.health.v1.Health/{method}"))
        .expect("a path");
    let request = tonic::Request::new(prost::bytes::Bytes::from(body));
    if method == "Watch" {
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        stream
            .message()
            .await?
            .ok_or_else(|| Status::unknown("the stream ended without a message"))
    } else {
        grpc.unary(request, path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn health_bodies_that_are_not_messages_are_invalid_argument() {
    use tonic_health::pb::{
        HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    };

    let app = spawn_app().await;
    let channel = app.channel().await;
    let bodies: [&[u8]; 4] = [
        // A string field whose length runs past the end.
        &[0x0a, 0x05, b'a'],
        // A truncated varint tag.
        &[0xff],
        // A string that is not UTF-8.
        &[0x0a, 0x02, 0xc3, 0x28],
        // An end-group tag with no group.
        &[0x0c],
    ];
    let mut wrong = Vec::new();
    for method in ["Check", "Watch"] {
        for body in bodies {
            assert!(
                HealthCheckRequest::decode(body).is_err(),
                "{body:?} decodes"
            );
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                raw_health(channel.clone(), method, body.to_vec()),
            )
            .await
            .unwrap_or_else(|_| Err(Status::unknown("no answer in 10 s")));
            let status = match result {
                Ok(answer) => {
                    wrong.push(format!("{method} {body:?}: accepted: {answer:?}"));
                    continue;
                }
                Err(status) => status,
            };
            let violations = status
                .get_details_bad_request()
                .map(|bad| bad.field_violations)
                .unwrap_or_default();
            if status.code() != Code::InvalidArgument || violations.is_empty() {
                wrong.push(format!("{method} {body:?}: {}", short(&status)));
            }
            if leak_in(status.message()).is_some() {
                wrong.push(format!("{method} {body:?}: internals in {status:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "health calls with a malformed body that are not INVALID_ARGUMENT with a BadRequest:\n{}",
        wrong.join("\n")
    );

    // Valid requests still get the health service's answers.
    for method in ["Check", "Watch"] {
        for service in ["", "invoicecase.v1.InvoiceCaseService"] {
            let body = HealthCheckRequest {
                service: service.into(),
            }
            .encode_to_vec();
            let answer = raw_health(channel.clone(), method, body)
                .await
                .unwrap_or_else(|s| panic!("{method} {service:?}: {s:?}"));
            let answer = HealthCheckResponse::decode(answer).expect("a health response");
            assert_eq!(
                answer.status(),
                ServingStatus::Serving,
                "{method} {service:?}"
            );
        }
        let unknown = HealthCheckRequest {
            service: "no.such.Service".into(),
        }
        .encode_to_vec();
        let status = raw_health(channel.clone(), method, unknown)
            .await
            .expect_err("an unknown service");
        assert_eq!(status.code(), Code::NotFound, "{method}: {status:?}");
    }
}

/// Page tokens whose every byte has the right shape but whose time no
/// case can have (PostgreSQL cannot even represent some): INVALID_ARGUMENT
/// naming `page_token`, never INTERNAL.
#[tokio::test]
async fn forged_page_tokens_with_impossible_times_are_invalid_argument() {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let _ = create(&mut admin, "ACME", 1).await;
    // A real token, to take the filter hash from.
    let first = admin
        .list_invoice_cases(pb::ListInvoiceCasesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("a first page")
        .into_inner();
    let real = URL_SAFE_NO_PAD
        .decode(&first.next_page_token)
        .expect("a token of base64");
    let mut tokens = vec!["Af0S2cJ8V3__AAAAAAAAAAAAAAAAAAAAAOOwxEKY_BwU".to_owned()];
    // The earliest and latest times there are, the microsecond before the
    // year 1, and the year 10000.
    for micros in [
        i64::MIN,
        i64::MAX,
        -62_135_596_800_000_001,
        253_402_300_800_000_000,
    ] {
        let mut forged = real.clone();
        forged[1..9].copy_from_slice(&micros.to_be_bytes());
        tokens.push(URL_SAFE_NO_PAD.encode(forged));
    }
    let mut wrong = Vec::new();
    for token in &tokens {
        match admin
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(page) => wrong.push(format!("{token}: a page {:?}", page.into_inner())),
            Err(status) => {
                let fields: Vec<String> = status
                    .get_details_bad_request()
                    .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default();
                if status.code() != Code::InvalidArgument || fields != ["page_token"] {
                    wrong.push(format!("{token}: {}", short(&status)));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "forged page tokens not refused as INVALID_ARGUMENT:\n{}",
        wrong.join("\n")
    );
    // The real token still works.
    let next = admin
        .list_invoice_cases(pb::ListInvoiceCasesRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("the next page")
        .into_inner();
    assert_eq!(next.invoice_cases.len(), 1);
    assert_healthy(&mut admin, &case.id).await;
}
