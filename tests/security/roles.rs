//! Roles (SPEC §8): every role against every RPC, allowed or
//! PERMISSION_DENIED, as the permission matrix says; a token without a
//! known role may do nothing.

use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{Client, get, spawn_app},
    support::{Rpc, Target, case_in, event_count},
};

/// The matrix as SPEC §8 states it, written out independently of the
/// server's own table: `viewer` reads, lists, reads history and watches;
/// `requester` is a viewer that also creates, adds and removes lines,
/// submits and cancels; `agent` is a viewer that also makes every
/// transition (Assign to me included); `lead` is an agent that also assigns
/// cases to agents (AssignCase); `admin` does everything. Requesters
/// and agents both edit cases and lines (the states decide which fields).
/// Durable subscriptions are watches (and their acknowledgements) for
/// whoever may watch; listing and deleting them is the admin's.
fn allowed(role: &str, rpc: Rpc) -> bool {
    let read = matches!(
        rpc,
        Rpc::Get
            | Rpc::List
            | Rpc::ListStateChanges
            | Rpc::Watch
            | Rpc::WatchSubscription
            | Rpc::AcknowledgeStateChanges
    );
    let agent = read
        || matches!(
            rpc,
            Rpc::Submit
                | Rpc::AssignToMe
                | Rpc::RequestInformation
                | Rpc::InformationReceived
                | Rpc::ProposeSolution
                | Rpc::Close
                | Rpc::Cancel
                | Rpc::SetLineState
                | Rpc::UpdateCase
                | Rpc::UpdateLine
        );
    match role {
        "viewer" => read,
        "requester" => {
            read || matches!(
                rpc,
                Rpc::Create
                    | Rpc::AddLine
                    | Rpc::RemoveLine
                    | Rpc::Submit
                    | Rpc::Cancel
                    | Rpc::UpdateCase
                    | Rpc::UpdateLine
            )
        }
        "agent" => agent,
        "lead" => agent || rpc == Rpc::AssignCase,
        "admin" => true,
        _ => false,
    }
}

/// Calls `rpc` as `client` on a fresh case in the state the call needs,
/// and checks the answer against the matrix; a refused call changes
/// nothing.
async fn check(admin: &mut Client, client: &mut Client, who: &str, may: bool, rpc: Rpc) {
    let case = case_in(admin, "ACME", rpc.needs()).await;
    let events = event_count(admin, &case.id).await;
    let result = rpc.call(client, &Target::of(&case)).await;
    if may {
        if let Err(status) = result {
            panic!("{who} may call {}, but got {status:?}", rpc.method());
        }
        return;
    }
    let status = match result {
        Ok(()) => panic!(
            "{who} may not call {}, but the call succeeded",
            rpc.method()
        ),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{who} calling {}: {status:?}",
        rpc.method()
    );
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("{who} calling {}: no ErrorInfo: {status:?}", rpc.method()));
    assert_eq!(info.reason, "MISSING_ROLE", "{status:?}");
    // Nothing changed.
    assert_eq!(get(admin, &case.id).await, case, "{who} {}", rpc.method());
    assert_eq!(event_count(admin, &case.id).await, events);
}

#[tokio::test]
async fn every_role_may_call_exactly_the_rpcs_of_the_matrix() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    for role in ["viewer", "requester", "agent", "lead", "admin"] {
        let mut client = app.client_for(&format!("{role}-user"), &[role]).await;
        for rpc in Rpc::ALL {
            check(&mut admin, &mut client, role, allowed(role, rpc), rpc).await;
        }
    }
    // Nothing was created by a role that may not create.
    let cases = crate::helpers::ok(
        admin
            .list_invoice_cases(invoice_cases::pb::ListInvoiceCasesRequest {
                page_size: 500,
                ..Default::default()
            })
            .await,
    );
    for case in cases.invoice_cases {
        assert!(
            ["admin", "admin-user", "requester-user"].contains(&case.opened_by.as_str()),
            "case {} was opened by {}",
            case.number,
            case.opened_by
        );
    }
}

#[tokio::test]
async fn a_token_without_a_known_role_is_denied_everything() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let no_role: [(&str, &[&str]); 4] = [
        ("no roles", &[]),
        ("unknown roles", &["superuser", "root", "owner"]),
        ("roles in another case", &["Admin", "VIEWER", " agent"]),
        ("a role-like claim", &["admin,viewer"]),
    ];
    for (who, roles) in no_role {
        let mut client = app.client_for("mallory", roles).await;
        for rpc in Rpc::ALL {
            check(&mut admin, &mut client, who, false, rpc).await;
        }
    }

    // A token with no `roles` claim at all.
    let token = crate::support::hs256(
        app.secret.as_bytes(),
        &serde_json::json!({"sub": "mallory", "exp": crate::support::now() + 600}),
    );
    let mut client = app.client_with(Some(&token)).await;
    for rpc in Rpc::ALL {
        check(&mut admin, &mut client, "no roles claim", false, rpc).await;
    }
}

#[tokio::test]
async fn several_roles_add_up() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut both = app
        .client_for("two-hats", &["viewer", "requester", "agent"])
        .await;
    for rpc in Rpc::ALL {
        let may = allowed("requester", rpc) || allowed("agent", rpc);
        check(&mut admin, &mut both, "requester+agent", may, rpc).await;
    }
    // An unknown role next to a known one neither adds nor takes away.
    let mut viewer = app.client_for("viewer-plus", &["viewer", "root"]).await;
    for rpc in Rpc::ALL {
        check(
            &mut admin,
            &mut viewer,
            "viewer+root",
            allowed("viewer", rpc),
            rpc,
        )
        .await;
    }
}
