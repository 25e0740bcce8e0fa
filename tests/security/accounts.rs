//! Account isolation (SPEC §8): a token limited to accounts never sees,
//! changes or receives events of other accounts' cases, and cannot tell
//! such a case from one that does not exist.

use std::time::Duration;

use invoice_cases::pb::{
    self,
    invoice_case::State as CaseState,
    watch_state_changes_request::{FromBeginning, Start, WithSnapshot},
    watch_state_changes_response::Kind,
};
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::{
    helpers::{Client, TestApp, create, get, history, ok, spawn_app, submit},
    support::{Rpc, Target, case_in, event_count},
};

const MINE: &str = "ACME";
const THEIRS: &str = "GLOBEX";

/// An admin limited to ACME's cases: every role, one account.
async fn limited_admin(app: &TestApp) -> Client {
    let token = app.token("acme-admin", &["admin"], Some(&[MINE]));
    app.client_with(Some(&token)).await
}

/// What a refusal says, with the case the request named (`named`) taken
/// out: two refusals of the same shape are equal.
fn shape(status: &Status, named: &str) -> (Code, String, String) {
    (
        status.code(),
        status.message().replace(named, "<case>"),
        format!("{:?}", status.get_error_details()).replace(named, "<case>"),
    )
}

/// A case and line that do not exist, named like `like` names them.
fn missing(like: &Target) -> Target {
    let by_number = like.case_id.starts_with("INVCS");
    Target {
        case_id: if by_number {
            "INVCS9999999".into()
        } else {
            Uuid::new_v4().to_string()
        },
        line_id: if by_number {
            "INVCSL9999999".into()
        } else {
            Uuid::new_v4().to_string()
        },
        account: MINE.into(),
    }
}

/// Calls `rpc` on `theirs` and on a missing case as `client`: both must be
/// NOT_FOUND of the same shape.
async fn assert_indistinguishable(client: &mut Client, rpc: Rpc, theirs: &Target) {
    let hidden = rpc
        .call(client, theirs)
        .await
        .expect_err("another account's case must not be reachable");
    let absent_target = missing(theirs);
    let absent = rpc
        .call(client, &absent_target)
        .await
        .expect_err("a missing case cannot be reached");
    assert_eq!(
        hidden.code(),
        Code::NotFound,
        "{} on another account's case: {hidden:?}",
        rpc.method()
    );
    assert_eq!(
        shape(&hidden, &theirs.case_id),
        shape(&absent, &absent_target.case_id),
        "{}: another account's case must look exactly like a missing one",
        rpc.method()
    );
}

