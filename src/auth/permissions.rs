//! The permission matrix: which role may call what (SPEC §8).

use std::fmt;

/// A role named in a token's `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads, lists, history, watch.
    Viewer,
    /// Viewer, and creates cases, adds and removes lines, submits, cancels.
    Requester,
    /// Viewer, and every transition (Assign to me included).
    Agent,
    /// Agent, and assigns cases to agents (AssignCase).
    Lead,
    /// Everything.
    Admin,
}

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// GetInvoiceCase, ListInvoiceCases, ListStateChanges, WatchStateChanges
    /// (a durable subscription too), AcknowledgeStateChanges.
    Read,
    /// CreateInvoiceCase.
    Create,
    /// AddCaseLine, RemoveCaseLine.
    EditLines,
    /// SubmitCase, CancelCase: transitions a requester may make too.
    SubmitOrCancel,
    /// AssignToMe, RequestInformation, InformationReceived, ProposeSolution,
    /// CloseCase, SetLineState.
    Work,
    /// AssignCase: a case to a named agent and group.
    Assign,
    /// UpdateInvoiceCase, UpdateCaseLine (the states decide which fields).
    Edit,
    /// ListSubscriptions, DeleteSubscription: every caller's durable
    /// subscriptions (admin only).
    ManageSubscriptions,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Requester,
        Role::Agent,
        Role::Lead,
        Role::Admin,
    ];

    /// The role of a `roles` claim entry.
    pub fn parse(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// The name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Requester => "requester",
            Role::Agent => "agent",
            Role::Lead => "lead",
            Role::Admin => "admin",
        }
    }

    /// The permission matrix.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Viewer => matches!(permission, Read),
            Role::Requester => {
                matches!(
                    permission,
                    Read | Create | EditLines | SubmitOrCancel | Edit
                )
            }
            Role::Agent => matches!(permission, Read | SubmitOrCancel | Work | Edit),
            Role::Lead => matches!(permission, Read | SubmitOrCancel | Work | Edit | Assign),
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Read => "reading cases",
            Permission::Create => "creating cases",
            Permission::EditLines => "adding or removing lines",
            Permission::SubmitOrCancel => "submitting or canceling cases",
            Permission::Work => "working on cases",
            Permission::Edit => "editing cases",
            Permission::Assign => "assigning cases to agents",
            Permission::ManageSubscriptions => "managing subscriptions",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix() {
        use Permission::*;
        let all = [
            Read,
            Create,
            EditLines,
            SubmitOrCancel,
            Work,
            Edit,
            Assign,
            ManageSubscriptions,
        ];
        let allowed = |role: Role| -> Vec<Permission> {
            all.into_iter().filter(|p| role.allows(*p)).collect()
        };
        assert_eq!(allowed(Role::Viewer), [Read]);
        assert_eq!(
            allowed(Role::Requester),
            [Read, Create, EditLines, SubmitOrCancel, Edit]
        );
        assert_eq!(allowed(Role::Agent), [Read, SubmitOrCancel, Work, Edit]);
        assert_eq!(
            allowed(Role::Lead),
            [Read, SubmitOrCancel, Work, Edit, Assign]
        );
        assert_eq!(allowed(Role::Admin), all);
    }
}
