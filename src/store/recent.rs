//! Cases this process wrote or read recently, as they were then.
//!
//! An action on a case that is here is decided on this copy, without
//! reading the case first: the write commits only if the case's revision is
//! still the copy's (see `write.rs`), so a copy that another replica (or
//! anything else) has made stale costs one write that changes nothing, and
//! the action is read and decided again. Nothing is ever answered from a
//! copy but a committed write: a refusal, a stale etag or a missing case is
//! always confirmed by reading the database. Reads (Get, List) never use
//! the copies.
//!
//! Bounded by weight (a case weighs one plus its lines); cases of more than
//! [`MAX_LINES`] lines are not kept (reading them costs little next to
//! writing them), so the copies hold a few megabytes at most.

use std::sync::Arc;

use quick_cache::{Weighter, sync::Cache};
use uuid::Uuid;

use crate::domain::Case;

/// Cases (one unit each) plus lines held at most.
const WEIGHT: u64 = 20_000;
/// Cases with more lines are not kept.
const MAX_LINES: usize = 100;
/// How many cases the cache is sized for.
const CASES: usize = 10_000;

#[derive(Clone)]
struct ByLines;

impl Weighter<Uuid, Arc<Case>> for ByLines {
    fn weight(&self, _id: &Uuid, case: &Arc<Case>) -> u64 {
        1 + case.lines.len() as u64
    }
}

/// The copies, by case id, and case numbers to ids.
pub(super) struct RecentCases {
    cases: Cache<Uuid, Arc<Case>, ByLines>,
    numbers: Cache<String, Uuid>,
}

impl RecentCases {
    pub fn new() -> Self {
        RecentCases {
            cases: Cache::with_weighter(CASES, WEIGHT, ByLines),
            numbers: Cache::new(CASES),
        }
    }

    /// The copy of the case `id` or `number` names, if there is one.
    pub fn get(&self, id: Option<Uuid>, number: Option<&str>) -> Option<Arc<Case>> {
        let id = match (id, number) {
            (Some(id), _) => id,
            (None, Some(number)) => self.numbers.get(number)?,
            (None, None) => return None,
        };
        self.cases.get(&id)
    }

    /// Remembers `case` as committed.
    pub fn put(&self, case: Case) {
        if case.lines.len() > MAX_LINES {
            self.forget(case.id);
            return;
        }
        self.numbers.insert(case.number.clone(), case.id);
        self.cases.insert(case.id, Arc::new(case));
    }

    /// Forgets the copy of `id` (it proved stale).
    pub fn forget(&self, id: Uuid) {
        self.cases.remove(&id);
    }
}
