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
