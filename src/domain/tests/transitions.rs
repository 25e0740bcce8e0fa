//! Every action in every state, checked against SPEC §3 (the tables of §3.1,
//! §3.2 and §3.3, the rules R1/R2 of §3.4), plus the preconditions and
//! request checks of each action.
//!
//! The expectations are written out here from the SPEC as tables of their
//! own; they never ask the code under test what is allowed.

use super::*;
use crate::domain::{
    event::Action,
    invariants,
    machine::{
        self, Command, Decision, DomainError, LineOutcome, LineResolution, Outcome,
        ProposeSolution, RefusedLine, check_line_invoice,
    },
};

use CaseState as CS;
use Cause::{Cascade, Direct};
use LineState as LS;

/// Collects mismatches so a table test reports all of them at once.
macro_rules! expect_eq {
    ($failures:expr, $what:expr, $actual:expr, $expected:expr $(,)?) => {{
        let (actual, expected) = (&$actual, &$expected);
        if actual != expected {
            $failures.push(format!(
                "{}:\n      got {:?}\n expected {:?}",
                $what, actual, expected
            ));
        }
    }};
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} mismatches with the SPEC:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every case state of SPEC §3.
const CASE_STATES: [CaseState; 7] = [
    CS::Draft,
    CS::New,
    CS::WorkInProgress,
    CS::AwaitingInfo,
    CS::Resolved,
    CS::Closed,
    CS::Canceled,
];

/// Every line state of SPEC §3.
const LINE_STATES: [LineState; 7] = [
    LS::Draft,
    LS::New,
    LS::WorkInProgress,
    LS::AwaitingInfo,
    LS::ResolvedAccepted,
    LS::ResolvedDenied,
    LS::Canceled,
];

/// SPEC §3: the final line states.
fn spec_final(state: LineState) -> bool {
    matches!(
        state,
        LS::ResolvedAccepted | LS::ResolvedDenied | LS::Canceled
    )
}

/// SPEC §3: an open case is WORK_IN_PROGRESS or AWAITING_INFO.
fn spec_open(state: CaseState) -> bool {
    matches!(state, CS::WorkInProgress | CS::AwaitingInfo)
}

/// The number of the line that tests add.
const ADDED: u32 = 99;

/// Applies `command` to `case` as [`ACTOR`] at [`now`].
fn decide(case: &Case, command: Command) -> Result<Decision, DomainError> {
    machine::decide(case, command, ctx())
}

fn refused(action: Action, case_state: CaseState) -> DomainError {
    DomainError::InvalidTransition {
        action,
        case_state,
        line: None,
    }
}

fn refused_by_line(action: Action, case_state: CaseState, n: u32, state: LineState) -> DomainError {
    DomainError::InvalidTransition {
        action,
        case_state,
        line: Some(RefusedLine {
            id: line_id(n),
            number: line_no(n),
            state,
        }),
    }
}

fn set_line(n: u32, target: LineState) -> Command {
    Command::SetLineState {
        line: by_id(n),
        target,
        resolution: LineResolution::default(),
    }
}

fn propose(default_outcome: Option<Outcome>, line_outcomes: Vec<LineOutcome>) -> Command {
    Command::ProposeSolution(ProposeSolution {
        resolution_code: ResolutionCode::SolvedSettlement,
        resolution_notes: "settled with the customer".into(),
        default_outcome,
        line_outcomes,
    })
}

fn outcome(n: u32, outcome: Outcome, approved: Option<&str>) -> LineOutcome {
    LineOutcome {
        line: by_id(n),
        outcome,
        approved_amount: approved.map(dec),
        resolution_code: None,
        resolution_notes: None,
    }
}