/// Every case `client` can list, all pages.
async fn listed(client: &mut Client, filter: &str) -> Vec<pb::InvoiceCase> {
    let mut cases = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ok(client
            .list_invoice_cases(pb::ListInvoiceCasesRequest {
                page_size: 3,
                page_token: page_token.clone(),
                filter: filter.to_owned(),
            })
            .await);
        cases.extend(page.invoice_cases);
        if page.next_page_token.is_empty() {
            return cases;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn reads_show_only_the_callers_accounts() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mine = case_in(&mut admin, MINE, CaseState::WorkInProgress).await;
    let theirs = case_in(&mut admin, THEIRS, CaseState::WorkInProgress).await;
    let other = case_in(&mut admin, "INITECH", CaseState::Draft).await;
    let mut limited = limited_admin(&app).await;

    // Get, by UUID and by number.
    assert_eq!(get(&mut limited, &mine.id).await, mine);
    assert_eq!(get(&mut limited, &mine.number).await, mine);
    assert_indistinguishable(&mut limited, Rpc::Get, &Target::of(&theirs)).await;
    assert_indistinguishable(&mut limited, Rpc::Get, &Target::by_number(&theirs)).await;
    assert_indistinguishable(&mut limited, Rpc::Get, &Target::of(&other)).await;

    // List: whatever the filter, only ACME's cases.
    for filter in [
        "",
        "account_id = GLOBEX",
        "account_id = \"GLOBEX\"",
        "account_id != ACME",
        "state = WORK_IN_PROGRESS",
        "state != CANCELED AND priority != 1",
    ] {
        let cases = listed(&mut limited, filter).await;
        assert!(
            cases.iter().all(|c| c.account_id == MINE),
            "filter {filter:?} showed {:?}",
            cases.iter().map(|c| &c.account_id).collect::<Vec<_>>()
        );
    }
    let all_mine = listed(&mut limited, "").await;
    assert_eq!(
        all_mine.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&mine.id]
    );
    assert!(listed(&mut limited, "account_id = GLOBEX").await.is_empty());
    // The admin sees all three (the control).
    assert_eq!(listed(&mut admin, "").await.len(), 3);

    // History.
    assert_eq!(
        history(&mut limited, &mine.id).await.len(),
        event_count(&mut admin, &mine.id).await
    );
    assert_indistinguishable(&mut limited, Rpc::ListStateChanges, &Target::of(&theirs)).await;
    assert_indistinguishable(
        &mut limited,
        Rpc::ListStateChanges,
        &Target::by_number(&theirs),
    )
    .await;

    // A watch of their case is refused like one of a missing case.
    assert_indistinguishable(&mut limited, Rpc::Watch, &Target::of(&theirs)).await;
    assert_indistinguishable(&mut limited, Rpc::Watch, &Target::by_number(&theirs)).await;

    // A page token of the admin's listing of their case's history does not
    // open it either.
    let page = ok(admin
        .list_state_changes(pb::ListStateChangesRequest {
            case_id: theirs.id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await);
    assert!(!page.next_page_token.is_empty());
    let status = limited
        .list_state_changes(pb::ListStateChangesRequest {
            case_id: theirs.id.clone(),
            page_size: 1,
            page_token: page.next_page_token.clone(),
        })
        .await
        .expect_err("their history stays hidden with a page token");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn changes_to_other_accounts_cases_are_not_found_and_change_nothing() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut limited = limited_admin(&app).await;
    for rpc in Rpc::ALL.into_iter().filter(|rpc| rpc.mutates_a_case()) {
        for by_number in [false, true] {
            let theirs = case_in(&mut admin, THEIRS, rpc.needs()).await;
            let events = event_count(&mut admin, &theirs.id).await;
            let target = if by_number {
                Target::by_number(&theirs)
            } else {
                Target::of(&theirs)
            };
            assert_indistinguishable(&mut limited, rpc, &target).await;
            assert_eq!(get(&mut admin, &theirs.id).await, theirs, "{rpc:?}");
            assert_eq!(event_count(&mut admin, &theirs.id).await, events);
        }
        // The same call on the caller's own case works (the control).
        let mine = case_in(&mut admin, MINE, rpc.needs()).await;
        if let Err(status) = rpc.call(&mut limited, &Target::of(&mine)).await {
            panic!("{} on the caller's own case: {status:?}", rpc.method());
        }
    }
}

#[tokio::test]
async fn creating_a_case_of_another_account_is_permission_denied() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut limited = limited_admin(&app).await;
    for account in [THEIRS, "acme", "ACME ", ""] {
        let target = Target {
            case_id: String::new(),
            line_id: String::new(),
            account: account.to_owned(),
        };
        let status = Rpc::Create
            .call(&mut limited, &target)
            .await
            .expect_err("another account");
        let expected = if account.is_empty() {
            // Missing: the request is malformed before anything else.
            Code::InvalidArgument
        } else {
            Code::PermissionDenied
        };
        assert_eq!(status.code(), expected, "{account:?}: {status:?}");
    }
    assert!(listed(&mut admin, "").await.is_empty());

    // Their own account works, and a token of several accounts may create
    // for each.
    let case = create(&mut limited, MINE, 1).await;
    assert_eq!(case.account_id, MINE);
    let token = app.token("two", &["requester"], Some(&[MINE, "INITECH"]));
    let mut two = app.client_with(Some(&token)).await;
    create(&mut two, "INITECH", 1).await;
    let status = two
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(crate::helpers::new_case(THEIRS, 1)),
            request_id: String::new(),
            comment: String::new(),
        })
        .await
        .expect_err("not one of its accounts");
    assert_eq!(status.code(), Code::PermissionDenied);
    // An empty list of accounts allows none.
    let token = app.token("none", &["admin"], Some(&[]));
    let mut none = app.client_with(Some(&token)).await;
    let status = none
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(crate::helpers::new_case(MINE, 1)),
            request_id: String::new(),
            comment: String::new(),
        })
        .await
        .expect_err("no account");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(listed(&mut none, "").await.is_empty());
    assert_eq!(listed(&mut admin, "").await.len(), 2);
}

/// What a watch stream said.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<pb::StateChangeEvent>,
    snapshot: Vec<pb::InvoiceCase>,
    snapshot_complete: bool,
    progress: usize,
}

/// Reads `stream` until `done`, failing after 20 seconds.
async fn read(
    stream: &mut Streaming<pb::WatchStateChangesResponse>,
    seen: &mut Seen,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(seen) {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("the stream stalled; so far {seen:?}"))
            .expect("the stream goes on")
            .expect("the stream does not end");
        match message.kind.expect("a message kind") {
            Kind::Event(event) => seen.events.push(event),
            Kind::Progress(_) => seen.progress += 1,
            Kind::SnapshotCase(case) => seen.snapshot.push(case),
            Kind::SnapshotComplete(_) => seen.snapshot_complete = true,
        }
    }
}

