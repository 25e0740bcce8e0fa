//! Lists (SPEC §5, AIP-158/160): ListInvoiceCases' pages and filters, and
//! ListStateChanges' pages.

use std::collections::HashSet;

use invoice_cases::pb::{
    self,
    invoice_case::{Priority, State as C},
    state_change_event::Action as A,
};
use tonic::Code;

use crate::helpers::*;

fn list_request(filter: &str, page_size: i32, page_token: &str) -> pb::ListInvoiceCasesRequest {
    pb::ListInvoiceCasesRequest {
        page_size,
        page_token: page_token.to_owned(),
        filter: filter.to_owned(),
    }
}

/// Every page of a list: the pages' lengths and all cases in order.
async fn all_pages(
    client: &mut Client,
    filter: &str,
    page_size: i32,
) -> (Vec<usize>, Vec<pb::InvoiceCase>) {
    let mut sizes = Vec::new();
    let mut cases = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ok(client
            .list_invoice_cases(list_request(filter, page_size, &page_token))
            .await);
        sizes.push(page.invoice_cases.len());
        cases.extend(page.invoice_cases);
        if page.next_page_token.is_empty() {
            return (sizes, cases);
        }
        assert!(sizes.len() < 1000, "the pages never end");
        page_token = page.next_page_token;
    }
}

fn numbers(cases: &[pb::InvoiceCase]) -> Vec<String> {
    cases.iter().map(|c| c.number.clone()).collect()
}

#[tokio::test]
async fn cases_are_listed_newest_first_each_exactly_once() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(create(&mut admin, &format!("ACCOUNT{}", i % 3), 1).await);
    }
    let newest_first: Vec<String> = created.iter().rev().map(|c| c.number.clone()).collect();

    let (sizes, cases) = all_pages(&mut admin, "", 5).await;
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    assert_eq!(numbers(&cases), newest_first);
    // The listed cases are whole, lines included.
    for (listed, made) in cases.iter().zip(created.iter().rev()) {
        assert_eq!(listed, made);
    }

    // A page that ends exactly at the end has no next page.
    let (sizes, cases) = all_pages(&mut admin, "", 23).await;
    assert_eq!(sizes, [23]);
    assert_eq!(numbers(&cases), newest_first);
    let (sizes, _) = all_pages(&mut admin, "", 1).await;
    assert_eq!(sizes, vec![1; 23]);

    // The same token gives the same page again.
    let first = ok(admin.list_invoice_cases(list_request("", 5, "")).await);
    let second = ok(admin
        .list_invoice_cases(list_request("", 5, &first.next_page_token))
        .await);
    let again = ok(admin
        .list_invoice_cases(list_request("", 5, &first.next_page_token))
        .await);
    assert_eq!(second, again);

    // Cases created after the first page do not shift the later pages.
    create(&mut admin, "ACCOUNT0", 1).await;
    let after_insert = ok(admin
        .list_invoice_cases(list_request("", 5, &first.next_page_token))
        .await);
    assert_eq!(after_insert, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn page_size_zero_means_fifty_and_large_sizes_are_capped_at_five_hundred() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut client = app.admin().await;
        tasks.push(tokio::spawn(async move {
            let count = if t == 0 { 67 } else { 62 };
            let mut numbers = Vec::new();
            for _ in 0..count {
                numbers.push(create(&mut client, "ACME", 0).await.number);
            }
            numbers
        }));
    }
    let mut created = HashSet::new();
    for task in tasks {
        created.extend(task.await.expect("task"));
    }
    assert_eq!(created.len(), 501);
    let mut admin = app.admin().await;

    let page = ok(admin.list_invoice_cases(list_request("", 0, "")).await);
    assert_eq!(page.invoice_cases.len(), 50, "page_size 0 means 50");
    assert!(!page.next_page_token.is_empty());

    for page_size in [501, 1000, i32::MAX] {
        let page = ok(admin
            .list_invoice_cases(list_request("", page_size, ""))
            .await);
        assert_eq!(page.invoice_cases.len(), 500, "page_size {page_size}");
        assert!(!page.next_page_token.is_empty());
    }

    let (sizes, cases) = all_pages(&mut admin, "", i32::MAX).await;
    assert_eq!(sizes, [500, 1]);
    let listed: HashSet<String> = numbers(&cases).into_iter().collect();
    assert_eq!(listed, created, "every case exactly once");
    assert_eq!(cases.len(), 501);
    let (sizes, cases) = all_pages(&mut admin, "", 0).await;
    assert_eq!(sizes, [50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 1]);
    assert_eq!(cases.len(), 501);
    assert_eq!(
        cases
            .iter()
            .map(|c| &c.number)
            .collect::<HashSet<_>>()
            .len(),
        501
    );
}

/// A case as the filters see it.
struct Listed {
    number: String,
    state: C,
    account: &'static str,
    assignee: &'static str,
    priority: Priority,
}

