//! Every cascade of SPEC §3.1 and every synchronisation rule of §3.4
//! through the real API, with the exact `changes` of the event each action
//! records (§4): the direct change first, then the cascaded ones in the
//! order they were applied (lines in line order).

use invoice_cases::pb::{
    self,
    case_line::State as L,
    invoice_case::State as C,
    state_change::{CaseTransition, Cause, LineTransition, Transition},
    state_change_event::Action as A,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;
use crate::transitions::{By, assert_refused, assert_unchanged, refusal};

// ---- helpers ------------------------------------------------------------

/// The expected change of the case.
fn case_change(case: &pb::InvoiceCase, cause: Cause, from: C, to: C) -> pb::StateChange {
    pb::StateChange {
        cause: cause.into(),
        transition: Some(Transition::CaseTransition(CaseTransition {
            id: case.id.clone(),
            number: case.number.clone(),
            from_state: from.into(),
            to_state: to.into(),
        })),
    }
}

/// The expected change of a line (`from` unspecified when it was added).
fn line_change(line: &pb::CaseLine, cause: Cause, from: L, to: L) -> pb::StateChange {
    pb::StateChange {
        cause: cause.into(),
        transition: Some(Transition::LineTransition(LineTransition {
            id: line.id.clone(),
            number: line.number.clone(),
            from_state: from.into(),
            to_state: to.into(),
        })),
    }
}

/// The history of one case, followed call by call.
struct Log {
    id: String,
    seen: usize,
}

impl Log {
    async fn of(client: &mut Client, case: &pb::InvoiceCase) -> Self {
        assert_invariants(case);
        Log {
            id: case.id.clone(),
            seen: history(client, &case.id).await.len(),
        }
    }

    /// After a successful call that returned `case`: the invariants hold on
    /// the answer and on the stored case, and exactly one event of `action`
    /// was added, carrying the case's etag; returns its changes.
    async fn next(
        &mut self,
        client: &mut Client,
        case: &pb::InvoiceCase,
        action: A,
    ) -> Vec<pb::StateChange> {
        assert_invariants(case);
        let stored = get(client, &self.id).await;
        assert_invariants(&stored);
        assert_eq!(stored.etag, case.etag, "the answer is the stored case");
        let events = history(client, &self.id).await;
        assert_eq!(events.len(), self.seen + 1, "one event per action");
        self.seen += 1;
        let event = events.last().expect("an event").clone();
        assert_eq!(event.action(), action, "{event:?}");
        assert_eq!(event.etag, case.etag, "the event carries the new etag");
        event.changes
    }

    /// After a refused call: nothing changed since `before` was read.
    async fn unchanged(&self, client: &mut Client, before: &pb::InvoiceCase, context: &str) {
        assert_unchanged(client, before, self.seen, context).await;
    }
}

/// `text` as a decimal with trailing fraction zeros (and a trailing point)
/// removed, so that "40.00" and "40" compare equal.
fn normalized(text: &str) -> String {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_owned()
    } else {
        format!("{int}.{frac}")
    }
}

fn assert_amount(actual: Option<&str>, expected: &str, context: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{context}: no approved amount"));
    assert_eq!(
        normalized(actual),
        normalized(expected),
        "{context}: approved amount {actual:?}, expected {expected:?}"
    );
}

async fn add_line(client: &mut Client, id: &str, description: &str) -> pb::InvoiceCase {
    ok(client
        .add_case_line(pb::AddCaseLineRequest {
            case_id: id.to_owned(),
            line: Some(line(description)),
            ..Default::default()
        })
        .await)
}

async fn set(client: &mut Client, case: &pb::InvoiceCase, index: usize, to: L) -> pb::InvoiceCase {
    ok(client
        .set_line_state(set_line(&case.id, &case.lines[index].id, to))
        .await)
}

/// A DRAFT case of ACME whose lines dispute the given amounts (of 100.00
/// invoiced each).
async fn create_with_amounts(client: &mut Client, disputed: &[&str]) -> pb::InvoiceCase {
    let mut case = new_case("ACME", 0);
    case.lines = disputed
        .iter()
        .enumerate()
        .map(|(i, amount)| pb::CaseLine {
            disputed_amount: (*amount).to_owned(),
            ..line(&format!("line {i}"))
        })
        .collect();
    ok(client
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(case),
            ..Default::default()
        })
        .await)
}