fn violations(error: DomainError) -> Vec<machine::Violation> {
    match error {
        DomainError::InvalidRequest(violations) => violations,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

/// Checks what every allowed decision does, whatever the action: one more
/// revision, the update time, and the SPEC §3.5 invariants when the case
/// before satisfied them.
fn check_common(before: &Case, decision: &Decision, failures: &mut Vec<String>, what: &str) {
    expect_eq!(
        failures,
        format!("{what}: revision"),
        decision.case.revision,
        before.revision + 1
    );
    expect_eq!(
        failures,
        format!("{what}: update_time"),
        decision.case.update_time,
        now()
    );
    if invariants::check(before).is_ok()
        && let Err(broken) = invariants::check(&decision.case)
    {
        failures.push(format!("{what}: invariant broken: {broken}"));
    }
    // Every line whose state changed was updated now; the others were not.
    for line in &decision.case.lines {
        let changed = decision
            .changes
            .iter()
            .any(|change| matches!(change, StateChange::Line { id, .. } if *id == line.id));
        let expected = if changed { now() } else { created() };
        expect_eq!(
            failures,
            format!("{what}: update_time of line {}", line.number),
            line.update_time,
            expected
        );
    }
}

// ---------------------------------------------------------------------------
// §3.1 and §3.3: every case command in every case state.
// ---------------------------------------------------------------------------

/// The commands on a case other than SetLineState.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaseCmd {
    Submit,
    AssignToMe,
    RequestInformation,
    InformationReceived,
    ProposeSolution,
    Close,
    Cancel,
    AddLine,
    RemoveLine,
}

impl CaseCmd {
    const ALL: [CaseCmd; 9] = [
        CaseCmd::Submit,
        CaseCmd::AssignToMe,
        CaseCmd::RequestInformation,
        CaseCmd::InformationReceived,
        CaseCmd::ProposeSolution,
        CaseCmd::Close,
        CaseCmd::Cancel,
        CaseCmd::AddLine,
        CaseCmd::RemoveLine,
    ];

    fn action(self) -> Action {
        match self {
            CaseCmd::Submit => Action::Submit,
            CaseCmd::AssignToMe => Action::AssignToMe,
            CaseCmd::RequestInformation => Action::RequestInformation,
            CaseCmd::InformationReceived => Action::InformationReceived,
            CaseCmd::ProposeSolution => Action::ProposeSolution,
            CaseCmd::Close => Action::Close,
            CaseCmd::Cancel => Action::Cancel,
            CaseCmd::AddLine => Action::AddLine,
            CaseCmd::RemoveLine => Action::RemoveLine,
        }
    }

    fn command(self) -> Command {
        match self {
            CaseCmd::Submit => Command::Submit,
            CaseCmd::AssignToMe => Command::AssignToMe,
            CaseCmd::RequestInformation => Command::RequestInformation,
            CaseCmd::InformationReceived => Command::InformationReceived,
            CaseCmd::ProposeSolution => propose(Some(Outcome::Accepted), vec![]),
            CaseCmd::Close => Command::Close,
            CaseCmd::Cancel => Command::Cancel,
            CaseCmd::AddLine => Command::AddLine {
                line: new_line("40.00"),
                identity: identity(ADDED),
            },
            CaseCmd::RemoveLine => Command::RemoveLine { line: by_id(0) },
        }
    }
}

/// For each case state, lines a case in that state may have (SPEC §3.5),
/// with as many different line states as the case state allows.
fn typical_lines(state: CaseState) -> Vec<LineState> {
    match state {
        CS::Draft => vec![LS::Draft, LS::Canceled],
        CS::New => vec![LS::New, LS::Canceled],
        CS::WorkInProgress => vec![
            LS::WorkInProgress,
            LS::AwaitingInfo,
            LS::ResolvedAccepted,
            LS::Canceled,
        ],
        CS::AwaitingInfo => vec![
            LS::WorkInProgress,
            LS::AwaitingInfo,
            LS::ResolvedDenied,
            LS::Canceled,
        ],
        CS::Resolved | CS::Closed => vec![LS::ResolvedAccepted, LS::ResolvedDenied, LS::Canceled],
        CS::Canceled => vec![LS::Canceled, LS::Canceled],
    }
}

/// What an allowed command leaves behind.
struct Expected {
    case_state: CaseState,
    /// `(line number, state)` of every line, in order.
    lines: Vec<(u32, LineState)>,
    changes: Vec<StateChange>,
}

/// SPEC §3.1 and §3.3 for the [`typical_lines`] of `state`; `None` when the
/// command is not allowed in that state.
fn expected(state: CaseState, cmd: CaseCmd) -> Option<Expected> {
    let same_lines = || -> Vec<(u32, LineState)> { (0..).zip(typical_lines(state)).collect() };
    let plus_added = |added: LineState| {
        let mut lines = same_lines();
        lines.push((ADDED, added));
        lines
    };
    let expected = match (state, cmd) {
        // Submit Case: DRAFT → NEW, lines in DRAFT → NEW.
        (CS::Draft, CaseCmd::Submit) => Expected {
            case_state: CS::New,
            lines: vec![(0, LS::New), (1, LS::Canceled)],
            changes: vec![
                case_change(CS::Draft, CS::New, Direct),
                line_change(0, LS::Draft, LS::New, Cascade),
            ],
        },
        // Assign to me: NEW → WORK_IN_PROGRESS, lines in NEW → WORK_IN_PROGRESS.
        (CS::New, CaseCmd::AssignToMe) => Expected {
            case_state: CS::WorkInProgress,
            lines: vec![(0, LS::WorkInProgress), (1, LS::Canceled)],
            changes: vec![
                case_change(CS::New, CS::WorkInProgress, Direct),
                line_change(0, LS::New, LS::WorkInProgress, Cascade),
            ],
        },
        // Request Information: WORK_IN_PROGRESS → AWAITING_INFO, lines untouched.
        (CS::WorkInProgress, CaseCmd::RequestInformation) => Expected {
            case_state: CS::AwaitingInfo,
            lines: same_lines(),
            changes: vec![case_change(CS::WorkInProgress, CS::AwaitingInfo, Direct)],
        },
        // Information Received: AWAITING_INFO → WORK_IN_PROGRESS, lines untouched.
        (CS::AwaitingInfo, CaseCmd::InformationReceived) => Expected {
            case_state: CS::WorkInProgress,
            lines: same_lines(),
            changes: vec![case_change(CS::AwaitingInfo, CS::WorkInProgress, Direct)],
        },
        // Propose solution: WORK_IN_PROGRESS → RESOLVED, every non-final
        // line takes its outcome (here the default, accepted).
        (CS::WorkInProgress, CaseCmd::ProposeSolution) => Expected {
            case_state: CS::Resolved,
            lines: vec![
                (0, LS::ResolvedAccepted),
                (1, LS::ResolvedAccepted),
                (2, LS::ResolvedAccepted),
                (3, LS::Canceled),
            ],
            changes: vec![
                case_change(CS::WorkInProgress, CS::Resolved, Direct),
                line_change(0, LS::WorkInProgress, LS::ResolvedAccepted, Cascade),
                line_change(1, LS::AwaitingInfo, LS::ResolvedAccepted, Cascade),
            ],
        },
        // Close Case: RESOLVED → CLOSED, lines untouched.
        (CS::Resolved, CaseCmd::Close) => Expected {
            case_state: CS::Closed,
            lines: same_lines(),
            changes: vec![case_change(CS::Resolved, CS::Closed, Direct)],
        },
        // Cancel: DRAFT only → CANCELED, every line → CANCELED.
        (CS::Draft, CaseCmd::Cancel) => Expected {
            case_state: CS::Canceled,
            lines: vec![(0, LS::Canceled), (1, LS::Canceled)],
            changes: vec![
                case_change(CS::Draft, CS::Canceled, Direct),
                line_change(0, LS::Draft, LS::Canceled, Cascade),
            ],
        },
        // §3.3: a line added to a DRAFT case starts DRAFT, to a NEW case NEW,
        // to an open case WORK_IN_PROGRESS ...
        (CS::Draft, CaseCmd::AddLine) => Expected {
            case_state: CS::Draft,
            lines: plus_added(LS::Draft),
            changes: vec![line_added(ADDED, LS::Draft, Direct)],
        },
        (CS::New, CaseCmd::AddLine) => Expected {
            case_state: CS::New,
            lines: plus_added(LS::New),
            changes: vec![line_added(ADDED, LS::New, Direct)],
        },
        (CS::WorkInProgress, CaseCmd::AddLine) => Expected {
            case_state: CS::WorkInProgress,
            lines: plus_added(LS::WorkInProgress),
            changes: vec![line_added(ADDED, LS::WorkInProgress, Direct)],
        },
        // ... which in an AWAITING_INFO case is a line entering
        // WORK_IN_PROGRESS: R2 puts the case back in progress.
        (CS::AwaitingInfo, CaseCmd::AddLine) => Expected {
            case_state: CS::WorkInProgress,
            lines: plus_added(LS::WorkInProgress),
            changes: vec![
                line_added(ADDED, LS::WorkInProgress, Direct),
                case_change(CS::AwaitingInfo, CS::WorkInProgress, Cascade),
            ],
        },
        // §3.3: a line may be removed only while the case is DRAFT.
        (CS::Draft, CaseCmd::RemoveLine) => Expected {
            case_state: CS::Draft,
            lines: vec![(1, LS::Canceled)],
            changes: vec![line_removed(0, LS::Draft)],
        },
        _ => return None,
    };
    Some(expected)
}

#[test]
fn every_case_command_in_every_case_state_is_allowed_or_refused_as_the_spec_says() {
    let mut failures = Vec::new();
    let mut allowed = 0;
    for state in CASE_STATES {
        for cmd in CaseCmd::ALL {
            let what = format!("{cmd:?} in {state}");
            let before = case(state, &typical_lines(state));
            assert_eq!(invariants::check(&before), Ok(()), "fixture of {what}");
            match (expected(state, cmd), decide(&before, cmd.command())) {
                (None, Err(error)) => {
                    expect_eq!(failures, what, error, refused(cmd.action(), state));
                }
                (None, Ok(decision)) => failures.push(format!(
                    "{what}: allowed (→ {}), the SPEC refuses it",
                    decision.case.state
                )),
                (Some(_), Err(error)) => {
                    failures.push(format!(
                        "{what}: refused with {error:?}, the SPEC allows it"
                    ));
                }
                (Some(expected), Ok(decision)) => {
                    allowed += 1;
                    let case = &decision.case;
                    expect_eq!(
                        failures,
                        format!("{what}: action"),
                        decision.action,
                        cmd.action()
                    );
                    expect_eq!(
                        failures,
                        format!("{what}: case state"),
                        case.state,
                        expected.case_state
                    );
                    let lines: Vec<_> = expected
                        .lines
                        .iter()
                        .map(|&(n, state)| (line_id(n), state))
                        .collect();
                    expect_eq!(failures, format!("{what}: lines"), line_states(case), lines);
                    expect_eq!(
                        failures,
                        format!("{what}: changes"),
                        decision.changes,
                        expected.changes
                    );
                    check_common(&before, &decision, &mut failures, &what);
                    let assigned_to = if cmd == CaseCmd::AssignToMe {
                        Some(ACTOR.to_owned())
                    } else {
                        before.assigned_to.clone()
                    };
                    expect_eq!(
                        failures,
                        format!("{what}: assigned_to"),
                        case.assigned_to,
                        assigned_to
                    );
                    let submit_time = if cmd == CaseCmd::Submit {
                        Some(now())
                    } else {
                        before.submit_time
                    };
                    expect_eq!(
                        failures,
                        format!("{what}: submit_time"),
                        case.submit_time,
                        submit_time
                    );
                    let resolve_time = if cmd == CaseCmd::ProposeSolution {
                        Some(now())
                    } else {
                        before.resolve_time
                    };
                    expect_eq!(
                        failures,
                        format!("{what}: resolve_time"),
                        case.resolve_time,
                        resolve_time
                    );
                    let close_time = if cmd == CaseCmd::Close {
                        Some(now())
                    } else {
                        before.close_time
                    };
                    expect_eq!(
                        failures,
                        format!("{what}: close_time"),
                        case.close_time,
                        close_time
                    );
                }
            }
        }
    }
    report(failures);
    // Submit, AssignToMe, RequestInformation, InformationReceived,
    // ProposeSolution, Close, Cancel, RemoveLine once each, AddLine in 4 states.
    assert_eq!(allowed, 12);
}

// ---------------------------------------------------------------------------
// §3.2: SetLineState for every (case state, line state, target).
// ---------------------------------------------------------------------------

/// SPEC §3.2: whether the case state, and whether the line state, allow
/// setting a line to `target`. DRAFT and NEW are no targets of §3.2: nothing
/// allows them.
fn spec_set_line_state(case: CaseState, line: LineState, target: LineState) -> (bool, bool) {
    match target {
        LS::AwaitingInfo => (spec_open(case), line == LS::WorkInProgress),
        LS::WorkInProgress => (spec_open(case), line == LS::AwaitingInfo),
        LS::ResolvedAccepted | LS::ResolvedDenied => (
            spec_open(case),
            matches!(line, LS::WorkInProgress | LS::AwaitingInfo),
        ),
        LS::Canceled => (
            matches!(
                case,
                CS::Draft | CS::New | CS::WorkInProgress | CS::AwaitingInfo
            ),
            !spec_final(line),
        ),
        LS::Draft | LS::New => (false, false),
    }
}

/// A second line that fits a case in `state` (SPEC §3.5), so that the line
/// under test is not the case's only line.
fn companion(state: CaseState) -> LineState {
    match state {
        CS::Draft => LS::Draft,
        CS::New => LS::New,
        CS::WorkInProgress => LS::WorkInProgress,
        CS::AwaitingInfo => LS::AwaitingInfo,
        CS::Resolved => LS::ResolvedAccepted,
        CS::Closed => LS::ResolvedDenied,
        CS::Canceled => LS::Canceled,
    }
}

/// Every (case state, line state, target) of SPEC §3.2, with the line under
/// test alone in its case and next to a [`companion`]: the case state and
/// the line state must both allow it; the line changes DIRECT, then R2 and
/// R1 (§3.4) apply as CASCADE. Cases that break §3.5 are included: the rules
/// of §3.2 do not depend on the other lines.
#[test]
fn set_line_state_for_every_case_state_line_state_and_target() {
    let mut failures = Vec::new();
    let mut allowed = 0;
    for case_state in CASE_STATES {
        for line_state in LINE_STATES {
            for target in LINE_STATES {
                for alone in [false, true] {
                    let mut states = vec![line_state];
                    if !alone {
                        states.push(companion(case_state));
                    }
                    let what = format!(
                        "SetLineState {line_state} → {target} in a {case_state} case with lines {states:?}"
                    );
                    let before = case(case_state, &states);
                    let result = decide(&before, set_line(0, target));
                    let (case_ok, line_ok) = spec_set_line_state(case_state, line_state, target);
                    let decision = match (case_ok && line_ok, result) {
                        (true, Ok(decision)) => decision,
                        (true, Err(error)) => {
                            failures.push(format!(
                                "{what}: refused with {error:?}, the SPEC allows it"
                            ));
                            continue;
                        }
                        (false, Ok(decision)) => {
                            failures.push(format!(
                                "{what}: allowed (case → {}), the SPEC refuses it",
                                decision.case.state
                            ));
                            continue;
                        }
                        (false, Err(error)) => {
                            let expected = if case_ok {
                                refused_by_line(Action::SetLineState, case_state, 0, line_state)
                            } else {
                                refused(Action::SetLineState, case_state)
                            };
                            expect_eq!(failures, what, error, expected);
                            continue;
                        }
                    };
                    allowed += 1;

                    let mut changes = vec![line_change(0, line_state, target, Direct)];
                    let mut lines_after = states.clone();
                    lines_after[0] = target;
                    let mut case_after = case_state;
                    // R2: a line entering WORK_IN_PROGRESS in an AWAITING_INFO case.
                    if case_after == CS::AwaitingInfo && target == LS::WorkInProgress {
                        changes.push(case_change(case_after, CS::WorkInProgress, Cascade));
                        case_after = CS::WorkInProgress;
                    }
                    // R1: an open case whose lines are all final.
                    if spec_open(case_after) && lines_after.iter().all(|&s| spec_final(s)) {
                        changes.push(case_change(case_after, CS::Resolved, Cascade));
                        case_after = CS::Resolved;
                    }

                    let case = &decision.case;
                    expect_eq!(
                        failures,
                        format!("{what}: action"),
                        decision.action,
                        Action::SetLineState
                    );
                    expect_eq!(
                        failures,
                        format!("{what}: case state"),
                        case.state,
                        case_after
                    );
                    let lines: Vec<_> = (0..)
                        .zip(&lines_after)
                        .map(|(n, &s)| (line_id(n), s))
                        .collect();
                    expect_eq!(failures, format!("{what}: lines"), line_states(case), lines);
                    expect_eq!(
                        failures,
                        format!("{what}: changes"),
                        decision.changes,
                        changes
                    );
                    check_common(&before, &decision, &mut failures, &what);
                    let approved = match target {
                        LS::ResolvedAccepted => Some(dec(DISPUTED)),
                        LS::ResolvedDenied => Some(dec("0")),
                        _ => None,
                    };
                    expect_eq!(
                        failures,
                        format!("{what}: approved_amount"),
                        case.lines[0].approved_amount,
                        approved
                    );
                    let resolve_time = if case_after == CS::Resolved && case_state != CS::Resolved {
                        Some(now())
                    } else {
                        before.resolve_time
                    };
                    expect_eq!(
                        failures,
                        format!("{what}: resolve_time"),
                        case.resolve_time,
                        resolve_time
                    );
                    expect_eq!(
                        failures,
                        format!("{what}: assigned_to"),
                        case.assigned_to,
                        before.assigned_to
                    );
                }
            }
        }
    }
    report(failures);
    // Per case state, (line state, target) pairs allowed by §3.2:
    // DRAFT/NEW: 4 non-final lines → CANCELED; open: WIP→AI, AI→WIP,
    // 2×2 resolutions, 4 cancels = 10. Each twice (alone, with companion).
    assert_eq!(allowed, 2 * (4 + 4 + 10 + 10));
}

// ---------------------------------------------------------------------------
// Create.
// ---------------------------------------------------------------------------

#[test]
fn create_makes_a_draft_case_whose_lines_are_created_draft_as_cascade() {
    let identities: Vec<_> = (0..3).map(identity).collect();
    let case_identity = machine::CaseIdentity {
        id: CASE_ID,
        number: CASE_NUMBER.into(),
    };
    let decision = machine::create(new_case(3), case_identity, identities, ctx()).unwrap();
    let case = &decision.case;
    assert_eq!(decision.action, Action::Create);
    assert_eq!(case.state, CS::Draft);
    assert_eq!(case.opened_by, ACTOR);
    assert_eq!(case.assigned_to, None);
    assert_eq!((case.create_time, case.update_time), (now(), now()));
    assert_eq!(
        (case.submit_time, case.resolve_time, case.close_time),
        (None, None, None)
    );
    assert_eq!(
        line_states(case),
        (0..3).map(|n| (line_id(n), LS::Draft)).collect::<Vec<_>>()
    );
    assert_eq!(
        case.lines
            .iter()
            .map(|line| line.position)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(case.lines.iter().all(|line| line.approved_amount.is_none()));
    assert_eq!(
        decision.changes,
        [
            StateChange::Case {
                id: CASE_ID,
                number: CASE_NUMBER.into(),
                cause: Direct,
                from: None,
                to: CS::Draft,
            },
            line_added(0, LS::Draft, Cascade),
            line_added(1, LS::Draft, Cascade),
            line_added(2, LS::Draft, Cascade),
        ]
    );
    assert_eq!(
        decision.added_lines,
        (0..3).map(line_id).collect::<Vec<_>>()
    );
    assert_eq!(invariants::check(case), Ok(()));
}

#[test]
fn create_holds_at_most_1000_lines() {
    let case_identity = || machine::CaseIdentity {
        id: CASE_ID,
        number: CASE_NUMBER.into(),
    };
    let identities = |count: u32| (0..count).map(identity).collect::<Vec<_>>();
    let decision =
        machine::create(new_case(1000), case_identity(), identities(1000), ctx()).unwrap();
    assert_eq!(decision.case.lines.len(), 1000);
    assert_eq!(
        machine::create(new_case(1001), case_identity(), identities(1001), ctx()),
        Err(DomainError::TooManyLines)
    );
}

// ---------------------------------------------------------------------------
// Submit, Cancel, Close preconditions.
// ---------------------------------------------------------------------------

#[test]
fn submit_needs_a_line_that_is_not_canceled() {
    for lines in [vec![], vec![LS::Canceled], vec![LS::Canceled, LS::Canceled]] {
        let before = case(CS::Draft, &lines);
        assert_eq!(
            decide(&before, Command::Submit),
            Err(DomainError::NoActiveLines {
                case_state: CS::Draft
            }),
            "lines {lines:?}"
        );
    }
    let before = case(CS::Draft, &[LS::Canceled, LS::Draft, LS::Canceled]);
    let decision = decide(&before, Command::Submit).unwrap();
    assert_eq!(decision.case.state, CS::New);
    assert_eq!(
        decision.changes,
        [
            case_change(CS::Draft, CS::New, Direct),
            line_change(1, LS::Draft, LS::New, Cascade),
        ]
    );
    assert_eq!(decision.case.submit_time, Some(now()));
}

#[test]
fn cancel_cancels_every_line_not_yet_canceled() {
    let before = case(CS::Draft, &[LS::Draft, LS::Canceled, LS::Draft]);
    let decision = decide(&before, Command::Cancel).unwrap();
    assert_eq!(decision.case.state, CS::Canceled);
    assert!(
        decision
            .case
            .lines
            .iter()
            .all(|line| line.state == LS::Canceled)
    );
    assert_eq!(
        decision.changes,
        [
            case_change(CS::Draft, CS::Canceled, Direct),
            line_change(0, LS::Draft, LS::Canceled, Cascade),
            line_change(2, LS::Draft, LS::Canceled, Cascade),
        ]
    );
    // A DRAFT case without lines may be canceled too.
    let decision = decide(&case(CS::Draft, &[]), Command::Cancel).unwrap();
    assert_eq!(
        decision.changes,
        [case_change(CS::Draft, CS::Canceled, Direct)]
    );
}

#[test]
fn close_checks_that_every_line_is_final() {
    // Never true of a stored RESOLVED case (§3.5), still checked (§3.1).
    let before = case(CS::Resolved, &[LS::ResolvedAccepted, LS::WorkInProgress]);
    assert_eq!(
        decide(&before, Command::Close),
        Err(DomainError::LinesNotFinal {
            case_state: CS::Resolved,
            lines: vec![line_no(1)]
        })
    );
    let before = case(CS::Resolved, &[LS::ResolvedAccepted, LS::Canceled]);
    let decision = decide(&before, Command::Close).unwrap();
    assert_eq!(decision.case.close_time, Some(now()));
    assert_eq!(
        decision.changes,
        [case_change(CS::Resolved, CS::Closed, Direct)]
    );
}

// ---------------------------------------------------------------------------
// Assign to me.
// ---------------------------------------------------------------------------

#[test]
fn assign_to_me_assigns_the_caller() {
    let before = case(CS::New, &[LS::New]);
    let decision = machine::decide(
        &before,
        Command::AssignToMe,
        machine::Context {
            actor: "someone-else",
            now: now(),
        },
    )
    .unwrap();
    assert_eq!(decision.case.assigned_to.as_deref(), Some("someone-else"));
}

#[test]
fn r1_assign_to_me_when_every_line_is_canceled_resolves_the_case() {
    let before = case(CS::New, &[LS::Canceled, LS::Canceled]);
    let decision = decide(&before, Command::AssignToMe).unwrap();
    assert_eq!(decision.case.state, CS::Resolved);
    assert_eq!(
        decision.changes,
        [
            case_change(CS::New, CS::WorkInProgress, Direct),
            case_change(CS::WorkInProgress, CS::Resolved, Cascade),
        ]
    );
    assert_eq!(decision.case.assigned_to.as_deref(), Some(ACTOR));
    assert_eq!(decision.case.resolve_time, Some(now()));
    assert_eq!(decision.case.revision, before.revision + 1);
    assert_eq!(line_states(&decision.case), line_states(&before));
    assert_eq!(invariants::check(&decision.case), Ok(()));
}

#[test]
fn r1_does_not_apply_while_one_line_is_open_after_assign_to_me() {
    let before = case(CS::New, &[LS::Canceled, LS::New]);
    let decision = decide(&before, Command::AssignToMe).unwrap();
    assert_eq!(decision.case.state, CS::WorkInProgress);
    assert_eq!(decision.case.resolve_time, None);
}

// ---------------------------------------------------------------------------
// §3.4 R1 and R2 through SetLineState.
// ---------------------------------------------------------------------------

#[test]
fn r1_resolving_or_canceling_the_last_open_line_resolves_the_case() {
    for case_state in [CS::WorkInProgress, CS::AwaitingInfo] {
        for line_state in [LS::WorkInProgress, LS::AwaitingInfo] {
            for target in [LS::ResolvedAccepted, LS::ResolvedDenied, LS::Canceled] {
                let what = format!("{line_state} → {target} in {case_state}");
                let before = case(
                    case_state,
                    &[
                        LS::ResolvedDenied,
                        line_state,
                        LS::Canceled,
                        LS::ResolvedAccepted,
                    ],
                );
                let decision = decide(&before, set_line(1, target)).expect(&what);
                assert_eq!(decision.case.state, CS::Resolved, "{what}");
                assert_eq!(
                    decision.changes,
                    [
                        line_change(1, line_state, target, Direct),
                        case_change(case_state, CS::Resolved, Cascade),
                    ],
                    "{what}"
                );
                assert_eq!(decision.case.resolve_time, Some(now()), "{what}");
                assert_eq!(decision.case.close_time, None, "{what}");
                assert_eq!(decision.case.assigned_to, before.assigned_to, "{what}");
                assert_eq!(decision.case.revision, before.revision + 1, "{what}");
                assert_eq!(invariants::check(&decision.case), Ok(()), "{what}");
            }
        }
    }
}

#[test]
fn r1_does_not_apply_while_another_line_is_open() {
    let before = case(CS::WorkInProgress, &[LS::WorkInProgress, LS::AwaitingInfo]);
    let decision = decide(&before, set_line(0, LS::ResolvedAccepted)).unwrap();
    assert_eq!(decision.case.state, CS::WorkInProgress);
    assert_eq!(
        decision.changes,
        [line_change(
            0,
            LS::WorkInProgress,
            LS::ResolvedAccepted,
            Direct
        )]
    );
    assert_eq!(decision.case.resolve_time, None);
}

#[test]
fn r1_does_not_apply_to_cases_that_are_not_open() {
    // Canceling the last active line of a DRAFT or NEW case leaves it be.
    for case_state in [CS::Draft, CS::New] {
        let before = case(case_state, &[companion(case_state), LS::Canceled]);
        let decision = decide(&before, set_line(0, LS::Canceled)).unwrap();
        assert_eq!(decision.case.state, case_state);
        assert_eq!(decision.changes.len(), 1);
    }
}

#[test]
fn r2_a_line_back_in_progress_puts_an_awaiting_case_back_in_progress() {
    let before = case(CS::AwaitingInfo, &[LS::AwaitingInfo, LS::AwaitingInfo]);
    let decision = decide(&before, set_line(1, LS::WorkInProgress)).unwrap();
    assert_eq!(decision.case.state, CS::WorkInProgress);
    assert_eq!(
        decision.changes,
        [
            line_change(1, LS::AwaitingInfo, LS::WorkInProgress, Direct),
            case_change(CS::AwaitingInfo, CS::WorkInProgress, Cascade),
        ]
    );
    assert_eq!(decision.case.revision, before.revision + 1);
    assert_eq!(invariants::check(&decision.case), Ok(()));

    // In a WORK_IN_PROGRESS case there is nothing to do.
    let before = case(CS::WorkInProgress, &[LS::AwaitingInfo]);
    let decision = decide(&before, set_line(0, LS::WorkInProgress)).unwrap();
    assert_eq!(decision.case.state, CS::WorkInProgress);
    assert_eq!(decision.changes.len(), 1);

    // A line going to AWAITING_INFO does not move the case.
    let before = case(CS::WorkInProgress, &[LS::WorkInProgress]);
    let decision = decide(&before, set_line(0, LS::AwaitingInfo)).unwrap();
    assert_eq!(decision.case.state, CS::WorkInProgress);
    assert_eq!(decision.changes.len(), 1);
}

#[test]
fn r2_adding_a_line_to_an_awaiting_case_puts_it_back_in_progress() {
    let before = case(CS::AwaitingInfo, &[LS::AwaitingInfo]);
    let decision = decide(
        &before,
        Command::AddLine {
            line: new_line("40.00"),
            identity: identity(ADDED),
        },
    )
    .unwrap();
    assert_eq!(decision.case.state, CS::WorkInProgress);
    assert_eq!(
        decision.changes,
        [
            line_added(ADDED, LS::WorkInProgress, Direct),
            case_change(CS::AwaitingInfo, CS::WorkInProgress, Cascade),
        ]
    );
    assert_eq!(decision.added_lines, [line_id(ADDED)]);
    assert_eq!(invariants::check(&decision.case), Ok(()));
}

// ---------------------------------------------------------------------------
// SetLineState: resolutions, unknown lines, lines by number.
// ---------------------------------------------------------------------------

fn resolve(n: u32, target: LineState, resolution: LineResolution) -> Command {
    Command::SetLineState {
        line: by_id(n),
        target,
        resolution,
    }
}

#[test]
fn set_line_state_resolution_and_default_amounts() {
    let before = case(
        CS::WorkInProgress,
        &[LS::WorkInProgress, LS::AwaitingInfo, LS::WorkInProgress],
    );

    // Accepted without an amount: approved in full.
    let decision = decide(&before, set_line(0, LS::ResolvedAccepted)).unwrap();
    assert_eq!(decision.case.lines[0].approved_amount, Some(dec(DISPUTED)));

    // Denied without an amount: nothing approved.
    let decision = decide(&before, set_line(1, LS::ResolvedDenied)).unwrap();
    assert_eq!(decision.case.lines[1].approved_amount, Some(dec("0")));

    // What the request gives is set.
    let decision = decide(
        &before,
        resolve(
            2,
            LS::ResolvedAccepted,
            LineResolution {
                code: Some(ResolutionCode::SolvedWriteOff),
                notes: Some("partly".into()),
                approved_amount: Some(dec("25.50")),
            },
        ),
    )
    .unwrap();
    let line = &decision.case.lines[2];
    assert_eq!(line.approved_amount, Some(dec("25.50")));
    assert_eq!(line.resolution_code, Some(ResolutionCode::SolvedWriteOff));
    assert_eq!(line.resolution_notes.as_deref(), Some("partly"));

    // The whole disputed amount may be approved, not more.
    let full = LineResolution {
        approved_amount: Some(dec(DISPUTED)),
        ..LineResolution::default()
    };
    assert!(decide(&before, resolve(0, LS::ResolvedAccepted, full)).is_ok());
    let too_much = LineResolution {
        approved_amount: Some(dec("100.01")),
        ..LineResolution::default()
    };
    let error = decide(&before, resolve(0, LS::ResolvedAccepted, too_much)).unwrap_err();
    assert_eq!(violations(error)[0].field, "approved_amount");

    // A denied line approves nothing.
    let denied_amount = LineResolution {
        approved_amount: Some(dec("0")),
        ..LineResolution::default()
    };
    let error = decide(&before, resolve(0, LS::ResolvedDenied, denied_amount)).unwrap_err();
    assert_eq!(violations(error)[0].field, "approved_amount");
}

#[test]
fn set_line_state_takes_no_resolution_unless_it_resolves() {
    let before = case(
        CS::WorkInProgress,
        &[LS::WorkInProgress, LS::WorkInProgress],
    );
    for target in [LS::AwaitingInfo, LS::Canceled] {
        let resolution = LineResolution {
            code: Some(ResolutionCode::SolvedCredit),
            ..LineResolution::default()
        };
        assert!(
            matches!(
                decide(&before, resolve(0, target, resolution)),
                Err(DomainError::InvalidRequest(_))
            ),
            "{target}"
        );
    }
}

#[test]
fn unknown_lines_are_not_found() {
    let unknown = [LineRef::Id(line_id(50)), LineRef::Number(line_no(50))];
    let draft = case(CS::Draft, &[LS::Draft]);
    let open = case(CS::WorkInProgress, &[LS::WorkInProgress]);
    for line in unknown {
        assert_eq!(
            decide(&draft, Command::RemoveLine { line: line.clone() }),
            Err(DomainError::LineNotFound(line.clone()))
        );
        assert_eq!(
            decide(
                &open,
                Command::SetLineState {
                    line: line.clone(),
                    target: LS::ResolvedAccepted,
                    resolution: LineResolution::default(),
                }
            ),
            Err(DomainError::LineNotFound(line.clone()))
        );
    }
}

#[test]
fn lines_may_be_named_by_number() {
    let before = case(
        CS::WorkInProgress,
        &[LS::WorkInProgress, LS::WorkInProgress],
    );
    let decision = decide(
        &before,
        Command::SetLineState {
            line: LineRef::Number(line_no(1)),
            target: LS::Canceled,
            resolution: LineResolution::default(),
        },
    )
    .unwrap();
    assert_eq!(
        decision.changes,
        [line_change(1, LS::WorkInProgress, LS::Canceled, Direct)]
    );
    let before = case(CS::Draft, &[LS::Draft, LS::Draft]);
    let decision = decide(
        &before,
        Command::RemoveLine {
            line: LineRef::Number(line_no(0)),
        },
    )
    .unwrap();
    assert_eq!(decision.changes, [line_removed(0, LS::Draft)]);
    assert_eq!(decision.removed_lines, [line_id(0)]);
    assert_eq!(line_states(&decision.case), [(line_id(1), LS::Draft)]);
}

// ---------------------------------------------------------------------------
// Add and remove lines.
// ---------------------------------------------------------------------------

#[test]
fn a_case_holds_at_most_1000_lines() {
    for state in [CS::Draft, CS::New, CS::WorkInProgress, CS::AwaitingInfo] {
        let full = case(state, &vec![companion(state); 1000]);
        let add = || Command::AddLine {
            line: new_line("40.00"),
            identity: identity(5000),
        };
        assert_eq!(
            decide(&full, add()),
            Err(DomainError::TooManyLines),
            "{state}"
        );
        let almost = case(state, &vec![companion(state); 999]);
        let decision = decide(&almost, add()).expect("the thousandth line");
        assert_eq!(decision.case.lines.len(), 1000);
    }
}

#[test]
fn an_added_line_is_a_new_line_after_the_others() {
    let before = case(CS::New, &[LS::New, LS::Canceled]);
    let decision = decide(
        &before,
        Command::AddLine {
            line: new_line("40.00"),
            identity: identity(ADDED),
        },
    )
    .unwrap();
    let line = decision.case.lines.last().unwrap();
    assert_eq!(line.id, line_id(ADDED));
    assert_eq!(line.number, line_no(ADDED));
    assert_eq!(line.state, LS::New);
    assert_eq!(line.position, 3);
    assert_eq!(line.disputed_amount, dec("40.00"));
    assert_eq!(line.approved_amount, None);
    assert_eq!((line.create_time, line.update_time), (now(), now()));
    assert_eq!(decision.added_lines, [line_id(ADDED)]);
    assert_eq!(decision.case.revision, before.revision + 1);
}

#[test]
fn check_line_invoice_rules() {
    let with_invoice = |invoice: Option<&str>| NewLine {
        invoice_number: invoice.map(str::to_owned),
        ..new_line("1.00")
    };
    use RequestSource::{MultipleInvoices, SingleInvoice};
    // MULTIPLE_INVOICES: every line names its invoice.
    assert!(check_line_invoice(MultipleInvoices, None, &with_invoice(None)).is_err());
    assert!(check_line_invoice(MultipleInvoices, None, &with_invoice(Some("ARINV1"))).is_ok());
    // SINGLE_INVOICE: lines dispute the case's invoice.
    let case_invoice = Some(CASE_INVOICE);
    assert!(check_line_invoice(SingleInvoice, case_invoice, &with_invoice(None)).is_ok());
    assert!(check_line_invoice(SingleInvoice, case_invoice, &with_invoice(case_invoice)).is_ok());
    assert!(
        check_line_invoice(SingleInvoice, case_invoice, &with_invoice(Some("ARINV9"))).is_err()
    );

    // AddLine applies the rules.
    let mut multiple = case(CS::Draft, &[]);
    multiple.request_source = MultipleInvoices;
    multiple.invoice_number = None;
    let add = |invoice: Option<&str>| Command::AddLine {
        line: with_invoice(invoice),
        identity: identity(ADDED),
    };
    let error = decide(&multiple, add(None)).unwrap_err();
    assert_eq!(violations(error)[0].field, "line.invoice_number");
    assert!(decide(&multiple, add(Some("ARINV1"))).is_ok());
    let single = case(CS::Draft, &[]);
    assert!(matches!(
        decide(&single, add(Some("ARINV9"))),
        Err(DomainError::InvalidRequest(_))
    ));
    assert!(decide(&single, add(None)).is_ok());
}

// ---------------------------------------------------------------------------
// Propose solution.
// ---------------------------------------------------------------------------

/// A WORK_IN_PROGRESS case with open lines 0, 1, 2 and final lines 3, 4.
fn case_to_resolve() -> Case {
    case(
        CS::WorkInProgress,
        &[
            LS::WorkInProgress,
            LS::AwaitingInfo,
            LS::WorkInProgress,
            LS::ResolvedDenied,
            LS::Canceled,
        ],
    )
}

#[test]
fn propose_solution_needs_an_outcome_for_every_open_line_and_names_the_missing() {
    let before = case_to_resolve();
    let error = decide(
        &before,
        propose(None, vec![outcome(1, Outcome::Denied, None)]),
    )
    .unwrap_err();
    let violations = violations(error);
    let text: Vec<&str> = violations.iter().map(|v| v.description.as_str()).collect();
    let text = text.join(" | ");
    assert!(text.contains(&line_no(0)), "{text}");
    assert!(text.contains(&line_no(2)), "{text}");
    for named in [1, 3, 4] {
        assert!(!text.contains(&line_no(named)), "{text} names line {named}");
    }

    // An outcome for each open line, no default: allowed.
    let all = vec![
        outcome(0, Outcome::Accepted, None),
        outcome(1, Outcome::Denied, None),
        outcome(2, Outcome::Accepted, None),
    ];
    assert!(decide(&before, propose(None, all)).is_ok());
}

#[test]
fn propose_solution_refuses_two_outcomes_for_one_line() {
    let before = case_to_resolve();
    let outcomes = vec![
        outcome(0, Outcome::Accepted, None),
        outcome(0, Outcome::Denied, None),
    ];
    let violations =
        violations(decide(&before, propose(Some(Outcome::Accepted), outcomes)).unwrap_err());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].field.starts_with("line_outcomes[1]"),
        "{violations:?}"
    );
}

