//! Every (case state, action) pair through the real API, checked against
//! tables of the expected answer written from SPEC §3.1–§3.3: an allowed
//! pair succeeds with the right new state; a refused pair returns
//! FAILED_PRECONDITION with ErrorInfo INVALID_STATE_TRANSITION (SPEC §5) and
//! changes nothing — neither the case (same etag) nor its history.

use invoice_cases::pb::{
    self, case_line::State as L, invoice_case::State as C, state_change_event::Action as A,
};
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

use crate::helpers::*;

/// Every case state, in lifecycle order.
const CASE_STATES: [C; 7] = [
    C::Draft,
    C::New,
    C::WorkInProgress,
    C::AwaitingInfo,
    C::Resolved,
    C::Closed,
    C::Canceled,
];

/// The case RPCs (SPEC §3.1 and §3.3), in the column order of [`CASE_TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    SubmitCase,
    AssignToMe,
    RequestInformation,
    InformationReceived,
    ProposeSolution,
    CloseCase,
    CancelCase,
    AddCaseLine,
    RemoveCaseLine,
}

const RPCS: [Rpc; 9] = [
    Rpc::SubmitCase,
    Rpc::AssignToMe,
    Rpc::RequestInformation,
    Rpc::InformationReceived,
    Rpc::ProposeSolution,
    Rpc::CloseCase,
    Rpc::CancelCase,
    Rpc::AddCaseLine,
    Rpc::RemoveCaseLine,
];

const NO: Option<C> = None;
const TO_DRAFT: Option<C> = Some(C::Draft);
const TO_NEW: Option<C> = Some(C::New);
const TO_WIP: Option<C> = Some(C::WorkInProgress);
const TO_AWAITING: Option<C> = Some(C::AwaitingInfo);
const TO_RESOLVED: Option<C> = Some(C::Resolved);
const TO_CLOSED: Option<C> = Some(C::Closed);
const TO_CANCELED: Option<C> = Some(C::Canceled);

/// SPEC §3.1 and §3.3: the case state after the RPC, or `NO` when the case
/// state refuses it. AddCaseLine to an AWAITING_INFO case adds a
/// WORK_IN_PROGRESS line, so R2 (§3.4) moves the case to WORK_IN_PROGRESS.
#[rustfmt::skip]
const CASE_TABLE: [(C, [Option<C>; 9]); 7] = [
    //                  Submit  Assign  ReqInfo      InfoRcvd Propose      Close      Cancel       AddLine      RemoveLine
    (C::Draft,          [TO_NEW, NO,     NO,          NO,      NO,          NO,        TO_CANCELED, TO_DRAFT,    TO_DRAFT]),
    (C::New,            [NO,     TO_WIP, NO,          NO,      NO,          NO,        NO,          TO_NEW,      NO]),
    (C::WorkInProgress, [NO,     NO,     TO_AWAITING, NO,      TO_RESOLVED, NO,        NO,          TO_WIP,      NO]),
    (C::AwaitingInfo,   [NO,     NO,     NO,          TO_WIP,  NO,          NO,        NO,          TO_WIP,      NO]),
    (C::Resolved,       [NO,     NO,     NO,          NO,      NO,          TO_CLOSED, NO,          NO,          NO]),
    (C::Closed,         [NO,     NO,     NO,          NO,      NO,          NO,        NO,          NO,          NO]),
    (C::Canceled,       [NO,     NO,     NO,          NO,      NO,          NO,        NO,          NO,          NO]),
];

impl Rpc {
    /// The action recorded on the event and named in the error metadata.
    fn action(self) -> A {
        match self {
            Rpc::SubmitCase => A::Submit,
            Rpc::AssignToMe => A::AssignToMe,
            Rpc::RequestInformation => A::RequestInformation,
            Rpc::InformationReceived => A::InformationReceived,
            Rpc::ProposeSolution => A::ProposeSolution,
            Rpc::CloseCase => A::Close,
            Rpc::CancelCase => A::Cancel,
            Rpc::AddCaseLine => A::AddLine,
            Rpc::RemoveCaseLine => A::RemoveLine,
        }
    }

