//! The database refuses, on its own, rows that break the rules one row can
//! carry (domains for single fields, a constraint for what relates fields),
//! whoever writes them.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::helpers::{Client, case_in_state, cluster, spawn_app_on};
use invoice_cases::pb::invoice_case::State as CaseState;

/// Runs `sql` and returns the database's error, if any.
async fn refused(conn: &mut AsyncPgConnection, sql: &str) -> Option<String> {
    diesel::sql_query(sql)
        .execute(conn)
        .await
        .err()
        .map(|e| e.to_string())
}

async fn case(client: &mut Client, state: CaseState) -> String {
    case_in_state(client, state).await.id
}

#[tokio::test]
async fn rows_that_break_the_rules_are_refused_by_the_database() {
    let database_url = cluster().new_database();
    let app = spawn_app_on(&database_url).await;
    let mut admin = app.admin().await;
    let draft = case(&mut admin, CaseState::Draft).await;
    let open = case(&mut admin, CaseState::WorkInProgress).await;
    let mut conn = AsyncPgConnection::establish(&database_url)
        .await
        .expect("connect");

    let cases = [
        // A single field out of its domain.
        (
            format!("UPDATE invoice_cases SET state = 'ON_HOLD' WHERE id = '{draft}'"),
            "case_state",
        ),
        (
            format!("UPDATE invoice_cases SET priority = 5 WHERE id = '{draft}'"),
            "priority_level",
        ),
        (
            format!("UPDATE invoice_cases SET currency_code = 'eur' WHERE id = '{draft}'"),
            "currency_code",
        ),
        (
            format!("UPDATE invoice_cases SET short_description = '' WHERE id = '{draft}'"),
            "short_text",
        ),
        (
            format!("UPDATE invoice_cases SET revision = 0 WHERE id = '{draft}'"),
            "revision",
        ),
        (
            format!("UPDATE case_lines SET invoiced_amount = -1 WHERE case_id = '{draft}'"),
            "amount",
        ),
        (
            format!("UPDATE case_lines SET disputed_amount = 1.23456 WHERE case_id = '{draft}'"),
            "amount",
        ),
        (
            format!("UPDATE case_lines SET state = 'RESOLVED' WHERE case_id = '{draft}'"),
            "line_state",
        ),
        (
            format!("UPDATE case_events SET action = 'DELETE' WHERE case_id = '{draft}'"),
            "event_action",
        ),
        (
            format!("UPDATE case_events SET changes = '{{}}' WHERE case_id = '{draft}'"),
            "state_changes",
        ),
        // Fields that do not fit together.
        (
            format!("UPDATE invoice_cases SET assigned_to = NULL WHERE id = '{open}'"),
            "case_is_consistent",
        ),
        (
            format!("UPDATE invoice_cases SET state = 'CLOSED' WHERE id = '{open}'"),
            "case_is_consistent",
        ),
        (
            format!("UPDATE case_lines SET disputed_amount = 1000 WHERE case_id = '{draft}'"),
            "line_is_consistent",
        ),
        (
            format!("UPDATE case_lines SET approved_amount = 1 WHERE case_id = '{draft}'"),
            "line_is_consistent",
        ),
    ];
    for (sql, rule) in cases {
        let error = refused(&mut conn, &sql)
            .await
            .unwrap_or_else(|| panic!("the database accepted: {sql}"));
        assert!(
            error.contains(rule),
            "{sql}: refused by something else: {error}"
        );
    }
    // The refusals changed nothing.
    let case = crate::helpers::get(&mut admin, &draft).await;
    assert_eq!(case.state(), CaseState::Draft);
    assert_eq!(case.lines[0].invoiced_amount, "100.00");
}
