//! The whole lifecycle through the API, with the event log checked.

use invoice_cases::pb::{self, case_line::State as L, invoice_case::State as C};

use crate::helpers::*;

#[tokio::test]
async fn a_case_runs_its_whole_lifecycle() {
    let app = spawn_app().await;
    let mut requester = app.client_for("rita", &["requester"]).await;
    let mut agent = app.client_for("alice", &["agent"]).await;

    let case = create(&mut requester, "ACME", 2).await;
    assert_eq!(case.state(), C::Draft);
    assert!(case.number.starts_with("INVCS"), "{}", case.number);
    assert_eq!(case.opened_by, "rita");
    assert!(case.lines.iter().all(|l| l.state() == L::Draft));
    assert_invariants(&case);

    let case = ok(requester.submit_case(submit(&case.id)).await);
    assert_eq!(case.state(), C::New);
    assert!(case.lines.iter().all(|l| l.state() == L::New));
    assert_invariants(&case);

    let case = ok(agent.assign_to_me(assign(&case.number)).await);
    assert_eq!(case.state(), C::WorkInProgress);
    assert_eq!(case.assigned_to, "alice");
    assert!(case.lines.iter().all(|l| l.state() == L::WorkInProgress));
    assert_invariants(&case);

    let first = case.lines[0].id.clone();
    let second = case.lines[1].number.clone();
    let case = ok(agent
        .set_line_state(set_line(&case.id, &first, L::ResolvedAccepted))
        .await);
    assert_eq!(case.state(), C::WorkInProgress);
    assert_invariants(&case);
    let case = ok(agent
        .set_line_state(set_line(&case.id, &second, L::ResolvedDenied))
        .await);
    assert_eq!(case.state(), C::Resolved, "R1: every line final");
    assert_invariants(&case);

    let case = ok(agent.close_case(close(&case.id)).await);
    assert_eq!(case.state(), C::Closed);
    assert!(case.close_time.is_some());
    assert_invariants(&case);

    let events = history(&mut agent, &case.id).await;
    let actions: Vec<_> = events.iter().map(|e| e.action()).collect();
    use pb::state_change_event::Action as A;
    assert_eq!(
        actions,
        [
            A::Create,
            A::Submit,
            A::AssignToMe,
            A::SetLineState,
            A::SetLineState,
            A::Close
        ]
    );
    assert_eq!(events[0].actor, "rita");
    assert_eq!(events[2].actor, "alice");
    assert_replay_matches(&mut agent, &case.id).await;
}

/// Every mutating request carries a comment, recorded on its event: the
/// create's on CREATE, and AddCaseLine's and RemoveCaseLine's on theirs.
/// A comment over 4000 characters is refused on each, naming `comment`.
#[tokio::test]
async fn comments_of_create_add_and_remove_line_are_recorded_on_their_events() {
    use pb::state_change_event::Action as A;

    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let long = "c".repeat(4001);
    let status = expect_code(
        admin
            .create_invoice_case(pb::CreateInvoiceCaseRequest {
                invoice_case: Some(new_case("ACME", 1)),
                comment: long.clone(),
                ..Default::default()
            })
            .await,
        tonic::Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["comment"]);
    assert!(all_cases(&mut admin).await.is_empty(), "nothing created");

    let case = ok(admin
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(new_case("ACME", 1)),
            comment: "opened on the phone".into(),
            ..Default::default()
        })
        .await);
    let add = |comment: &str| pb::AddCaseLineRequest {
        case_id: case.id.clone(),
        line: Some(line("added")),
        comment: comment.to_owned(),
        ..Default::default()
    };
    let status = expect_code(
        admin.add_case_line(add(&long)).await,
        tonic::Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["comment"]);
    let added = ok(admin.add_case_line(add("one more line")).await);
    assert_eq!(added.lines.len(), 2);
    let remove = |comment: &str| pb::RemoveCaseLineRequest {
        case_id: case.number.clone(),
        line_id: added.lines[1].id.clone(),
        comment: comment.to_owned(),
        ..Default::default()
    };
    let status = expect_code(
        admin.remove_case_line(remove(&long)).await,
        tonic::Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["comment"]);
    let removed = ok(admin.remove_case_line(remove("added by mistake")).await);
    assert_eq!(removed.lines.len(), 1);

    let events = history(&mut admin, &case.id).await;
    let recorded: Vec<(A, &str)> = events
        .iter()
        .map(|e| (e.action(), e.comment.as_str()))
        .collect();
    assert_eq!(
        recorded,
        [
            (A::Create, "opened on the phone"),
            (A::AddLine, "one more line"),
            (A::RemoveLine, "added by mistake"),
        ]
    );
    assert_replay_matches(&mut admin, &case.id).await;
}
