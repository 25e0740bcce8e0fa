//! Concurrent clients on one case: actions on a case run one after the
//! other, so exactly the actions the states allow succeed, each with one
//! event, and the invariants and the event log hold afterwards.

use std::{future::Future, sync::Arc};

use invoice_cases::pb::{
    self,
    case_line::State as L,
    invoice_case::State as C,
    state_change::{Cause, Transition},
};
use tokio::sync::Barrier;
use tonic::{Code, Status};

use crate::helpers::*;

/// Runs one call per client, all released at once; the results in client
/// order.
async fn all_at_once<F, Fut>(clients: Vec<Client>, call: F) -> Vec<Result<pb::InvoiceCase, Status>>
where
    F: Fn(usize, Client) -> Fut,
    Fut: Future<Output = Result<tonic::Response<pb::InvoiceCase>, Status>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(clients.len()));
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let barrier = barrier.clone();
        let call = call(i, client);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            call.await.map(tonic::Response::into_inner)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

/// Clients of `count` agents named `agent0`, `agent1`, …
async fn agents(app: &TestApp, count: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..count {
        clients.push(app.client_for(&format!("agent{i}"), &["agent"]).await);
    }
    clients
}

/// The successes; asserts every failure is an INVALID_STATE_TRANSITION
/// refusal of `action` (any of `actions`) in `state`.
fn successes(
    results: Vec<Result<pb::InvoiceCase, Status>>,
    refused: &[(&str, &str)],
) -> Vec<(usize, pb::InvoiceCase)> {
    let mut won = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(case) => won.push((i, case)),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                let details = tonic_types::StatusExt::get_error_details(&status);
                let info = details.error_info().expect("ErrorInfo detail");
                assert_eq!(info.reason, "INVALID_STATE_TRANSITION", "{info:?}");
                let action = info.metadata.get("action").cloned().unwrap_or_default();
                let state = info
                    .metadata
                    .get("currentState")
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    refused
                        .iter()
                        .any(|(a, s)| *a == action.as_str() && *s == state.as_str()),
                    "unexpected refusal {action} in {state}: {info:?}"
                );
            }
        }
    }
    won
}