#[tokio::test]
async fn filters_select_by_state_account_assignee_and_priority() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut alice = app.client_for("alice", &["agent"]).await;
    let mut bob = app.client_for("bob", &["agent"]).await;

    // (account, priority, state, assignee); created in this order.
    let plan: [(&str, Priority, C, &str); 7] = [
        ("ACME", Priority::Critical, C::Draft, ""),
        ("ACME", Priority::High, C::New, ""),
        ("GLOBEX", Priority::Unspecified, C::WorkInProgress, "alice"),
        ("GLOBEX", Priority::Moderate, C::WorkInProgress, "bob"),
        ("ACME", Priority::Critical, C::AwaitingInfo, "alice"),
        ("INITECH", Priority::Low, C::Canceled, ""),
        ("ACME 2", Priority::Low, C::Resolved, "bob"),
    ];
    let mut listed = Vec::new();
    for (account, priority, state, assignee) in plan {
        let mut case = new_case(account, 1);
        case.priority = priority.into();
        let case = ok(admin
            .create_invoice_case(pb::CreateInvoiceCaseRequest {
                invoice_case: Some(case),
                request_id: String::new(),
                comment: String::new(),
            })
            .await);
        let id = case.id.clone();
        if state == C::Canceled {
            ok(admin.cancel_case(cancel(&id)).await);
        } else if state != C::Draft {
            ok(admin.submit_case(submit(&id)).await);
        }
        let agent = match assignee {
            "alice" => Some(&mut alice),
            "bob" => Some(&mut bob),
            _ => None,
        };
        if let Some(agent) = agent {
            ok(agent.assign_to_me(assign(&id)).await);
            match state {
                C::AwaitingInfo => {
                    ok(agent.request_information(request_info(&id)).await);
                }
                C::Resolved => {
                    ok(agent.propose_solution(propose_all(&id)).await);
                }
                _ => {}
            }
        }
        let now = get(&mut admin, &id).await;
        assert_eq!(now.state(), state);
        assert_eq!(now.assigned_to, assignee);
        listed.push(Listed {
            number: now.number,
            state,
            account,
            assignee,
            priority: if priority == Priority::Unspecified {
                Priority::Low
            } else {
                priority
            },
        });
    }
    assert_eq!(
        get(&mut admin, &listed[2].number).await.priority(),
        Priority::Low,
        "an unspecified priority is LOW"
    );

    type Predicate = Box<dyn Fn(&Listed) -> bool>;
    let cases: Vec<(&str, Predicate)> = vec![
        ("", Box::new(|_| true)),
        ("state = NEW", Box::new(|c| c.state == C::New)),
        ("state=NEW", Box::new(|c| c.state == C::New)),
        ("state != DRAFT", Box::new(|c| c.state != C::Draft)),
        (
            "state = WORK_IN_PROGRESS",
            Box::new(|c| c.state == C::WorkInProgress),
        ),
        ("state = \"RESOLVED\"", Box::new(|c| c.state == C::Resolved)),
        ("account_id = ACME", Box::new(|c| c.account == "ACME")),
        (
            "account_id = \"ACME 2\"",
            Box::new(|c| c.account == "ACME 2"),
        ),
        ("account_id != ACME", Box::new(|c| c.account != "ACME")),
        ("account_id = NOBODY", Box::new(|_| false)),
        ("assigned_to = alice", Box::new(|c| c.assignee == "alice")),
        ("assigned_to != alice", Box::new(|c| c.assignee != "alice")),
        ("assigned_to = \"\"", Box::new(|c| c.assignee.is_empty())),
        ("assigned_to != ''", Box::new(|c| !c.assignee.is_empty())),
        (
            "priority = 1",
            Box::new(|c| c.priority == Priority::Critical),
        ),
        (
            "priority = CRITICAL",
            Box::new(|c| c.priority == Priority::Critical),
        ),
        ("priority = 2", Box::new(|c| c.priority == Priority::High)),
        (
            "priority = MODERATE",
            Box::new(|c| c.priority == Priority::Moderate),
        ),
        ("priority = 4", Box::new(|c| c.priority == Priority::Low)),
        ("priority != LOW", Box::new(|c| c.priority != Priority::Low)),
        (
            "account_id = ACME AND priority = 1",
            Box::new(|c| c.account == "ACME" && c.priority == Priority::Critical),
        ),
        (
            "state = WORK_IN_PROGRESS AND assigned_to != alice",
            Box::new(|c| c.state == C::WorkInProgress && c.assignee != "alice"),
        ),
        (
            "account_id = 'GLOBEX' AND state = WORK_IN_PROGRESS AND priority = MODERATE",
            Box::new(|c| {
                c.account == "GLOBEX"
                    && c.state == C::WorkInProgress
                    && c.priority == Priority::Moderate
            }),
        ),
        (
            "state != CANCELED AND state != DRAFT AND account_id != INITECH",
            Box::new(|c| c.state != C::Canceled && c.state != C::Draft && c.account != "INITECH"),
        ),
        ("state = NEW AND state = DRAFT", Box::new(|_| false)),
        (
            "assigned_to = bob AND priority = LOW",
            Box::new(|c| c.assignee == "bob" && c.priority == Priority::Low),
        ),
    ];
    for (filter, predicate) in cases {
        let expected: Vec<String> = listed
            .iter()
            .rev()
            .filter(|c| predicate(c))
            .map(|c| c.number.clone())
            .collect();
        for page_size in [0, 1, 2] {
            let (_, cases) = all_pages(&mut admin, filter, page_size).await;
            assert_eq!(
                numbers(&cases),
                expected,
                "filter {filter:?}, page_size {page_size}"
            );
            for case in &cases {
                assert_invariants(case);
            }
        }
    }
}