#[test]
fn propose_solution_refuses_an_outcome_for_a_final_line() {
    let before = case_to_resolve();
    for final_line in [3, 4] {
        let outcomes = vec![
            outcome(0, Outcome::Accepted, None),
            outcome(final_line, Outcome::Accepted, None),
        ];
        let violations =
            violations(decide(&before, propose(Some(Outcome::Accepted), outcomes)).unwrap_err());
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].field.starts_with("line_outcomes[1]"),
            "{violations:?}"
        );
    }
}

#[test]
fn propose_solution_refuses_an_outcome_for_an_unknown_line() {
    let before = case_to_resolve();
    let outcomes = vec![outcome(50, Outcome::Accepted, None)];
    assert!(matches!(
        decide(&before, propose(Some(Outcome::Accepted), outcomes)),
        Err(DomainError::InvalidRequest(_) | DomainError::LineNotFound(_))
    ));
}

#[test]
fn propose_solution_approves_at_most_the_disputed_amount() {
    let before = case_to_resolve();
    let outcomes = vec![outcome(0, Outcome::Accepted, Some("100.01"))];
    let violations =
        violations(decide(&before, propose(Some(Outcome::Accepted), outcomes)).unwrap_err());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "line_outcomes[0].approved_amount");

    let outcomes = vec![outcome(0, Outcome::Accepted, Some(DISPUTED))];
    let decision = decide(&before, propose(Some(Outcome::Accepted), outcomes)).unwrap();
    assert_eq!(decision.case.lines[0].approved_amount, Some(dec(DISPUTED)));
}

