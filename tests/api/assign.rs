//! AssignCase: a lead (or admin) gives a case to a named agent and group.
//! A NEW case goes into work as with Assign to me; an open or RESOLVED
//! case changes hands without a state change; each assignment is one
//! ASSIGN event with the assignee and group from and to, in the history and
//! on watch streams; the same assignment again makes none.

use invoice_cases::pb::{
    self, invoice_case::State as CaseState, state_change_event::Action as A,
    watch_state_changes_request::Start,
};
use tonic::Code;

use crate::{helpers::*, watch_helpers::*};

fn assign_to(id: &str, assignee: &str, group: &str) -> pb::AssignCaseRequest {
    pb::AssignCaseRequest {
        case_id: id.to_owned(),
        assignee: assignee.to_owned(),
        assignment_group: group.to_owned(),
        ..Default::default()
    }
}

fn change(field: &str, old: &str, new: &str) -> pb::FieldChange {
    pb::FieldChange {
        field: field.into(),
        old_value: old.into(),
        new_value: new.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn assignments_are_assign_events_in_the_history_and_on_watch_streams() {
    let app = spawn_app().await;
    let mut lead = app.client_for("lena", &["lead"]).await;
    let mut admin = app.admin().await;
    let case = case_in_state(&mut admin, CaseState::New).await;
    let mut stream = open(
        &mut lead,
        watch(
            &case.id,
            "",
            Some(Start::FromNow(pb::watch_state_changes_request::FromNow {})),
        ),
    )
    .await;

    // From NEW: into work for the named agent, lines with it.
    let taken = ok(lead
        .assign_case(pb::AssignCaseRequest {
            etag: case.etag.clone(),
            comment: "billing disputes go to Anna".into(),
            ..assign_to(&case.number, "anna", "billing")
        })
        .await);
    assert_eq!(taken.state(), CaseState::WorkInProgress);
    assert_eq!(taken.assigned_to, "anna");
    assert_eq!(taken.assignment_group, "billing");
    assert!(
        taken
            .lines
            .iter()
            .all(|l| l.state() == pb::case_line::State::WorkInProgress),
        "{:?}",
        taken.lines
    );
    assert_ne!(taken.etag, case.etag);

    // In progress: another agent, no group; no state change.
    let moved = ok(lead.assign_case(assign_to(&case.id, "ben", "")).await);
    assert_eq!(moved.state(), CaseState::WorkInProgress);
    assert_eq!(moved.assigned_to, "ben");
    assert_eq!(moved.assignment_group, "");
    assert_ne!(moved.etag, taken.etag);

    // The same assignment again: nothing changes, no event.
    let same = ok(lead.assign_case(assign_to(&case.id, "ben", "")).await);
    assert_eq!(same, moved);

    // Awaiting information and resolved cases change hands too.
    let waiting = ok(admin.request_information(request_info(&case.id)).await);
    let waiting_moved = ok(lead.assign_case(assign_to(&case.id, "cleo", "")).await);
    assert_eq!(waiting_moved.state(), CaseState::AwaitingInfo);
    assert_eq!(waiting_moved.assigned_to, "cleo");
    assert_ne!(waiting_moved.etag, waiting.etag);
    ok(admin.information_received(info_received(&case.id)).await);
    ok(admin.propose_solution(propose_all(&case.id)).await);
    let resolved = ok(lead.assign_case(assign_to(&case.id, "dora", "ar")).await);
    assert_eq!(resolved.state(), CaseState::Resolved);
    assert_eq!(resolved.assigned_to, "dora");

    let log = history(&mut admin, &case.id).await;
    let assigns: Vec<_> = log
        .iter()
        .filter(|e| e.action() == A::Assign)
        .cloned()
        .collect();
    assert_eq!(assigns.len(), 4, "{log:?}");
    assert_eq!(
        assigns[0].field_changes,
        [
            change("assigned_to", "", "anna"),
            change("assignment_group", "", "billing"),
        ]
    );
    assert_eq!(assigns[0].comment, "billing disputes go to Anna");
    assert_eq!(assigns[0].actor, "lena");
    assert_eq!(assigns[0].etag, taken.etag);
    // The case and its lines went into work: the direct change first.
    let first = &assigns[0].changes;
    assert_eq!(first.len(), 1 + case.lines.len(), "{first:?}");
    assert!(
        matches!(
            &first[0].transition,
            Some(pb::state_change::Transition::CaseTransition(t))
                if t.from_state() == CaseState::New && t.to_state() == CaseState::WorkInProgress
        ),
        "{first:?}"
    );
    assert_eq!(first[0].cause(), pb::state_change::Cause::Direct);
    assert_eq!(
        assigns[1].field_changes,
        [
            change("assigned_to", "anna", "ben"),
            change("assignment_group", "billing", ""),
        ]
    );
    assert!(assigns[1].changes.is_empty(), "{:?}", assigns[1].changes);
    assert_eq!(
        assigns[2].field_changes,
        [change("assigned_to", "ben", "cleo")]
    );
    assert_eq!(
        assigns[3].field_changes,
        [
            change("assigned_to", "cleo", "dora"),
            change("assignment_group", "", "ar"),
        ]
    );

    // The stream delivered every event of the log since it opened, in
    // order, and nothing for the repeated assignment.
    let since: Vec<_> = log
        .iter()
        .skip_while(|e| e.action() != A::Assign)
        .cloned()
        .collect();
    let streamed = read_events(&mut stream, since.len()).await;
    assert_eq!(streamed, since);
    let after = read_until_progress(&mut stream, 1).await;
    assert!(after.events.is_empty(), "{:?}", after.events);

    assert_replay_matches(&mut admin, &case.id).await;
}

#[tokio::test]
async fn a_case_is_assigned_only_while_new_open_or_resolved() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    for (state, name) in [
        (CaseState::Draft, "DRAFT"),
        (CaseState::Closed, "CLOSED"),
        (CaseState::Canceled, "CANCELED"),
    ] {
        let case = case_in_state(&mut admin, state).await;
        let events = history(&mut admin, &case.id).await.len();
        expect_invalid_transition(
            admin.assign_case(assign_to(&case.id, "anna", "")).await,
            "ASSIGN",
            name,
        );
        assert_eq!(get(&mut admin, &case.id).await, case);
        assert_eq!(history(&mut admin, &case.id).await.len(), events);
    }
}

#[tokio::test]
async fn bad_assignments_name_their_fields_and_stale_etags_abort() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = case_in_state(&mut admin, CaseState::WorkInProgress).await;
    let status = expect_code(
        admin.assign_case(assign_to(&case.id, "", "")).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["assignee"]);
    let status = expect_code(
        admin
            .assign_case(assign_to(&case.id, &"a".repeat(256), &"g".repeat(65)))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["assignee", "assignment_group"]);
    let status = expect_code(
        admin.assign_case(assign_to(&case.id, "anna\n", "")).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["assignee"]);
    expect_code(
        admin
            .assign_case(pb::AssignCaseRequest {
                etag: "stale".into(),
                ..assign_to(&case.id, "anna", "")
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(get(&mut admin, &case.id).await, case);

    // A request id makes it idempotent: the retry gets the first reply,
    // even after the case changed.
    let request = pb::AssignCaseRequest {
        request_id: "5f0c6b8e-3c1a-4d52-9a3e-2b7f1f0e9d11".into(),
        ..assign_to(&case.id, "anna", "billing")
    };
    let first = ok(admin.assign_case(request.clone()).await);
    ok(admin.assign_case(assign_to(&case.id, "ben", "")).await);
    assert_eq!(ok(admin.assign_case(request).await), first);
    assert_eq!(get(&mut admin, &case.id).await.assigned_to, "ben");
}