    /// Calls the RPC on `case` (RemoveCaseLine removes its first line;
    /// ProposeSolution accepts every open line).
    async fn call(
        self,
        client: &mut Client,
        case: &pb::InvoiceCase,
    ) -> Result<Response<pb::InvoiceCase>, Status> {
        let id = case.id.as_str();
        match self {
            Rpc::SubmitCase => client.submit_case(submit(id)).await,
            Rpc::AssignToMe => client.assign_to_me(assign(id)).await,
            Rpc::RequestInformation => client.request_information(request_info(id)).await,
            Rpc::InformationReceived => client.information_received(info_received(id)).await,
            Rpc::ProposeSolution => client.propose_solution(propose_all(id)).await,
            Rpc::CloseCase => client.close_case(close(id)).await,
            Rpc::CancelCase => client.cancel_case(cancel(id)).await,
            Rpc::AddCaseLine => {
                client
                    .add_case_line(pb::AddCaseLineRequest {
                        case_id: id.to_owned(),
                        line: Some(line("added later")),
                        ..Default::default()
                    })
                    .await
            }
            Rpc::RemoveCaseLine => {
                client
                    .remove_case_line(pb::RemoveCaseLineRequest {
                        case_id: id.to_owned(),
                        line_id: case.lines[0].id.clone(),
                        ..Default::default()
                    })
                    .await
            }
        }
    }
}

/// The targets SetLineState accepts (SPEC §3.2), in the column order of
/// [`LINE_TABLE`].
const TARGETS: [L; 5] = [
    L::AwaitingInfo,
    L::WorkInProgress,
    L::ResolvedAccepted,
    L::ResolvedDenied,
    L::Canceled,
];

/// Whose state refuses an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum By {
    /// The case's state: entity CASE, currentState the case's state.
    Case,
    /// The line's state: entity LINE, currentState the line's state.
    Line,
    /// Both refuse (SPEC §3.2 does not say which one is reported): either
    /// answer above is accepted, each with its own metadata.
    Either,
}

/// The expected answer of SetLineState.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Allowed: the case state and the line state after it.
    To(C, L),
    Refused(By),
}

use Answer::{Refused, To};

const BY_LINE: Answer = Refused(By::Line);
const BY_BOTH: Answer = Refused(By::Either);

/// SPEC §3.2 for the first line in the state `case_in_state` leaves it in
/// (the second column). A pair is refused by the line when the line is not
/// in the "line must be in" column, by the case when the case is not in the
/// "case must be in" column. By §3.5 a line in WORK_IN_PROGRESS or
/// AWAITING_INFO exists only in an open case and a RESOLVED, CLOSED or
/// CANCELED case has only final lines, so outside the open cases every
/// refusal is by both.
#[rustfmt::skip]
const LINE_TABLE: [(C, L, [Answer; 5]); 7] = [
    //                  first line           AWAITING_INFO                         WORK_IN_PROGRESS  RESOLVED_ACCEPTED                         RESOLVED_DENIED                         CANCELED
    (C::Draft,          L::Draft,            [BY_BOTH,                             BY_BOTH,          BY_BOTH,                                  BY_BOTH,                                To(C::Draft, L::Canceled)]),
    (C::New,            L::New,              [BY_BOTH,                             BY_BOTH,          BY_BOTH,                                  BY_BOTH,                                To(C::New, L::Canceled)]),
    (C::WorkInProgress, L::WorkInProgress,   [To(C::WorkInProgress, L::AwaitingInfo), BY_LINE,       To(C::WorkInProgress, L::ResolvedAccepted), To(C::WorkInProgress, L::ResolvedDenied), To(C::WorkInProgress, L::Canceled)]),
    (C::AwaitingInfo,   L::WorkInProgress,   [To(C::AwaitingInfo, L::AwaitingInfo), BY_LINE,         To(C::AwaitingInfo, L::ResolvedAccepted),   To(C::AwaitingInfo, L::ResolvedDenied),   To(C::AwaitingInfo, L::Canceled)]),
    (C::Resolved,       L::ResolvedAccepted, [BY_BOTH,                             BY_BOTH,          BY_BOTH,                                  BY_BOTH,                                BY_BOTH]),
    (C::Closed,         L::ResolvedAccepted, [BY_BOTH,                             BY_BOTH,          BY_BOTH,                                  BY_BOTH,                                BY_BOTH]),
    (C::Canceled,       L::Canceled,         [BY_BOTH,                             BY_BOTH,          BY_BOTH,                                  BY_BOTH,                                BY_BOTH]),
];

