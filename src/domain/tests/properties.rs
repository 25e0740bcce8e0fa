//! Property tests: random cases driven through random command sequences
//! never break the invariants of SPEC §3.5, and their recorded changes
//! replay to exactly the case's states.

use proptest::prelude::*;

use super::*;
use crate::domain::{
    event::Action,
    invariants::{self, Replayed},
    machine::{self, CaseIdentity, Command, LineOutcome, LineResolution, Outcome, ProposeSolution},
};

/// How a random command names a line.
#[derive(Debug, Clone)]
enum Pick {
    /// The line at this index (modulo the number of lines), by id.
    Id(usize),
    /// The line at this index (modulo the number of lines), by number.
    Number(usize),
    /// A line id the case does not have.
    UnknownId,
    /// A line number the case does not have.
    UnknownNumber,
}

impl Pick {
    fn resolve(&self, case: &Case) -> LineRef {
        let nth =
            |index: usize| (!case.lines.is_empty()).then(|| &case.lines[index % case.lines.len()]);
        match self {
            Pick::Id(index) => {
                nth(*index).map_or(LineRef::Id(Uuid::nil()), |line| LineRef::Id(line.id))
            }
            Pick::Number(index) => nth(*index).map_or_else(
                || LineRef::Number(line_number(9_999_999)),
                |line| LineRef::Number(line.number.clone()),
            ),
            Pick::UnknownId => LineRef::Id(Uuid::nil()),
            Pick::UnknownNumber => LineRef::Number(line_number(9_999_999)),
        }
    }
}

/// The invoice a random new line names.
#[derive(Debug, Clone, Copy)]
enum LineInvoice {
    None,
    TheCases,
    Another,
}

/// A random command, before it is tied to the lines of a case.
#[derive(Debug, Clone)]
enum Step {
    AddLine {
        disputed_cents: u32,
        invoice: LineInvoice,
    },
    RemoveLine(Pick),
    Submit,
    AssignToMe,
    /// AssignCase to one of a few agents, with or without a group.
    Assign {
        agent: u8,
        grouped: bool,
    },
    RequestInformation,
    InformationReceived,
    ProposeSolution {
        code: ResolutionCode,
        default_outcome: Option<Outcome>,
        line_outcomes: Vec<(Pick, Outcome, Option<u32>)>,
    },
    Close,
    Cancel,
    SetLineState {
        line: Pick,
        target: LineState,
        code: Option<ResolutionCode>,
        approved_cents: Option<u32>,
    },
}

fn money(cents: u32) -> Decimal {
    dec(&format!("{}.{:02}", cents / 100, cents % 100))
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        5 => (0..8usize).prop_map(Pick::Id),
        2 => (0..8usize).prop_map(Pick::Number),
        1 => Just(Pick::UnknownId),
        1 => Just(Pick::UnknownNumber),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![Just(Outcome::Accepted), Just(Outcome::Denied)]
}

fn resolution_code() -> impl Strategy<Value = ResolutionCode> {
    prop::sample::select(ResolutionCode::ALL)
}

/// Amounts around the disputed amounts (up to 150.00), so that some
/// approvals exceed them.
fn cents() -> impl Strategy<Value = u32> {
    0..15_000u32
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (cents(), prop_oneof![
            3 => Just(LineInvoice::None),
            3 => Just(LineInvoice::TheCases),
            1 => Just(LineInvoice::Another),
        ])
            .prop_map(|(disputed_cents, invoice)| Step::AddLine { disputed_cents, invoice }),
        1 => pick().prop_map(Step::RemoveLine),
        2 => Just(Step::Submit),
        2 => Just(Step::AssignToMe),
        1 => (0..3u8, any::<bool>()).prop_map(|(agent, grouped)| Step::Assign { agent, grouped }),
        1 => Just(Step::RequestInformation),
        1 => Just(Step::InformationReceived),
        2 => (
            resolution_code(),
            prop::option::of(outcome()),
            prop::collection::vec((pick(), outcome(), prop::option::weighted(0.3, cents())), 0..5),
        )
            .prop_map(|(code, default_outcome, line_outcomes)| Step::ProposeSolution {
                code,
                default_outcome,
                line_outcomes,
            }),
        1 => Just(Step::Close),
        1 => Just(Step::Cancel),
        5 => (
            pick(),
            prop::sample::select(LineState::ALL.to_vec()),
            prop::option::weighted(0.2, resolution_code()),
            prop::option::weighted(0.3, cents()),
        )
            .prop_map(|(line, target, code, approved_cents)| Step::SetLineState {
                line,
                target,
                code,
                approved_cents,
            }),
    ]
}