#[test]
fn propose_solution_refuses_an_approved_amount_on_a_denied_line() {
    let before = case_to_resolve();
    for amount in ["0", "10.00"] {
        let outcomes = vec![outcome(1, Outcome::Denied, Some(amount))];
        let violations =
            violations(decide(&before, propose(Some(Outcome::Accepted), outcomes)).unwrap_err());
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "line_outcomes[0].approved_amount");
    }
}

#[test]
fn propose_solution_default_outcome_covers_the_remaining_lines() {
    let before = case_to_resolve();
    let decision = decide(
        &before,
        propose(
            Some(Outcome::Denied),
            vec![outcome(2, Outcome::Accepted, None)],
        ),
    )
    .unwrap();
    let case = &decision.case;
    assert_eq!(case.state, CS::Resolved);
    assert_eq!(
        line_states(case),
        [
            (line_id(0), LS::ResolvedDenied),
            (line_id(1), LS::ResolvedDenied),
            (line_id(2), LS::ResolvedAccepted),
            (line_id(3), LS::ResolvedDenied),
            (line_id(4), LS::Canceled),
        ]
    );
    assert_eq!(
        decision.changes,
        [
            case_change(CS::WorkInProgress, CS::Resolved, Direct),
            line_change(0, LS::WorkInProgress, LS::ResolvedDenied, Cascade),
            line_change(1, LS::AwaitingInfo, LS::ResolvedDenied, Cascade),
            line_change(2, LS::WorkInProgress, LS::ResolvedAccepted, Cascade),
        ]
    );
    // Lines that were final already keep their resolution.
    assert_eq!(case.lines[3], before.lines[3]);
    assert_eq!(case.lines[4], before.lines[4]);
    assert_eq!(case.resolution_code, Some(ResolutionCode::SolvedSettlement));
    assert_eq!(
        case.resolution_notes.as_deref(),
        Some("settled with the customer")
    );
    assert_eq!(case.resolve_time, Some(now()));
    assert_eq!(case.revision, before.revision + 1);
    assert_eq!(invariants::check(case), Ok(()));
}