// ---- shared checks (also used by cascades.rs) ---------------------------

/// The error of a call expected to fail.
pub(crate) fn refusal<T: std::fmt::Debug>(
    result: Result<Response<T>, Status>,
    context: &str,
) -> Status {
    match result {
        Ok(response) => panic!(
            "{context}: expected an error, got {:?}",
            response.into_inner()
        ),
        Err(status) => status,
    }
}

/// Asserts FAILED_PRECONDITION with ErrorInfo INVALID_STATE_TRANSITION whose
/// metadata names `action`, the case's state, and the refusing entity with
/// its current state (for a line also its id, number and state).
pub(crate) fn assert_refused(
    status: &Status,
    action: A,
    case: &pb::InvoiceCase,
    line: Option<&pb::CaseLine>,
    by: By,
    context: &str,
) {
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{context}: {status:?}"
    );
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("{context}: no ErrorInfo in {status:?}"));
    assert_eq!(
        info.reason, "INVALID_STATE_TRANSITION",
        "{context}: {info:?}"
    );
    let meta = |key: &str| info.metadata.get(key).map(String::as_str);
    assert_eq!(
        meta("action"),
        Some(action.as_str_name()),
        "{context}: {info:?}"
    );
    assert_eq!(
        meta("caseState"),
        Some(case.state().as_str_name()),
        "{context}: {info:?}"
    );
    let by_line = match by {
        By::Case => false,
        By::Line => true,
        By::Either => meta("entity") == Some("LINE"),
    };
    if by_line {
        let line = line.unwrap_or_else(|| panic!("{context}: no line to refuse"));
        assert_eq!(meta("entity"), Some("LINE"), "{context}: {info:?}");
        assert_eq!(
            meta("currentState"),
            Some(line.state().as_str_name()),
            "{context}: currentState is the line's state: {info:?}"
        );
        assert_eq!(
            meta("lineId"),
            Some(line.id.as_str()),
            "{context}: {info:?}"
        );
        assert_eq!(
            meta("lineNumber"),
            Some(line.number.as_str()),
            "{context}: {info:?}"
        );
        assert_eq!(
            meta("lineState"),
            Some(line.state().as_str_name()),
            "{context}: {info:?}"
        );
    } else {
        assert_eq!(meta("entity"), Some("CASE"), "{context}: {info:?}");
        assert_eq!(
            meta("currentState"),
            Some(case.state().as_str_name()),
            "{context}: currentState is the case's state: {info:?}"
        );
    }
}

/// Asserts the case is exactly as `before` (read with GetInvoiceCase), with
/// the same etag, and its history still has `events_before` events.
pub(crate) async fn assert_unchanged(
    client: &mut Client,
    before: &pb::InvoiceCase,
    events_before: usize,
    context: &str,
) {
    let now = get(client, &before.id).await;
    assert_eq!(now.etag, before.etag, "{context}: the etag changed");
    assert_eq!(&now, before, "{context}: the case changed");
    let events = history(client, &before.id).await;
    assert_eq!(
        events.len(),
        events_before,
        "{context}: a refused call added an event: {:?}",
        events.last()
    );
}

