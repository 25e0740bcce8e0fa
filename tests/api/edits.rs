//! Edits as events: an UpdateInvoiceCase and an UpdateCaseLine each make
//! one UPDATE event, with exactly the changed fields, in ListStateChanges
//! and on a watch stream alike; an edit that changes nothing makes none.

use invoice_cases::pb::{
    self, invoice_case::Priority, state_change_event::Action as A,
    watch_state_changes_request::Start,
};
use prost_types::FieldMask;

use crate::{helpers::*, watch_helpers::*};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn change(line: Option<&pb::CaseLine>, field: &str, old: &str, new: &str) -> pb::FieldChange {
    pb::FieldChange {
        line_id: line.map(|l| l.id.clone()).unwrap_or_default(),
        line_number: line.map(|l| l.number.clone()).unwrap_or_default(),
        field: field.into(),
        old_value: old.into(),
        new_value: new.into(),
    }
}

#[tokio::test]
async fn edits_are_update_events_in_the_history_and_on_watch_streams() {
    let app = spawn_app().await;
    let mut agent = app.client_for("agnes", &["agent"]).await;
    let mut admin = app.admin().await;
    let case = case_in_state(&mut admin, pb::invoice_case::State::WorkInProgress).await;
    let mut by_case = open(&mut agent, watch(&case.number, "", None)).await;
    let mut by_account = open(
        &mut agent,
        watch(
            "",
            "ACME",
            Some(Start::FromNow(pb::watch_state_changes_request::FromNow {})),
        ),
    )
    .await;

    let edited = ok(agent
        .update_invoice_case(pb::UpdateInvoiceCaseRequest {
            case_id: case.id.clone(),
            etag: case.etag.clone(),
            comment: "customer called".into(),
            invoice_case: Some(pb::InvoiceCase {
                priority: Priority::High.into(),
                description: "Both lines are wrong".into(),
                // Not named: ignored.
                currency_code: "USD".into(),
                ..Default::default()
            }),
            update_mask: mask(&["priority", "description"]),
            ..Default::default()
        })
        .await);
    assert_eq!(edited.priority(), Priority::High);
    assert_eq!(edited.description, "Both lines are wrong");
    assert_eq!(edited.currency_code, "EUR");
    // Nothing changes: no event.
    let same = ok(agent
        .update_invoice_case(pb::UpdateInvoiceCaseRequest {
            case_id: case.id.clone(),
            invoice_case: Some(pb::InvoiceCase {
                priority: Priority::High.into(),
                ..Default::default()
            }),
            update_mask: mask(&["priority"]),
            ..Default::default()
        })
        .await);
    assert_eq!(same, edited);
    let line = edited.lines[1].clone();
    let lowered = ok(agent
        .update_case_line(pb::UpdateCaseLineRequest {
            case_id: case.number.clone(),
            line_id: line.id.clone(),
            line: Some(pb::CaseLine {
                disputed_amount: "25.50".into(),
                disputed_quantity: Some("3".into()),
                ..Default::default()
            }),
            update_mask: mask(&["disputed_quantity", "disputed_amount"]),
            ..Default::default()
        })
        .await);
    assert_eq!(lowered.lines[1].disputed_amount, "25.50");
    assert_eq!(lowered.lines[0], edited.lines[0]);

    let log = history(&mut admin, &case.id).await;
    let edits: Vec<_> = log
        .iter()
        .filter(|e| e.action() == A::Update)
        .cloned()
        .collect();
    assert_eq!(edits.len(), 2, "{log:?}");
    assert_eq!(
        edits[0].field_changes,
        [
            change(None, "priority", "LOW", "HIGH"),
            change(None, "description", "", "Both lines are wrong"),
        ]
    );
    assert!(edits[0].changes.is_empty());
    assert_eq!(edits[0].comment, "customer called");
    assert_eq!(edits[0].actor, "agnes");
    assert_eq!(edits[0].etag, edited.etag);
    assert_eq!(
        edits[1].field_changes,
        [
            change(Some(&line), "disputed_quantity", "", "3"),
            change(Some(&line), "disputed_amount", "40.00", "25.50"),
        ]
    );
    assert_eq!(edits[1].etag, lowered.etag);

    // The streams deliver the same events, and nothing for the no-op.
    for stream in [&mut by_case, &mut by_account] {
        let streamed = read_events(stream, 2).await;
        assert_eq!(streamed, edits);
        let after = read_until_progress(stream, 1).await;
        assert!(after.events.is_empty(), "{:?}", after.events);
    }

    // A replay of the log from the beginning yields the stored case.
    assert_replay_matches(&mut admin, &case.id).await;
    let mut replay = open(
        &mut admin,
        watch(
            &case.id,
            "",
            Some(Start::FromBeginning(
                pb::watch_state_changes_request::FromBeginning {},
            )),
        ),
    )
    .await;
    let replayed = read_events(&mut replay, log.len()).await;
    assert_eq!(replayed, log);
}