/// A random new case: its request source and the disputed amounts of its
/// lines (valid, as the API layer would have checked them).
fn initial() -> impl Strategy<Value = (RequestSource, Vec<u32>)> {
    (
        prop::sample::select(RequestSource::ALL),
        prop::collection::vec(1..10_000u32, 0..6),
    )
}

/// Numbers the lines created along a run.
struct Sequence(u32);

impl Sequence {
    fn next_identity(&mut self) -> LineIdentity {
        self.0 += 1;
        identity(self.0)
    }
}

fn random_line(source: RequestSource, disputed_cents: u32, invoice: LineInvoice) -> NewLine {
    let invoice_number = match (source, invoice) {
        (_, LineInvoice::Another) => Some("ARINV0099999".into()),
        (_, LineInvoice::None) => None,
        (RequestSource::SingleInvoice, LineInvoice::TheCases) => Some(CASE_INVOICE.into()),
        (RequestSource::MultipleInvoices, LineInvoice::TheCases) => Some("ARINV0000777".into()),
    };
    NewLine {
        invoice_number,
        ..new_line(&money(disputed_cents).to_string())
    }
}

fn command(step: &Step, case: &Case, lines: &mut Sequence) -> Command {
    match step {
        Step::AddLine {
            disputed_cents,
            invoice,
        } => Command::AddLine {
            line: random_line(case.request_source, *disputed_cents, *invoice),
            identity: lines.next_identity(),
        },
        Step::RemoveLine(line) => Command::RemoveLine {
            line: line.resolve(case),
        },
        Step::Submit => Command::Submit,
        Step::AssignToMe => Command::AssignToMe,
        Step::Assign { agent, grouped } => Command::Assign {
            assignee: format!("agent-{agent}"),
            group: grouped.then(|| "billing".to_owned()),
        },
        Step::RequestInformation => Command::RequestInformation,
        Step::InformationReceived => Command::InformationReceived,
        Step::ProposeSolution {
            code,
            default_outcome,
            line_outcomes,
        } => Command::ProposeSolution(ProposeSolution {
            resolution_code: *code,
            resolution_notes: "proposed".into(),
            default_outcome: *default_outcome,
            line_outcomes: line_outcomes
                .iter()
                .map(|(line, outcome, approved)| LineOutcome {
                    line: line.resolve(case),
                    outcome: *outcome,
                    approved_amount: approved.map(money),
                    resolution_code: None,
                    resolution_notes: None,
                })
                .collect(),
        }),
        Step::Close => Command::Close,
        Step::Cancel => Command::Cancel,
        Step::SetLineState {
            line,
            target,
            code,
            approved_cents,
        } => Command::SetLineState {
            line: line.resolve(case),
            target: *target,
            resolution: LineResolution {
                code: *code,
                notes: None,
                approved_amount: approved_cents.map(money),
            },
        },
    }
}

/// Replays `log` from nothing and checks it rebuilds exactly `case`.
fn replay(log: &[StateChange], case: &Case) -> Result<(), TestCaseError> {
    let mut replayed = Replayed::default();
    for change in log {
        replayed
            .apply(change)
            .map_err(|error| TestCaseError::fail(format!("replay: {error}")))?;
    }
    prop_assert!(
        replayed.matches(case),
        "replayed {:?} is not the case: {} with {:?}",
        replayed,
        case.state,
        line_states(case)
    );
    Ok(())
}

/// Whether a change is of a line (and not of the case).
fn is_line_change(change: &StateChange) -> bool {
    matches!(change, StateChange::Line { .. })
}