#[test]
fn propose_solution_line_resolutions_default_to_the_case_and_amounts_to_the_outcome() {
    let before = case_to_resolve();
    let own = LineOutcome {
        line: by_id(1),
        outcome: Outcome::Accepted,
        approved_amount: Some(dec("12.34")),
        resolution_code: Some(ResolutionCode::SolvedWriteOff),
        resolution_notes: Some("written off".into()),
    };
    let decision = decide(
        &before,
        propose(
            None,
            vec![
                outcome(0, Outcome::Accepted, None),
                own,
                outcome(2, Outcome::Denied, None),
            ],
        ),
    )
    .unwrap();
    let lines = &decision.case.lines;
    // Accepted without an amount: approved in full, with the case's code.
    assert_eq!(lines[0].state, LS::ResolvedAccepted);
    assert_eq!(lines[0].approved_amount, Some(dec(DISPUTED)));
    assert_eq!(
        lines[0].resolution_code,
        Some(ResolutionCode::SolvedSettlement)
    );
    // The line's own amount, code and notes.
    assert_eq!(lines[1].state, LS::ResolvedAccepted);
    assert_eq!(lines[1].approved_amount, Some(dec("12.34")));
    assert_eq!(
        lines[1].resolution_code,
        Some(ResolutionCode::SolvedWriteOff)
    );
    assert_eq!(lines[1].resolution_notes.as_deref(), Some("written off"));
    // Denied: nothing approved, the case's code.
    assert_eq!(lines[2].state, LS::ResolvedDenied);
    assert_eq!(lines[2].approved_amount, Some(dec("0")));
    assert_eq!(
        lines[2].resolution_code,
        Some(ResolutionCode::SolvedSettlement)
    );
}