/// A WORK_IN_PROGRESS case (assigned to alice) with lines disputing
/// `disputed`, with its log.
async fn case_in_progress(
    admin: &mut Client,
    agent: &mut Client,
    disputed: &[&str],
) -> (pb::InvoiceCase, Log) {
    let case = create_with_amounts(admin, disputed).await;
    let mut log = Log::of(admin, &case).await;
    let case = ok(admin.submit_case(submit(&case.id)).await);
    log.next(admin, &case, A::Submit).await;
    let case = ok(agent.assign_to_me(assign(&case.id)).await);
    log.next(admin, &case, A::AssignToMe).await;
    assert_eq!(case.state(), C::WorkInProgress);
    (case, log)
}

// ---- case actions on the lines (§3.1) -----------------------------------

#[tokio::test]
async fn submit_moves_draft_lines_to_new_and_leaves_a_canceled_line() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let case = create(&mut client, "ACME", 3).await;
    let mut log = Log::of(&mut client, &case).await;

    let case = set(&mut client, &case, 1, L::Canceled).await;
    assert_eq!(case.state(), C::Draft);
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [line_change(
            &case.lines[1],
            Cause::Direct,
            L::Draft,
            L::Canceled
        )]
    );
    assert!(case.submit_time.is_none());

    let case = ok(client.submit_case(submit(&case.id)).await);
    assert_eq!(case.state(), C::New);
    assert!(case.submit_time.is_some(), "submit_time is set");
    let states: Vec<L> = case.lines.iter().map(|l| l.state()).collect();
    assert_eq!(states, [L::New, L::Canceled, L::New]);
    assert_eq!(
        log.next(&mut client, &case, A::Submit).await,
        [
            case_change(&case, Cause::Direct, C::Draft, C::New),
            line_change(&case.lines[0], Cause::Cascade, L::Draft, L::New),
            line_change(&case.lines[2], Cause::Cascade, L::Draft, L::New),
        ]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn assign_to_me_moves_new_lines_to_work_in_progress() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let case = create(&mut client, "ACME", 3).await;
    let mut log = Log::of(&mut client, &case).await;
    let case = ok(client.submit_case(submit(&case.id)).await);
    log.next(&mut client, &case, A::Submit).await;

    let case = set(&mut client, &case, 1, L::Canceled).await;
    assert_eq!(case.state(), C::New);
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [line_change(
            &case.lines[1],
            Cause::Direct,
            L::New,
            L::Canceled
        )]
    );

    let case = ok(agent.assign_to_me(assign(&case.id)).await);
    assert_eq!(case.state(), C::WorkInProgress);
    assert_eq!(case.assigned_to, "alice");
    let states: Vec<L> = case.lines.iter().map(|l| l.state()).collect();
    assert_eq!(states, [L::WorkInProgress, L::Canceled, L::WorkInProgress]);
    assert_eq!(
        log.next(&mut client, &case, A::AssignToMe).await,
        [
            case_change(&case, Cause::Direct, C::New, C::WorkInProgress),
            line_change(&case.lines[0], Cause::Cascade, L::New, L::WorkInProgress),
            line_change(&case.lines[2], Cause::Cascade, L::New, L::WorkInProgress),
        ]
    );
    assert!(case.resolve_time.is_none());
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn cancel_case_cancels_every_line() {
    let app = spawn_app().await;
    let mut client = app.admin().await;

    // Every line DRAFT.
    let case = create(&mut client, "ACME", 2).await;
    let mut log = Log::of(&mut client, &case).await;
    let case = ok(client.cancel_case(cancel(&case.id)).await);
    assert_eq!(case.state(), C::Canceled);
    assert!(case.lines.iter().all(|l| l.state() == L::Canceled));
    assert_eq!(
        log.next(&mut client, &case, A::Cancel).await,
        [
            case_change(&case, Cause::Direct, C::Draft, C::Canceled),
            line_change(&case.lines[0], Cause::Cascade, L::Draft, L::Canceled),
            line_change(&case.lines[1], Cause::Cascade, L::Draft, L::Canceled),
        ]
    );
    assert_replay_matches(&mut client, &case.id).await;

    // A line already CANCELED is not changed again.
    let case = create(&mut client, "ACME", 3).await;
    let mut log = Log::of(&mut client, &case).await;
    let case = set(&mut client, &case, 1, L::Canceled).await;
    log.next(&mut client, &case, A::SetLineState).await;
    let case = ok(client.cancel_case(cancel(&case.id)).await);
    assert_eq!(case.state(), C::Canceled);
    assert!(case.lines.iter().all(|l| l.state() == L::Canceled));
    assert_eq!(
        log.next(&mut client, &case, A::Cancel).await,
        [
            case_change(&case, Cause::Direct, C::Draft, C::Canceled),
            line_change(&case.lines[0], Cause::Cascade, L::Draft, L::Canceled),
            line_change(&case.lines[2], Cause::Cascade, L::Draft, L::Canceled),
        ]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

// ---- R1: all lines final => case resolved (§3.4) -------------------------

#[tokio::test]
async fn r1_canceling_the_last_open_line_of_a_work_in_progress_case_resolves_it() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let (case, mut log) = case_in_progress(&mut client, &mut agent, &["40.00", "40.00"]).await;

    // Resolving one of two open lines: no cascade.
    let case = ok(agent
        .set_line_state(pb::SetLineStateRequest {
            resolution_code: pb::invoice_case::ResolutionCode::SolvedSettlement.into(),
            resolution_notes: "settled".into(),
            approved_amount: Some("25.00".into()),
            ..set_line(&case.id, &case.lines[0].id, L::ResolvedAccepted)
        })
        .await);
    assert_eq!(case.state(), C::WorkInProgress);
    assert!(case.resolve_time.is_none());
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [line_change(
            &case.lines[0],
            Cause::Direct,
            L::WorkInProgress,
            L::ResolvedAccepted
        )]
    );
    assert_amount(
        case.lines[0].approved_amount.as_deref(),
        "25.00",
        "resolved line",
    );
    assert_eq!(
        case.lines[0].resolution_code(),
        pb::invoice_case::ResolutionCode::SolvedSettlement
    );
    assert_eq!(case.lines[0].resolution_notes, "settled");

    // Canceling the last open line: the case is RESOLVED as a cascade.
    let case = ok(agent
        .set_line_state(set_line(&case.id, &case.lines[1].number, L::Canceled))
        .await);
    assert_eq!(case.state(), C::Resolved);
    assert!(case.resolve_time.is_some(), "resolve_time is set");
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [
            line_change(
                &case.lines[1],
                Cause::Direct,
                L::WorkInProgress,
                L::Canceled
            ),
            case_change(&case, Cause::Cascade, C::WorkInProgress, C::Resolved),
        ]
    );

    // A RESOLVED case closes.
    let case = ok(agent.close_case(close(&case.id)).await);
    assert_eq!(
        log.next(&mut client, &case, A::Close).await,
        [case_change(&case, Cause::Direct, C::Resolved, C::Closed)]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn r1_resolving_the_last_open_line_of_an_awaiting_info_case_resolves_it() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let (case, mut log) = case_in_progress(&mut client, &mut agent, &["40.00", "40.00"]).await;
    let case = ok(agent.request_information(request_info(&case.id)).await);
    assert_eq!(
        log.next(&mut client, &case, A::RequestInformation).await,
        [case_change(
            &case,
            Cause::Direct,
            C::WorkInProgress,
            C::AwaitingInfo
        )]
    );

    let case = set(&mut agent, &case, 0, L::Canceled).await;
    assert_eq!(case.state(), C::AwaitingInfo);
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [line_change(
            &case.lines[0],
            Cause::Direct,
            L::WorkInProgress,
            L::Canceled
        )]
    );

    let case = set(&mut agent, &case, 1, L::ResolvedDenied).await;
    assert_eq!(case.state(), C::Resolved);
    assert!(case.resolve_time.is_some(), "resolve_time is set");
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [
            line_change(
                &case.lines[1],
                Cause::Direct,
                L::WorkInProgress,
                L::ResolvedDenied
            ),
            case_change(&case, Cause::Cascade, C::AwaitingInfo, C::Resolved),
        ]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn r1_assign_to_me_resolves_a_new_case_whose_lines_are_all_canceled() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let case = create(&mut client, "ACME", 2).await;
    let mut log = Log::of(&mut client, &case).await;
    let case = ok(client.submit_case(submit(&case.id)).await);
    log.next(&mut client, &case, A::Submit).await;
    let case = set(&mut client, &case, 0, L::Canceled).await;
    log.next(&mut client, &case, A::SetLineState).await;
    let case = set(&mut client, &case, 1, L::Canceled).await;
    assert_eq!(case.state(), C::New, "R1 applies to open cases only");
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [line_change(
            &case.lines[1],
            Cause::Direct,
            L::New,
            L::Canceled
        )]
    );

    let case = ok(agent.assign_to_me(assign(&case.id)).await);
    assert_eq!(case.state(), C::Resolved);
    assert_eq!(case.assigned_to, "alice");
    assert!(case.resolve_time.is_some(), "resolve_time is set");
    assert!(case.lines.iter().all(|l| l.state() == L::Canceled));
    assert_eq!(
        log.next(&mut client, &case, A::AssignToMe).await,
        [
            case_change(&case, Cause::Direct, C::New, C::WorkInProgress),
            case_change(&case, Cause::Cascade, C::WorkInProgress, C::Resolved),
        ]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

// ---- R2: a line in progress => case in progress (§3.4) -------------------

#[tokio::test]
async fn r2_a_line_back_in_progress_puts_an_awaiting_info_case_back_in_progress() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let (case, mut log) = case_in_progress(&mut client, &mut agent, &["40.00", "40.00"]).await;

    // A line awaiting information does not move the case.
    let case = set(&mut agent, &case, 0, L::AwaitingInfo).await;
    assert_eq!(case.state(), C::WorkInProgress);
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [line_change(
            &case.lines[0],
            Cause::Direct,
            L::WorkInProgress,
            L::AwaitingInfo
        )]
    );
    let case = ok(agent.request_information(request_info(&case.id)).await);
    assert_eq!(case.state(), C::AwaitingInfo);
    log.next(&mut client, &case, A::RequestInformation).await;

    // Lines that do not enter WORK_IN_PROGRESS leave the case AWAITING_INFO.
    let case = set(&mut agent, &case, 1, L::AwaitingInfo).await;
    assert_eq!(case.state(), C::AwaitingInfo);
    log.next(&mut client, &case, A::SetLineState).await;
    let case = set(&mut agent, &case, 1, L::ResolvedAccepted).await;
    assert_eq!(case.state(), C::AwaitingInfo);
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [line_change(
            &case.lines[1],
            Cause::Direct,
            L::AwaitingInfo,
            L::ResolvedAccepted
        )]
    );

    // The first line back in progress: the case follows.
    let case = set(&mut agent, &case, 0, L::WorkInProgress).await;
    assert_eq!(case.state(), C::WorkInProgress);
    assert_eq!(
        log.next(&mut client, &case, A::SetLineState).await,
        [
            line_change(
                &case.lines[0],
                Cause::Direct,
                L::AwaitingInfo,
                L::WorkInProgress
            ),
            case_change(&case, Cause::Cascade, C::AwaitingInfo, C::WorkInProgress),
        ]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn r2_adding_a_line_to_an_awaiting_info_case_puts_it_back_in_progress() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let (case, mut log) = case_in_progress(&mut client, &mut agent, &["40.00", "40.00"]).await;
    let case = ok(agent.request_information(request_info(&case.id)).await);
    log.next(&mut client, &case, A::RequestInformation).await;

    let case = add_line(&mut client, &case.id, "found later").await;
    assert_eq!(case.state(), C::WorkInProgress);
    assert_eq!(case.lines.len(), 3);
    let added = &case.lines[2];
    assert_eq!(added.state(), L::WorkInProgress);
    assert_eq!(
        log.next(&mut client, &case, A::AddLine).await,
        [
            line_change(added, Cause::Direct, L::Unspecified, L::WorkInProgress),
            case_change(&case, Cause::Cascade, C::AwaitingInfo, C::WorkInProgress),
        ]
    );

    // Added to a WORK_IN_PROGRESS case: no cascade.
    let case = add_line(&mut client, &case.id, "found even later").await;
    assert_eq!(case.state(), C::WorkInProgress);
    assert_eq!(
        log.next(&mut client, &case, A::AddLine).await,
        [line_change(
            &case.lines[3],
            Cause::Direct,
            L::Unspecified,
            L::WorkInProgress
        )]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

// ---- Propose solution (§3.1) ---------------------------------------------

#[tokio::test]
async fn propose_solution_applies_each_line_outcome_and_the_default_to_the_rest() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let (case, mut log) = case_in_progress(
        &mut client,
        &mut agent,
        &["40.00", "12.34", "7.5", "20.00", "30.00"],
    )
    .await;
    // Line 3 awaits information, line 4 is already denied, line 5 canceled.
    let case = set(&mut agent, &case, 2, L::AwaitingInfo).await;
    log.next(&mut client, &case, A::SetLineState).await;
    let case = ok(agent
        .set_line_state(pb::SetLineStateRequest {
            resolution_code: pb::invoice_case::ResolutionCode::SolvedInvalidDispute.into(),
            resolution_notes: "not our error".into(),
            ..set_line(&case.id, &case.lines[3].id, L::ResolvedDenied)
        })
        .await);
    log.next(&mut client, &case, A::SetLineState).await;
    let case = set(&mut agent, &case, 4, L::Canceled).await;
    log.next(&mut client, &case, A::SetLineState).await;
    let before = get(&mut client, &case.id).await;
    assert_eq!(before.state(), C::WorkInProgress);

    let case = ok(agent
        .propose_solution(pb::ProposeSolutionRequest {
            case_id: case.id.clone(),
            resolution_code: pb::invoice_case::ResolutionCode::SolvedCredit.into(),
            resolution_notes: "credit note issued".into(),
            default_outcome: L::ResolvedDenied.into(),
            line_outcomes: vec![
                pb::propose_solution_request::LineOutcome {
                    line_id: before.lines[0].number.clone(),
                    outcome: L::ResolvedAccepted.into(),
                    approved_amount: Some("30.00".into()),
                    resolution_code: pb::invoice_case::ResolutionCode::SolvedSettlement.into(),
                    resolution_notes: "settled at 30".into(),
                },
                pb::propose_solution_request::LineOutcome {
                    line_id: before.lines[1].id.clone(),
                    outcome: L::ResolvedAccepted.into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await);
    assert_eq!(case.state(), C::Resolved);
    assert!(case.resolve_time.is_some(), "resolve_time is set");
    assert_eq!(
        case.resolution_code(),
        pb::invoice_case::ResolutionCode::SolvedCredit
    );
    assert_eq!(case.resolution_notes, "credit note issued");
    let lines = &case.lines;
    assert_eq!(
        log.next(&mut client, &case, A::ProposeSolution).await,
        [
            case_change(&case, Cause::Direct, C::WorkInProgress, C::Resolved),
            line_change(
                &lines[0],
                Cause::Cascade,
                L::WorkInProgress,
                L::ResolvedAccepted
            ),
            line_change(
                &lines[1],
                Cause::Cascade,
                L::WorkInProgress,
                L::ResolvedAccepted
            ),
            line_change(
                &lines[2],
                Cause::Cascade,
                L::AwaitingInfo,
                L::ResolvedDenied
            ),
        ]
    );

    // Line 1: its own entry, amount, code and notes.
    assert_eq!(lines[0].state(), L::ResolvedAccepted);
    assert_amount(lines[0].approved_amount.as_deref(), "30", "line 1");
    assert_eq!(
        lines[0].resolution_code(),
        pb::invoice_case::ResolutionCode::SolvedSettlement
    );
    assert_eq!(lines[0].resolution_notes, "settled at 30");
    // Line 2: accepted without an amount approves the disputed amount; the
    // case's code and notes.
    assert_eq!(lines[1].state(), L::ResolvedAccepted);
    assert_amount(lines[1].approved_amount.as_deref(), "12.34", "line 2");
    assert_eq!(
        lines[1].resolution_code(),
        pb::invoice_case::ResolutionCode::SolvedCredit
    );
    assert_eq!(lines[1].resolution_notes, "credit note issued");
    // Line 3: the default outcome, denied, approves 0.
    assert_eq!(lines[2].state(), L::ResolvedDenied);
    assert_amount(lines[2].approved_amount.as_deref(), "0", "line 3");
    assert_eq!(
        lines[2].resolution_code(),
        pb::invoice_case::ResolutionCode::SolvedCredit
    );
    assert_eq!(lines[2].resolution_notes, "credit note issued");
    // Lines 4 and 5 were final already: untouched.
    assert_eq!(lines[3], before.lines[3], "an already final line");
    assert_eq!(lines[4], before.lines[4], "an already final line");
    assert_eq!(
        lines[3].resolution_code(),
        pb::invoice_case::ResolutionCode::SolvedInvalidDispute
    );
    assert_eq!(lines[4].state(), L::Canceled);

    let case = ok(agent.close_case(close(&case.id)).await);
    assert_eq!(
        log.next(&mut client, &case, A::Close).await,
        [case_change(&case, Cause::Direct, C::Resolved, C::Closed)]
    );
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn propose_solution_with_an_outcome_per_line_and_no_default() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let (case, mut log) = case_in_progress(&mut client, &mut agent, &["40.00", "15.50"]).await;

    let case = ok(agent
        .propose_solution(pb::ProposeSolutionRequest {
            case_id: case.id.clone(),
            resolution_code: pb::invoice_case::ResolutionCode::SolvedWriteOff.into(),
            resolution_notes: "written off".into(),
            line_outcomes: vec![
                pb::propose_solution_request::LineOutcome {
                    line_id: case.lines[0].id.clone(),
                    outcome: L::ResolvedDenied.into(),
                    resolution_code: pb::invoice_case::ResolutionCode::SolvedInvalidDispute.into(),
                    ..Default::default()
                },
                pb::propose_solution_request::LineOutcome {
                    line_id: case.lines[1].id.clone(),
                    outcome: L::ResolvedAccepted.into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await);
    assert_eq!(case.state(), C::Resolved);
    assert_eq!(
        log.next(&mut client, &case, A::ProposeSolution).await,
        [
            case_change(&case, Cause::Direct, C::WorkInProgress, C::Resolved),
            line_change(
                &case.lines[0],
                Cause::Cascade,
                L::WorkInProgress,
                L::ResolvedDenied
            ),
            line_change(
                &case.lines[1],
                Cause::Cascade,
                L::WorkInProgress,
                L::ResolvedAccepted
            ),
        ]
    );
    let lines = &case.lines;
    assert_amount(lines[0].approved_amount.as_deref(), "0", "denied line");
    assert_eq!(
        lines[0].resolution_code(),
        pb::invoice_case::ResolutionCode::SolvedInvalidDispute
    );
    assert_eq!(lines[0].resolution_notes, "written off");
    assert_amount(
        lines[1].approved_amount.as_deref(),
        "15.50",
        "accepted line",
    );
    assert_eq!(
        lines[1].resolution_code(),
        pb::invoice_case::ResolutionCode::SolvedWriteOff
    );
    assert_eq!(lines[1].resolution_notes, "written off");
    assert_replay_matches(&mut client, &case.id).await;
}

#[tokio::test]
async fn propose_solution_without_an_outcome_for_every_open_line_names_the_lines() {
    let app = spawn_app().await;
    let mut client = app.admin().await;
    let mut agent = app.client_for("alice", &["agent"]).await;
    let (case, mut log) = case_in_progress(
        &mut client,
        &mut agent,
        &["40.00", "40.00", "40.00", "40.00"],
    )
    .await;
    let case = set(&mut agent, &case, 3, L::Canceled).await;
    log.next(&mut client, &case, A::SetLineState).await;
    let before = get(&mut client, &case.id).await;
    let numbers: Vec<&str> = before.lines.iter().map(|l| l.number.as_str()).collect();

    let request = |line_outcomes: Vec<pb::propose_solution_request::LineOutcome>| {
        pb::ProposeSolutionRequest {
            case_id: before.id.clone(),
            resolution_code: pb::invoice_case::ResolutionCode::SolvedCredit.into(),
            resolution_notes: "credit note issued".into(),
            line_outcomes,
            ..Default::default()
        }
    };
    let first_only = vec![pb::propose_solution_request::LineOutcome {
        line_id: before.lines[0].id.clone(),
        outcome: L::ResolvedAccepted.into(),
        ..Default::default()
    }];
    // (entries given, the open lines without an outcome)
    let attempts = [
        (first_only, vec![numbers[1], numbers[2]]),
        (Vec::new(), vec![numbers[0], numbers[1], numbers[2]]),
    ];
    for (entries, missing) in attempts {
        let context = format!("{} entries", entries.len());
        let status = refusal(agent.propose_solution(request(entries)).await, &context);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{context}: {status:?}"
        );
        let details = status.get_error_details();
        let bad_request = details
            .bad_request()
            .unwrap_or_else(|| panic!("{context}: no BadRequest in {status:?}"));
        let violation = bad_request
            .field_violations
            .iter()
            .find(|v| v.field == "line_outcomes")
            .unwrap_or_else(|| panic!("{context}: no line_outcomes violation: {bad_request:?}"));
        for number in &numbers {
            assert_eq!(
                violation.description.contains(number),
                missing.contains(number),
                "{context}: {number} in {:?}",
                violation.description
            );
        }
        log.unchanged(&mut client, &before, &context).await;
    }

    // With a default for the rest it goes through.
    let case = ok(agent
        .propose_solution(pb::ProposeSolutionRequest {
            default_outcome: L::ResolvedDenied.into(),
            ..request(Vec::new())
        })
        .await);
    assert_eq!(case.state(), C::Resolved);
    log.next(&mut client, &case, A::ProposeSolution).await;
    assert_replay_matches(&mut client, &case.id).await;
}

// ---- Submit needs an active line (§3.1) -----------------------------------

/// Asserts the refusal of SUBMIT for `case` (INVALID_STATE_TRANSITION, as
/// any refused action) naming the NO_ACTIVE_LINES precondition.
fn assert_no_active_lines(status: &tonic::Status, case: &pb::InvoiceCase, context: &str) {
    assert_refused(status, A::Submit, case, None, By::Case, context);
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("{context}: no ErrorInfo in {status:?}"));
    assert_eq!(
        info.metadata.get("precondition").map(String::as_str),
        Some("NO_ACTIVE_LINES"),
        "{context}: {info:?}"
    );
}

#[tokio::test]
async fn submit_without_an_active_line_is_refused() {
    let app = spawn_app().await;
    let mut client = app.admin().await;

    // Every line canceled.
    let case = create(&mut client, "ACME", 2).await;
    let mut log = Log::of(&mut client, &case).await;
    let case = set(&mut client, &case, 0, L::Canceled).await;
    log.next(&mut client, &case, A::SetLineState).await;
    let case = set(&mut client, &case, 1, L::Canceled).await;
    log.next(&mut client, &case, A::SetLineState).await;
    let before = get(&mut client, &case.id).await;
    let status = refusal(client.submit_case(submit(&case.id)).await, "all canceled");
    assert_no_active_lines(&status, &before, "all canceled");
    log.unchanged(&mut client, &before, "all canceled").await;

    // A line added later makes it submittable; the canceled ones stay.
    let case = add_line(&mut client, &case.id, "the real one").await;
    assert_eq!(
        log.next(&mut client, &case, A::AddLine).await,
        [line_change(
            &case.lines[2],
            Cause::Direct,
            L::Unspecified,
            L::Draft
        )]
    );
    let case = ok(client.submit_case(submit(&case.id)).await);
    assert_eq!(case.state(), C::New);
    assert_eq!(
        log.next(&mut client, &case, A::Submit).await,
        [
            case_change(&case, Cause::Direct, C::Draft, C::New),
            line_change(&case.lines[2], Cause::Cascade, L::Draft, L::New),
        ]
    );
    assert_replay_matches(&mut client, &case.id).await;

    // Every line removed.
    let case = create(&mut client, "ACME", 1).await;
    let mut log = Log::of(&mut client, &case).await;
    let removed = case.lines[0].clone();
    let case = ok(client
        .remove_case_line(pb::RemoveCaseLineRequest {
            case_id: case.id.clone(),
            line_id: removed.id.clone(),
            ..Default::default()
        })
        .await);
    assert!(case.lines.is_empty());
    assert_eq!(
        log.next(&mut client, &case, A::RemoveLine).await,
        [line_change(
            &removed,
            Cause::Direct,
            L::Draft,
            L::Unspecified
        )]
    );
    let before = get(&mut client, &case.id).await;
    let status = refusal(client.submit_case(submit(&case.id)).await, "no lines");
    assert_no_active_lines(&status, &before, "no lines");
    log.unchanged(&mut client, &before, "no lines").await;
    assert_replay_matches(&mut client, &case.id).await;
}