/// After a successful call that returned `after`: the invariants hold on
/// the answer and on the stored case, the etag changed and is the stored
/// one, and exactly one event of `action` carrying that etag was added.
pub(crate) async fn assert_committed(
    client: &mut Client,
    before: &pb::InvoiceCase,
    events_before: usize,
    after: &pb::InvoiceCase,
    action: A,
    context: &str,
) -> pb::StateChangeEvent {
    assert_invariants(after);
    let stored = get(client, &after.id).await;
    assert_invariants(&stored);
    assert_eq!(stored.etag, after.etag, "{context}: stored etag");
    assert_eq!(stored.state(), after.state(), "{context}: stored state");
    assert_ne!(
        after.etag, before.etag,
        "{context}: the etag did not change"
    );
    let events = history(client, &after.id).await;
    assert_eq!(
        events.len(),
        events_before + 1,
        "{context}: one event per action"
    );
    let event = events.last().expect("an event").clone();
    assert_eq!(event.action(), action, "{context}: {event:?}");
    assert_eq!(event.etag, after.etag, "{context}: the event's etag");
    event
}

// ---- the tests ----------------------------------------------------------

#[tokio::test]
async fn every_case_action_in_every_case_state_follows_the_spec_table() {
    let app = spawn_app().await;
    let mut client = app.admin().await;

    for (state, row) in CASE_TABLE {
        for (rpc, expected) in RPCS.into_iter().zip(row) {
            let context = format!("{rpc:?} on a {state:?} case");
            let fixture = case_in_state(&mut client, state).await;
            let before = get(&mut client, &fixture.id).await;
            assert_eq!(before.state(), state, "{context}: fixture");
            assert_invariants(&before);
            let events_before = history(&mut client, &before.id).await.len();

            let result = rpc.call(&mut client, &before).await;
            match expected {
                Some(to) => {
                    let after = result
                        .unwrap_or_else(|s| panic!("{context}: expected success, got {s:?}"))
                        .into_inner();
                    assert_eq!(after.state(), to, "{context}: the new state");
                    assert_committed(
                        &mut client,
                        &before,
                        events_before,
                        &after,
                        rpc.action(),
                        &context,
                    )
                    .await;
                    match rpc {
                        Rpc::AddCaseLine => {
                            assert_eq!(after.lines.len(), before.lines.len() + 1, "{context}");
                            // SPEC §3.3: the line starts DRAFT, NEW or WORK_IN_PROGRESS.
                            let starts = match state {
                                C::Draft => L::Draft,
                                C::New => L::New,
                                _ => L::WorkInProgress,
                            };
                            let added = after.lines.last().expect("the added line");
                            assert_eq!(added.state(), starts, "{context}: the added line");
                        }
                        Rpc::RemoveCaseLine => {
                            assert_eq!(after.lines.len(), before.lines.len() - 1, "{context}");
                            assert!(
                                after.lines.iter().all(|l| l.id != before.lines[0].id),
                                "{context}: the line is still there"
                            );
                        }
                        _ => assert_eq!(after.lines.len(), before.lines.len(), "{context}"),
                    }
                    if rpc == Rpc::AssignToMe {
                        assert_eq!(after.assigned_to, "admin", "{context}");
                    }
                }
                None => {
                    let status = refusal(result, &context);
                    assert_refused(&status, rpc.action(), &before, None, By::Case, &context);
                    assert_unchanged(&mut client, &before, events_before, &context).await;
                }
            }
            assert_replay_matches(&mut client, &before.id).await;
        }
    }
}

#[tokio::test]
async fn set_line_state_in_every_case_state_follows_the_spec_table() {
    let app = spawn_app().await;
    let mut client = app.admin().await;

    for (state, first_line, row) in LINE_TABLE {
        for (target, expected) in TARGETS.into_iter().zip(row) {
            let context = format!("SetLineState {target:?} on a {state:?} case");
            let fixture = case_in_state(&mut client, state).await;
            let before = get(&mut client, &fixture.id).await;
            assert_eq!(before.state(), state, "{context}: fixture");
            assert_eq!(
                before.lines[0].state(),
                first_line,
                "{context}: fixture line"
            );
            let events_before = history(&mut client, &before.id).await.len();

            let result = client
                .set_line_state(set_line(&before.id, &before.lines[0].id, target))
                .await;
            match expected {
                To(case_to, line_to) => {
                    let after = result
                        .unwrap_or_else(|s| panic!("{context}: expected success, got {s:?}"))
                        .into_inner();
                    assert_eq!(after.state(), case_to, "{context}: the case state");
                    assert_eq!(after.lines[0].state(), line_to, "{context}: the line");
                    assert_eq!(
                        after.lines[1].state(),
                        before.lines[1].state(),
                        "{context}: the other line"
                    );
                    assert_committed(
                        &mut client,
                        &before,
                        events_before,
                        &after,
                        A::SetLineState,
                        &context,
                    )
                    .await;
                }
                Refused(by) => {
                    let status = refusal(result, &context);
                    assert_refused(
                        &status,
                        A::SetLineState,
                        &before,
                        Some(&before.lines[0]),
                        by,
                        &context,
                    );
                    assert_unchanged(&mut client, &before, events_before, &context).await;
                }
            }
            assert_replay_matches(&mut client, &before.id).await;
        }
    }
}