// ---------------------------------------------------------------------------
// A whole lifecycle: revisions and timestamps.
// ---------------------------------------------------------------------------

#[test]
fn lifecycle_revisions_and_timestamps() {
    let step = |seconds: i64| machine::Context {
        actor: ACTOR,
        now: at(seconds),
    };
    let case_identity = machine::CaseIdentity {
        id: CASE_ID,
        number: CASE_NUMBER.into(),
    };
    let created = machine::create(
        new_case(2),
        case_identity,
        vec![identity(0), identity(1)],
        step(100),
    )
    .unwrap()
    .case;
    assert_eq!(
        (created.create_time, created.update_time),
        (at(100), at(100))
    );

    let mut case = created.clone();
    let mut apply = |command: Command, seconds: i64| {
        let decision = machine::decide(&case, command, step(seconds)).unwrap();
        assert_eq!(decision.case.revision, case.revision + 1);
        assert_eq!(decision.case.update_time, at(seconds));
        assert_eq!(decision.case.create_time, at(100));
        assert_eq!(invariants::check(&decision.case), Ok(()));
        case = decision.case;
        case.clone()
    };

    let submitted = apply(Command::Submit, 200);
    assert_eq!(submitted.submit_time, Some(at(200)));
    assert_eq!(submitted.assigned_to, None);

    let assigned = apply(Command::AssignToMe, 300);
    assert_eq!(assigned.assigned_to.as_deref(), Some(ACTOR));
    assert_eq!(assigned.submit_time, Some(at(200)));

    let awaiting = apply(Command::RequestInformation, 400);
    assert_eq!(awaiting.state, CS::AwaitingInfo);
    let back = apply(Command::InformationReceived, 500);
    assert_eq!(back.state, CS::WorkInProgress);
    assert_eq!(back.resolve_time, None);

    let resolved = apply(propose(Some(Outcome::Accepted), vec![]), 600);
    assert_eq!(resolved.resolve_time, Some(at(600)));
    assert_eq!(resolved.close_time, None);

    let closed = apply(Command::Close, 700);
    assert_eq!(closed.state, CS::Closed);
    assert_eq!(closed.close_time, Some(at(700)));
    assert_eq!(
        (closed.submit_time, closed.resolve_time),
        (Some(at(200)), Some(at(600)))
    );
    assert_eq!(closed.revision, created.revision + 6);
}