async fn event_count(client: &mut Client, id: &str) -> usize {
    history(client, id).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_request_information_one_succeeds() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = case_in_state(&mut admin, C::WorkInProgress).await;
    let before = event_count(&mut admin, &case.id).await;

    let id = case.id.clone();
    let results = all_at_once(agents(&app, 20).await, |_, mut client| {
        let id = id.clone();
        async move { client.request_information(request_info(&id)).await }
    })
    .await;
    let won = successes(results, &[("REQUEST_INFORMATION", "AWAITING_INFO")]);
    assert_eq!(won.len(), 1, "exactly one succeeds");
    let (_, winner) = &won[0];
    assert_eq!(winner.state(), C::AwaitingInfo);

    let now = get(&mut admin, &id).await;
    assert_eq!(&now, winner);
    assert_invariants(&now);
    assert_eq!(event_count(&mut admin, &id).await, before + 1);
    assert_replay_matches(&mut admin, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_agents_assign_one_new_case_one_gets_it() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = case_in_state(&mut admin, C::New).await;
    let before = event_count(&mut admin, &case.id).await;

    let id = case.id.clone();
    let results = all_at_once(agents(&app, 20).await, |_, mut client| {
        let id = id.clone();
        async move { client.assign_to_me(assign(&id)).await }
    })
    .await;
    let won = successes(results, &[("ASSIGN_TO_ME", "WORK_IN_PROGRESS")]);
    assert_eq!(won.len(), 1, "exactly one succeeds");
    let (i, winner) = &won[0];
    assert_eq!(winner.assigned_to, format!("agent{i}"));

    let now = get(&mut admin, &id).await;
    assert_eq!(&now, winner);
    assert_eq!(now.state(), C::WorkInProgress);
    assert_invariants(&now);
    let events = history(&mut admin, &id).await;
    assert_eq!(events.len(), before + 1);
    assert_eq!(
        events.last().map(|e| e.actor.clone()),
        Some(format!("agent{i}"))
    );
    assert_replay_matches(&mut admin, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_and_cancel_race_on_a_draft_one_wins() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 3).await;
    let before = event_count(&mut admin, &case.id).await;

    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(app.client_for(&format!("rita{i}"), &["requester"]).await);
    }
    let id = case.id.clone();
    let results = all_at_once(clients, |i, mut client| {
        let id = id.clone();
        async move {
            if i % 2 == 0 {
                client.submit_case(submit(&id)).await
            } else {
                client.cancel_case(cancel(&id)).await
            }
        }
    })
    .await;
    let won = successes(
        results,
        &[
            ("SUBMIT", "NEW"),
            ("SUBMIT", "CANCELED"),
            ("CANCEL", "NEW"),
            ("CANCEL", "CANCELED"),
        ],
    );
    assert_eq!(won.len(), 1, "exactly one of 20 succeeds");
    let (i, winner) = &won[0];
    let expected = if i % 2 == 0 { C::New } else { C::Canceled };
    assert_eq!(winner.state(), expected);

    let now = get(&mut admin, &id).await;
    assert_eq!(&now, winner);
    assert_invariants(&now);
    assert_eq!(event_count(&mut admin, &id).await, before + 1);
    assert_replay_matches(&mut admin, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_information_and_propose_solution_race_one_wins() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = case_in_state(&mut admin, C::WorkInProgress).await;
    let before = event_count(&mut admin, &case.id).await;

    let id = case.id.clone();
    let results = all_at_once(agents(&app, 20).await, |i, mut client| {
        let id = id.clone();
        async move {
            if i % 2 == 0 {
                client.request_information(request_info(&id)).await
            } else {
                client.propose_solution(propose_all(&id)).await
            }
        }
    })
    .await;
    let won = successes(
        results,
        &[
            ("REQUEST_INFORMATION", "AWAITING_INFO"),
            ("REQUEST_INFORMATION", "RESOLVED"),
            ("PROPOSE_SOLUTION", "AWAITING_INFO"),
            ("PROPOSE_SOLUTION", "RESOLVED"),
        ],
    );
    assert_eq!(won.len(), 1, "exactly one of 20 succeeds");
    let (i, winner) = &won[0];
    let expected = if i % 2 == 0 {
        C::AwaitingInfo
    } else {
        C::Resolved
    };
    assert_eq!(winner.state(), expected);
    let now = get(&mut admin, &id).await;
    assert_eq!(&now, winner);
    assert_invariants(&now);
    assert_eq!(event_count(&mut admin, &id).await, before + 1);
    assert_replay_matches(&mut admin, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_lines_resolved_at_once_resolve_the_case_exactly_once() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 20).await;
    ok(admin.submit_case(submit(&case.id)).await);
    let case = ok(admin.assign_to_me(assign(&case.id)).await);
    assert_eq!(case.state(), C::WorkInProgress);
    let before = event_count(&mut admin, &case.id).await;

    let id = case.id.clone();
    let line_ids: Vec<String> = case.lines.iter().map(|l| l.id.clone()).collect();
    let results = all_at_once(agents(&app, 20).await, |i, mut client| {
        let id = id.clone();
        let line_id = line_ids[i].clone();
        let target = if i % 2 == 0 {
            L::ResolvedAccepted
        } else {
            L::ResolvedDenied
        };
        async move { client.set_line_state(set_line(&id, &line_id, target)).await }
    })
    .await;
    let won = successes(results, &[]);
    assert_eq!(won.len(), 20, "every line action succeeds");
    let resolved: Vec<_> = won
        .iter()
        .filter(|(_, c)| c.state() == C::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1, "exactly one response resolves the case");
    let etags: std::collections::HashSet<&str> = won.iter().map(|(_, c)| c.etag.as_str()).collect();
    assert_eq!(etags.len(), 20, "every action its own etag");
    for (_, response) in &won {
        assert_invariants(response);
    }

    let now = get(&mut admin, &id).await;
    assert_eq!(now.state(), C::Resolved);
    assert!(now.resolve_time.is_some());
    for (i, line) in now.lines.iter().enumerate() {
        let expected = if i % 2 == 0 {
            L::ResolvedAccepted
        } else {
            L::ResolvedDenied
        };
        assert_eq!(line.state(), expected, "line {i}");
    }
    assert_invariants(&now);

    let events = history(&mut admin, &id).await;
    assert_eq!(events.len(), before + 20, "one event per action");
    let cascades: Vec<_> = events
        .iter()
        .flat_map(|e| e.changes.iter())
        .filter(|c| {
            matches!(&c.transition, Some(Transition::CaseTransition(t)) if t.to_state() == C::Resolved)
        })
        .collect();
    assert_eq!(cascades.len(), 1, "R1 applied exactly once");
    assert_eq!(cascades[0].cause(), Cause::Cascade);
    assert_eq!(
        events.last().map(|e| e.etag.as_str()),
        Some(now.etag.as_str())
    );
    assert_replay_matches(&mut admin, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_actions_with_one_etag_one_succeeds_the_rest_are_aborted() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 20).await;
    ok(admin.submit_case(submit(&case.id)).await);
    let case = ok(admin.assign_to_me(assign(&case.id)).await);
    let before = event_count(&mut admin, &case.id).await;

    let id = case.id.clone();
    let etag = case.etag.clone();
    let line_ids: Vec<String> = case.lines.iter().map(|l| l.id.clone()).collect();
    let results = all_at_once(agents(&app, 20).await, |i, mut client| {
        let request = pb::SetLineStateRequest {
            etag: etag.clone(),
            ..set_line(&id, &line_ids[i], L::AwaitingInfo)
        };
        async move { client.set_line_state(request).await }
    })
    .await;
    let mut won = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(case) => won.push((i, case)),
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one succeeds with the etag");
    let (i, winner) = &won[0];
    let now = get(&mut admin, &id).await;
    assert_eq!(&now, winner);
    for (j, line) in now.lines.iter().enumerate() {
        let expected = if j == *i {
            L::AwaitingInfo
        } else {
            L::WorkInProgress
        };
        assert_eq!(line.state(), expected, "line {j}");
    }
    assert_invariants(&now);
    assert_eq!(event_count(&mut admin, &id).await, before + 1);
    assert_replay_matches(&mut admin, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lines_added_concurrently_are_all_kept() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = case_in_state(&mut admin, C::AwaitingInfo).await;
    let before = event_count(&mut admin, &case.id).await;

    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(app.client_for(&format!("rita{i}"), &["requester"]).await);
    }
    let id = case.id.clone();
    let results = all_at_once(clients, |i, mut client| {
        let request = pb::AddCaseLineRequest {
            case_id: id.clone(),
            line: Some(line(&format!("concurrent {i}"))),
            ..Default::default()
        };
        async move { client.add_case_line(request).await }
    })
    .await;
    let won = successes(results, &[]);
    assert_eq!(won.len(), 20);

    let now = get(&mut admin, &id).await;
    assert_eq!(now.lines.len(), 22);
    // A line entering WORK_IN_PROGRESS moves an AWAITING_INFO case back (R2).
    assert_eq!(now.state(), C::WorkInProgress);
    assert!(now.lines.iter().all(|l| l.state() == L::WorkInProgress));
    let numbers: std::collections::HashSet<&str> =
        now.lines.iter().map(|l| l.number.as_str()).collect();
    assert_eq!(numbers.len(), 22, "unique line numbers");
    assert_invariants(&now);
    let events = history(&mut admin, &id).await;
    assert_eq!(events.len(), before + 20);
    let back_to_work = events
        .iter()
        .flat_map(|e| e.changes.iter())
        .filter(|c| {
            matches!(
                &c.transition,
                Some(Transition::CaseTransition(t))
                    if t.from_state() == C::AwaitingInfo && t.to_state() == C::WorkInProgress
            )
        })
        .count();
    assert_eq!(back_to_work, 1, "R2 applied once");
    assert_replay_matches(&mut admin, &id).await;
}

/// Two replicas on one database: one acts on a case it has seen, after the
/// other changed it. What the first one remembers of the case never
/// decides an answer: refusals, etags and writes follow the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_acts_on_the_database_state_not_on_what_it_saw_last() {
    let database_url = cluster().new_database();
    let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
    let a = spawn_app_with(settings(&database_url, &secret), secret.clone()).await;
    let b = spawn_app_with(settings(&database_url, &secret), secret.clone()).await;
    let mut via_a = a.admin().await;
    let mut via_b = b.admin().await;

    // A creates and submits: it has seen the case NEW.
    let case = create(&mut via_a, "ACME", 2).await;
    let id = case.id.clone();
    ok(via_a.submit_case(submit(&id)).await);
    // B takes it: WORK_IN_PROGRESS, etag 3.
    let taken = ok(via_b.assign_to_me(assign(&id)).await);
    assert_eq!(taken.etag, "3");

    // Through A, an action NEW refuses but WORK_IN_PROGRESS allows.
    let waiting = ok(via_a.request_information(request_info(&id)).await);
    assert_eq!(waiting.state(), pb::invoice_case::State::AwaitingInfo);
    assert_eq!(waiting.etag, "4");

    // B moves it on; through A, the etag B returned is current, the one A
    // returned is stale.
    let back = ok(via_b.information_received(info_received(&id)).await);
    let stale = expect_code(
        via_a
            .request_information(pb::RequestInformationRequest {
                case_id: id.clone(),
                etag: waiting.etag.clone(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    assert!(stale.message().contains("stale"), "{stale:?}");
    let again = ok(via_a
        .request_information(pb::RequestInformationRequest {
            case_id: id.clone(),
            etag: back.etag.clone(),
            ..Default::default()
        })
        .await);
    assert_eq!(again.state(), pb::invoice_case::State::AwaitingInfo);

    // B cancels a line; A's SetLineState on it is refused for the line's
    // state in the database, not in A's memory.
    let line = again.lines[0].id.clone();
    ok(via_b
        .set_line_state(set_line(&id, &line, pb::case_line::State::Canceled))
        .await);
    expect_invalid_transition(
        via_a
            .set_line_state(set_line(&id, &line, pb::case_line::State::WorkInProgress))
            .await,
        "SET_LINE_STATE",
        "CANCELED",
    );
    // One event per committed action, in order.
    let events = history(&mut via_b, &id).await;
    let etags: Vec<&str> = events.iter().map(|e| e.etag.as_str()).collect();
    assert_eq!(etags, ["1", "2", "3", "4", "5", "6", "7"]);
    assert_replay_matches(&mut via_a, &id).await;
}
