//! ListInvoiceCases is served by indexes: on a table of realistic size,
//! PostgreSQL's plan for every filter walks an index in the page's order
//! and reads each page's lines by index — no scan and no sort of a table.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use invoice_cases::{
    domain::{CaseState, Priority},
    store::{Access, CaseFilter, CasePageKey, Comparison, PoolSettings, Store},
};

use crate::helpers::cluster;

/// 20 000 cases over 50 accounts, most of them CLOSED, every state and
/// priority (AWAITING_INFO and CRITICAL rare: one case in a hundred), the
/// open and closed ones assigned to one of 50 agents; two lines each.
const SEED: &str = "
INSERT INTO invoice_cases (id, number, state, account_id, invoice_number, request_source,
    short_description, priority, currency_code, assigned_to, opened_by, create_time,
    update_time, submit_time, resolve_time, close_time, revision)
SELECT gen_random_uuid(), 'INVCS' || lpad(n::text, 7, '0'), s.state, 'ACME-' || (n % 50),
    'ARINV' || n, 'SINGLE_INVOICE', 'Seeded case',
    CASE WHEN n % 100 = 7 THEN 1 ELSE 2 + n % 3 END, 'EUR',
    CASE WHEN s.state IN ('WORK_IN_PROGRESS', 'AWAITING_INFO', 'RESOLVED', 'CLOSED')
         THEN 'agent-' || (n % 50) END,
    'seeder', now() - n * interval '1 minute', now(),
    CASE WHEN s.state NOT IN ('DRAFT', 'CANCELED') THEN now() END,
    CASE WHEN s.state IN ('RESOLVED', 'CLOSED') THEN now() END,
    CASE WHEN s.state = 'CLOSED' THEN now() END,
    1
FROM generate_series(1, 20000) AS n
CROSS JOIN LATERAL (SELECT CASE WHEN n % 100 = 0 THEN 'AWAITING_INFO'
    ELSE (ARRAY['DRAFT', 'NEW', 'WORK_IN_PROGRESS', 'RESOLVED', 'CLOSED', 'CLOSED', 'CLOSED',
                'CLOSED', 'CLOSED', 'CANCELED'])[1 + n % 10] END AS state) s;
INSERT INTO case_lines (id, case_id, position, number, state, dispute_code, short_description,
    invoiced_amount, disputed_amount, approved_amount, create_time, update_time)
SELECT gen_random_uuid(), c.id, p, 'INVCSL' || lpad((2 * row_number() OVER () + p)::text, 8, '0'),
    CASE c.state WHEN 'RESOLVED' THEN 'RESOLVED_ACCEPTED' WHEN 'CLOSED' THEN 'RESOLVED_DENIED'
                 WHEN 'CANCELED' THEN 'CANCELED' ELSE c.state END,
    'OTHER', 'Seeded line', 100, 40,
    CASE WHEN c.state IN ('RESOLVED', 'CLOSED') THEN 0 END,
    c.create_time, c.update_time
FROM invoice_cases c CROSS JOIN generate_series(1, 2) AS p;
ANALYZE invoice_cases;
ANALYZE case_lines;
";

fn filter(f: impl FnOnce(&mut CaseFilter)) -> CaseFilter {
    let mut filter = CaseFilter::default();
    f(&mut filter);
    filter
}

#[tokio::test]
async fn every_list_filter_is_served_by_an_index_in_page_order() {
    let database_url = cluster().new_database();
    let mut conn = AsyncPgConnection::establish(&database_url)
        .await
        .expect("connect");
    for statement in SEED.split(';').filter(|s| !s.trim().is_empty()) {
        diesel::sql_query(statement)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let store = Store::new(&database_url, &PoolSettings::default()).expect("a store");

    let eq = Comparison::Equal;
    let ne = Comparison::NotEqual;
    // (what, filter, the index that must serve it): the values are rare
    // ones, which only their own index finds without reading most of the
    // table.
    let cases: Vec<(&str, CaseFilter, &str)> = vec![
        (
            "no filter",
            CaseFilter::default(),
            "invoice_cases_create_time_idx",
        ),
        (
            "state",
            filter(|f| f.states.push((eq, CaseState::AwaitingInfo))),
            "invoice_cases_state_idx",
        ),
        (
            "account",
            filter(|f| f.accounts.push((eq, "ACME-7".into()))),
            "invoice_cases_account_idx",
        ),
        (
            "assignee",
            filter(|f| f.assignees.push((eq, Some("agent-3".into())))),
            "invoice_cases_assigned_to_idx",
        ),
        // A common value: the newest-first index and a filter will do.
        (
            "unassigned",
            filter(|f| f.assignees.push((eq, None))),
            "invoice_cases_",
        ),
        (
            "priority",
            filter(|f| f.priorities.push((eq, Priority::Critical))),
            "invoice_cases_priority_idx",
        ),
        // Two conditions: PostgreSQL may combine both indexes and sort the
        // few cases that match both (never the table).
        (
            "state and account",
            filter(|f| {
                f.states.push((eq, CaseState::New));
                f.accounts.push((eq, "ACME-11".into()));
            }),
            "",
        ),
        (
            "state other than",
            filter(|f| f.states.push((ne, CaseState::Closed))),
            "invoice_cases_create_time_idx",
        ),
    ];
    let after = Some(CasePageKey {
        create_time: chrono::Utc::now() - chrono::Duration::hours(100),
        id: uuid::Uuid::max(),
    });
    for (what, filter, index) in cases {
        for (page, after) in [("first page", None), ("a later page", after)] {
            let plan = store
                .explain_list_cases(&filter, &Access::all(), after, 50)
                .await
                .expect("explain")
                .join("\n");
            let context = format!("{what}, {page}:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "a table scan: {context}");
            if index.is_empty() {
                assert!(
                    ["state", "account"].iter().any(|field| {
                        plan.contains(&format!("Index Scan on invoice_cases_{field}_idx"))
                            || plan.contains(&format!("Index Scan using invoice_cases_{field}_idx"))
                    }),
                    "not served by the filters' indexes: {context}"
                );
            } else {
                assert!(
                    plan.contains(&format!("Index Scan using {index}")),
                    "not served by {index}: {context}"
                );
                assert!(!plan.contains("Sort"), "a sort: {context}");
            }
            assert!(
                plan.contains("Index Scan using line_position_unique"),
                "lines not read by index: {context}"
            );
        }
    }
}