#[tokio::test]
async fn a_page_token_of_another_filter_is_refused() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    for i in 0..4 {
        create(&mut admin, if i % 2 == 0 { "ACME" } else { "GLOBEX" }, 1).await;
    }
    let filter = "account_id = ACME";
    let first = ok(admin.list_invoice_cases(list_request(filter, 1, "")).await);
    assert!(!first.next_page_token.is_empty());
    for other in [
        "",
        "account_id = GLOBEX",
        "account_id = ACME AND state = DRAFT",
    ] {
        let status = expect_code(
            admin
                .list_invoice_cases(list_request(other, 1, &first.next_page_token))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["page_token"], "{other:?}");
    }
    // With its own filter it continues.
    let second = ok(admin
        .list_invoice_cases(list_request(filter, 1, &first.next_page_token))
        .await);
    assert_eq!(second.invoice_cases.len(), 1);
    assert_eq!(second.invoice_cases[0].account_id, "ACME");
    assert!(second.next_page_token.is_empty());

    // A ListStateChanges token is no ListInvoiceCases token.
    let busy = create(&mut admin, "ACME", 1).await;
    ok(admin.submit_case(submit(&busy.id)).await);
    let events = ok(admin
        .list_state_changes(pb::ListStateChangesRequest {
            case_id: busy.id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await);
    assert!(!events.next_page_token.is_empty());
    let status = expect_code(
        admin
            .list_invoice_cases(list_request("", 1, &events.next_page_token))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["page_token"]);
}

/// Every event of a case in pages of `page_size`: the pages' lengths and
/// the events.
async fn event_pages(
    client: &mut Client,
    case_id: &str,
    page_size: i32,
) -> (Vec<usize>, Vec<pb::StateChangeEvent>) {
    let mut sizes = Vec::new();
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ok(client
            .list_state_changes(pb::ListStateChangesRequest {
                case_id: case_id.to_owned(),
                page_size,
                page_token: page_token.clone(),
            })
            .await);
        sizes.push(page.events.len());
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return (sizes, events);
        }
        assert!(sizes.len() < 1000, "the pages never end");
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn state_changes_are_listed_oldest_first_in_pages() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let id = case.id.clone();
    for i in 0..103 {
        ok(admin
            .add_case_line(pb::AddCaseLineRequest {
                case_id: id.clone(),
                line: Some(line(&format!("added {i}"))),
                ..Default::default()
            })
            .await);
    }
    ok(admin.submit_case(submit(&id)).await);
    ok(admin.assign_to_me(assign(&case.number)).await);
    // Another case's events must not appear.
    let other = create(&mut admin, "ACME", 1).await;
    ok(admin.cancel_case(cancel(&other.id)).await);

    let mut expected = vec![A::Create];
    expected.extend(std::iter::repeat_n(A::AddLine, 103));
    expected.extend([A::Submit, A::AssignToMe]);

    let (sizes, events) = event_pages(&mut admin, &id, 0).await;
    assert_eq!(sizes, [100, 6], "page_size 0 means 100");
    let actions: Vec<A> = events.iter().map(|e| e.action()).collect();
    assert_eq!(actions, expected);
    assert!(events.iter().all(|e| e.case_id == id));
    let cursors: HashSet<&str> = events.iter().map(|e| e.cursor.as_str()).collect();
    assert_eq!(cursors.len(), events.len(), "distinct cursors");
    let etags: HashSet<&str> = events.iter().map(|e| e.etag.as_str()).collect();
    assert_eq!(etags.len(), events.len(), "every event its own etag");

    for (page_size, expected_sizes) in [
        (7, [vec![7; 15], vec![1]].concat()),
        (53, vec![53, 53]),
        (106, vec![106]),
        (100_000, vec![106]),
        (i32::MAX, vec![106]),
    ] {
        let (sizes, paged) = event_pages(&mut admin, &case.number, page_size).await;
        assert_eq!(sizes, expected_sizes, "page_size {page_size}");
        assert_eq!(paged, events, "page_size {page_size}");
    }

    // A token of one case's history is refused for another's.
    let first = ok(admin
        .list_state_changes(pb::ListStateChangesRequest {
            case_id: id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await);
    let status = expect_code(
        admin
            .list_state_changes(pb::ListStateChangesRequest {
                case_id: other.id.clone(),
                page_size: 1,
                page_token: first.next_page_token,
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["page_token"]);
    assert_replay_matches(&mut admin, &id).await;
}