async fn open(
    client: &mut Client,
    case_id: &str,
    account_id: &str,
    start: Option<Start>,
) -> Streaming<pb::WatchStateChangesResponse> {
    client
        .watch_state_changes(pb::WatchStateChangesRequest {
            case_id: case_id.to_owned(),
            account_id: account_id.to_owned(),
            start,
            subscription: String::new(),
        })
        .await
        .expect("open a watch")
        .into_inner()
}

fn assert_only_mine(seen: &Seen, what: &str) {
    for event in &seen.events {
        assert_eq!(event.account_id, MINE, "{what}: {event:?}");
    }
    for case in &seen.snapshot {
        assert_eq!(case.account_id, MINE, "{what}: {case:?}");
    }
}

#[tokio::test]
async fn watch_streams_carry_only_the_callers_accounts() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mine = case_in(&mut admin, MINE, CaseState::WorkInProgress).await;
    let theirs = case_in(&mut admin, THEIRS, CaseState::WorkInProgress).await;
    let mine_events = event_count(&mut admin, &mine.id).await;
    let their_history = history(&mut admin, &theirs.id).await;
    let mut limited = limited_admin(&app).await;

    // Replay from the beginning: every filter.
    for (case_id, account_id, expected) in [
        ("", "", mine_events),
        ("", MINE, mine_events),
        ("", THEIRS, 0),
        ("", "INITECH", 0),
        (mine.id.as_str(), "", mine_events),
        (mine.id.as_str(), THEIRS, 0),
    ] {
        let what = format!("from_beginning case {case_id:?} account {account_id:?}");
        let mut stream = open(
            &mut limited,
            case_id,
            account_id,
            Some(Start::FromBeginning(FromBeginning {})),
        )
        .await;
        let mut seen = Seen::default();
        read(&mut stream, &mut seen, |s| s.progress >= 1).await;
        assert_only_mine(&seen, &what);
        assert_eq!(seen.events.len(), expected, "{what}");
    }

    // Replay after a cursor of one of their events: only ours follow.
    let their_first = &their_history[0].cursor;
    let mut stream = open(
        &mut limited,
        "",
        "",
        Some(Start::AfterCursor(their_first.clone())),
    )
    .await;
    let mut seen = Seen::default();
    read(&mut stream, &mut seen, |s| s.progress >= 1).await;
    assert_only_mine(&seen, "after their cursor");

    // A snapshot: only ours.
    for account_id in ["", THEIRS] {
        let mut stream = open(
            &mut limited,
            "",
            account_id,
            Some(Start::WithSnapshot(WithSnapshot {})),
        )
        .await;
        let mut seen = Seen::default();
        read(&mut stream, &mut seen, |s| s.snapshot_complete).await;
        assert_only_mine(&seen, "snapshot");
        let expected = if account_id.is_empty() { 1 } else { 0 };
        assert_eq!(seen.snapshot.len(), expected, "snapshot {account_id:?}");
    }

    // Live: their change first, then ours; only ours arrives.
    let mut everything = open(&mut limited, "", "", None).await;
    let mut theirs_only = open(
        &mut limited,
        "",
        THEIRS,
        Some(Start::WithSnapshot(WithSnapshot {})),
    )
    .await;
    let mut seen_theirs = Seen::default();
    read(&mut theirs_only, &mut seen_theirs, |s| s.snapshot_complete).await;
    // Both streams have started (a progress message proves the first).
    let mut seen = Seen::default();
    read(&mut everything, &mut seen, |s| s.progress >= 1).await;

    ok(admin
        .request_information(crate::helpers::request_info(&theirs.id))
        .await);
    let extra = create(&mut admin, THEIRS, 1).await;
    ok(admin.submit_case(submit(&extra.id)).await);
    ok(admin
        .request_information(crate::helpers::request_info(&mine.id))
        .await);
    read(&mut everything, &mut seen, |s| !s.events.is_empty()).await;
    let progress = seen.progress;
    read(&mut everything, &mut seen, |s| s.progress > progress).await;
    assert_only_mine(&seen, "live");
    assert_eq!(seen.events.len(), 1, "{seen:?}");
    assert_eq!(seen.events[0].case_id, mine.id);

    let progress = seen_theirs.progress;
    read(&mut theirs_only, &mut seen_theirs, |s| {
        s.progress > progress + 1
    })
    .await;
    assert!(
        seen_theirs.events.is_empty() && seen_theirs.snapshot.is_empty(),
        "a watch of another account delivered {seen_theirs:?}"
    );
}