fn run(
    source: RequestSource,
    disputed: Vec<u32>,
    steps: Vec<(Step, bool)>,
) -> Result<(), TestCaseError> {
    let mut lines = Sequence(0);
    let new = NewCase {
        request_source: source,
        invoice_number: (source == RequestSource::SingleInvoice).then(|| CASE_INVOICE.into()),
        lines: disputed
            .iter()
            .map(|&cents| random_line(source, cents, LineInvoice::TheCases))
            .collect(),
        ..new_case(0)
    };
    let identities = disputed.iter().map(|_| lines.next_identity()).collect();
    let identity = CaseIdentity {
        id: CASE_ID,
        number: CASE_NUMBER.into(),
    };
    let created = machine::create(
        new,
        identity,
        identities,
        machine::Context {
            actor: "requester",
            now: at(0),
        },
    )
    .map_err(|error| TestCaseError::fail(format!("create: {error}")))?;
    prop_assert_eq!(invariants::check(&created.case), Ok(()));
    let mut log = created.changes;
    let mut case = created.case;
    replay(&log, &case)?;

    for (i, (step, by_other_agent)) in steps.iter().enumerate() {
        let now = at(60 * (i as i64 + 1));
        let actor = if *by_other_agent {
            "agent-b"
        } else {
            "agent-a"
        };
        let before = case.clone();
        let command = command(step, &case, &mut lines);
        let action = command.action();
        let names_a_line = matches!(
            command,
            Command::AddLine { .. } | Command::RemoveLine { .. } | Command::SetLineState { .. }
        );
        let result = machine::decide(&case, command.clone(), machine::Context { actor, now });
        // `decide` only reads the case: whatever it answers, the case is as it was.
        prop_assert_eq!(&case, &before);
        let decision = match result {
            Ok(decision) => decision,
            Err(_) => continue,
        };
        prop_assert!(
            !before.state.is_terminal(),
            "step {}: {:?} changed a {} case",
            i,
            command,
            before.state
        );
        prop_assert_eq!(decision.action, action);
        if let Err(broken) = invariants::check(&decision.case) {
            return Err(TestCaseError::fail(format!(
                "step {i}: {command:?} on a {} case with {:?}: {broken}",
                before.state,
                line_states(&before)
            )));
        }
        if let Command::Assign { assignee, group } = &command {
            prop_assert_eq!(decision.case.assigned_to.as_ref(), Some(assignee));
            prop_assert_eq!(&decision.case.assignment_group, group);
            // The same assignment again commits nothing; another one
            // changes the assignee or group, and a state only from NEW.
            if decision.is_no_op() {
                prop_assert_eq!(&decision.case, &before);
                prop_assert!(decision.field_changes.is_empty());
                continue;
            }
            prop_assert!(!decision.field_changes.is_empty());
            if before.state != CaseState::New {
                prop_assert!(decision.changes.is_empty(), "{:?}", decision.changes);
                prop_assert_eq!(decision.case.revision, before.revision + 1);
                prop_assert_eq!(decision.case.state, before.state);
                case = decision.case;
                replay(&log, &case)?;
                continue;
            }
        }
        prop_assert_eq!(decision.case.revision, before.revision + 1);
        prop_assert_eq!(decision.case.update_time, now);
        // At least one change; the first, and only the first, is DIRECT,
        // of the entity the action names.
        let first = decision.changes.first();
        prop_assert!(first.is_some(), "step {}: {:?} changed nothing", i, command);
        prop_assert_eq!(first.map(StateChange::cause), Some(Cause::Direct));
        prop_assert_eq!(first.map(is_line_change), Some(names_a_line));
        prop_assert!(
            decision.changes[1..]
                .iter()
                .all(|c| c.cause() == Cause::Cascade),
            "step {}: {:?}",
            i,
            decision.changes
        );
        if action == Action::AssignToMe {
            prop_assert_eq!(decision.case.assigned_to.as_deref(), Some(actor));
        }
        log.extend(decision.changes);
        case = decision.case;
        replay(&log, &case)?;
    }

    // A terminal case never changes again: every command is refused.
    if case.state.is_terminal() {
        for (step, _) in &steps {
            let command = command(step, &case, &mut lines);
            let result = machine::decide(
                &case,
                command.clone(),
                machine::Context {
                    actor: "agent-a",
                    now: at(100_000),
                },
            );
            prop_assert!(
                result.is_err(),
                "{:?} changed a {} case",
                command,
                case.state
            );
        }
        for line in &case.lines {
            for target in LineState::ALL {
                let command = Command::SetLineState {
                    line: LineRef::Id(line.id),
                    target,
                    resolution: LineResolution::default(),
                };
                let result = machine::decide(&case, command.clone(), ctx());
                prop_assert!(
                    result.is_err(),
                    "{:?} changed a {} case",
                    command,
                    case.state
                );
            }
        }
        for command in [
            Command::Submit,
            Command::AssignToMe,
            Command::Assign {
                assignee: "agent-9".into(),
                group: None,
            },
            Command::RequestInformation,
            Command::InformationReceived,
            Command::Close,
            Command::Cancel,
        ] {
            let result = machine::decide(&case, command.clone(), ctx());
            prop_assert!(
                result.is_err(),
                "{:?} changed a {} case",
                command,
                case.state
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_command_sequences_keep_the_invariants_and_replay_exactly(
        (source, disputed) in initial(),
        steps in prop::collection::vec((step(), any::<bool>()), 0..40),
    ) {
        run(source, disputed, steps)?;
    }
}