/// SPEC §3.2's "line must be in" column.
fn line_may_go(from: L, to: L) -> bool {
    match to {
        L::AwaitingInfo => from == L::WorkInProgress,
        L::WorkInProgress => from == L::AwaitingInfo,
        L::ResolvedAccepted | L::ResolvedDenied => {
            matches!(from, L::WorkInProgress | L::AwaitingInfo)
        }
        L::Canceled => !matches!(from, L::ResolvedAccepted | L::ResolvedDenied | L::Canceled),
        L::Draft | L::New | L::Unspecified => false,
    }
}

/// In the open cases (where §3.2 lets the case allow every target) the
/// line's own state decides, for every state a line of an open case can be
/// in; a refusal names the line (entity LINE, currentState the line's
/// state). R2 (§3.4) applies when the line returns to WORK_IN_PROGRESS in an
/// AWAITING_INFO case; the second line stays open, so R1 never applies.
#[tokio::test]
async fn set_line_state_in_open_cases_is_decided_by_the_line_state() {
    let app = spawn_app().await;
    let mut client = app.admin().await;

    let line_states = [
        L::WorkInProgress,
        L::AwaitingInfo,
        L::ResolvedAccepted,
        L::ResolvedDenied,
        L::Canceled,
    ];
    for state in CASE_STATES
        .into_iter()
        .filter(|s| matches!(s, C::WorkInProgress | C::AwaitingInfo))
    {
        for from in line_states {
            for target in TARGETS {
                let context =
                    format!("SetLineState {target:?} of a {from:?} line on a {state:?} case");
                let fixture = case_in_state(&mut client, state).await;
                let line_id = fixture.lines[0].id.clone();
                if from != L::WorkInProgress {
                    let moved = ok(client
                        .set_line_state(set_line(&fixture.id, &line_id, from))
                        .await);
                    assert_invariants(&moved);
                }
                let before = get(&mut client, &fixture.id).await;
                assert_eq!(before.state(), state, "{context}: fixture");
                assert_eq!(before.lines[0].state(), from, "{context}: fixture line");
                let events_before = history(&mut client, &before.id).await.len();

                let result = client
                    .set_line_state(set_line(&before.id, &line_id, target))
                    .await;
                if line_may_go(from, target) {
                    let after = result
                        .unwrap_or_else(|s| panic!("{context}: expected success, got {s:?}"))
                        .into_inner();
                    let case_to = if state == C::AwaitingInfo && target == L::WorkInProgress {
                        C::WorkInProgress
                    } else {
                        state
                    };
                    assert_eq!(after.state(), case_to, "{context}: the case state");
                    assert_eq!(after.lines[0].state(), target, "{context}: the line");
                    assert_committed(
                        &mut client,
                        &before,
                        events_before,
                        &after,
                        A::SetLineState,
                        &context,
                    )
                    .await;
                } else {
                    let status = refusal(result, &context);
                    assert_refused(
                        &status,
                        A::SetLineState,
                        &before,
                        Some(&before.lines[0]),
                        By::Line,
                        &context,
                    );
                    assert_unchanged(&mut client, &before, events_before, &context).await;
                }
                assert_replay_matches(&mut client, &before.id).await;
            }
        }
    }
}
