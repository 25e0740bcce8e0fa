//! The records: invoice cases and their lines (SPEC §2).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    state::{CaseState, LineState},
    values::Decimal,
};

/// Whether the lines of a case dispute one invoice or several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestSource {
    SingleInvoice,
    MultipleInvoices,
}

/// Case priority; the discriminants are the priority levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Critical = 1,
    High = 2,
    Moderate = 3,
    Low = 4,
}

/// Why a line is disputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeCode {
    IncorrectProductOrService,
    PricingDiscrepancy,
    IncorrectQuantity,
    IncorrectCustomerDetails,
    Other,
}

/// How a case or a line was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionCode {
    SolvedCredit,
    SolvedWriteOff,
    SolvedSettlement,
    SolvedInvalidDispute,
}

macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];

            /// The name used in the database and the API.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $name),+ }
            }

            /// The inverse of `as_str`.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }
    };
}

names!(RequestSource {
    SingleInvoice => "SINGLE_INVOICE",
    MultipleInvoices => "MULTIPLE_INVOICES",
});
names!(DisputeCode {
    IncorrectProductOrService => "INCORRECT_PRODUCT_OR_SERVICE",
    PricingDiscrepancy => "PRICING_DISCREPANCY",
    IncorrectQuantity => "INCORRECT_QUANTITY",
    IncorrectCustomerDetails => "INCORRECT_CUSTOMER_DETAILS",
    Other => "OTHER",
});
names!(ResolutionCode {
    SolvedCredit => "SOLVED_CREDIT",
    SolvedWriteOff => "SOLVED_WRITE_OFF",
    SolvedSettlement => "SOLVED_SETTLEMENT",
    SolvedInvalidDispute => "SOLVED_INVALID_DISPUTE",
});

impl Priority {
    /// The priority of a level 1-4.
    pub fn from_level(level: i64) -> Option<Self> {
        match level {
            1 => Some(Priority::Critical),
            2 => Some(Priority::High),
            3 => Some(Priority::Moderate),
            4 => Some(Priority::Low),
            _ => None,
        }
    }

    /// The level 1 (critical) to 4 (low).
    pub fn level(self) -> i16 {
        self as i16
    }
}

/// An invoice case with its lines, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: Uuid,
    pub number: String,
    pub state: CaseState,
    pub account_id: String,
    pub contact_id: Option<String>,
    pub invoice_number: Option<String>,
    pub request_source: RequestSource,
    pub short_description: String,
    pub description: Option<String>,
    pub priority: Priority,
    pub currency_code: String,
    pub assigned_to: Option<String>,
    pub opened_by: String,
    pub resolution_code: Option<ResolutionCode>,
    pub resolution_notes: Option<String>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub submit_time: Option<DateTime<Utc>>,
    pub resolve_time: Option<DateTime<Utc>>,
    pub close_time: Option<DateTime<Utc>>,
    /// The group of agents it is assigned to.
    pub assignment_group: Option<String>,
    /// Incremented by every change of the case or a line; the etag.
    pub revision: i64,
    /// In line order (`position`).
    pub lines: Vec<Line>,
}

/// A case line, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub id: Uuid,
    pub number: String,
    /// Order of the line within its case.
    pub position: i32,
    pub state: LineState,
    pub dispute_code: DisputeCode,
    pub invoice_line_ref: Option<String>,
    pub invoice_number: Option<String>,
    pub short_description: String,
    pub invoiced_amount: Decimal,
    pub disputed_amount: Decimal,
    pub approved_amount: Option<Decimal>,
    pub invoiced_quantity: Option<Decimal>,
    pub disputed_quantity: Option<Decimal>,
    pub resolution_code: Option<ResolutionCode>,
    pub resolution_notes: Option<String>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// The caller-given fields of a new case.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCase {
    pub account_id: String,
    pub contact_id: Option<String>,
    pub invoice_number: Option<String>,
    pub request_source: RequestSource,
    pub short_description: String,
    pub description: Option<String>,
    pub priority: Priority,
    pub currency_code: String,
    pub lines: Vec<NewLine>,
}

/// The caller-given fields of a new line.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLine {
    pub dispute_code: DisputeCode,
    pub invoice_line_ref: Option<String>,
    pub invoice_number: Option<String>,
    pub short_description: String,
    pub invoiced_amount: Decimal,
    pub disputed_amount: Decimal,
    pub invoiced_quantity: Option<Decimal>,
    pub disputed_quantity: Option<Decimal>,
}

/// The server-assigned identity of a new line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIdentity {
    pub id: Uuid,
    pub number: String,
}

/// How a command names a line: by UUID or by number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LineRef {
    Id(Uuid),
    Number(String),
}

impl LineRef {
    /// Reads a UUID or an `INVCSL` number.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(id) = Uuid::parse_str(text) {
            Some(LineRef::Id(id))
        } else if is_line_number(text) {
            Some(LineRef::Number(text.to_owned()))
        } else {
            None
        }
    }

    fn matches(&self, line: &Line) -> bool {
        match self {
            LineRef::Id(id) => line.id == *id,
            LineRef::Number(number) => line.number == *number,
        }
    }
}

impl std::fmt::Display for LineRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineRef::Id(id) => id.fmt(f),
            LineRef::Number(number) => f.write_str(number),
        }
    }
}

/// Case numbers: `INVCS` and at least 7 digits.
pub fn case_number(sequence: i64) -> String {
    format!("INVCS{sequence:07}")
}

/// Line numbers: `INVCSL` and at least 7 digits.
pub fn line_number(sequence: i64) -> String {
    format!("INVCSL{sequence:07}")
}

/// Digits a number may have: at least 7, at most as many as the largest
/// sequence value (a bigint) has.
const NUMBER_DIGITS: std::ops::RangeInclusive<usize> = 7..=19;

/// Whether `text` has the shape of a case number.
pub fn is_case_number(text: &str) -> bool {
    text.strip_prefix("INVCS").is_some_and(|digits| {
        NUMBER_DIGITS.contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Whether `text` has the shape of a line number.
pub fn is_line_number(text: &str) -> bool {
    text.strip_prefix("INVCSL").is_some_and(|digits| {
        NUMBER_DIGITS.contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

impl Case {
    /// The etag: changes with every change of the case or its lines.
    pub fn etag(&self) -> String {
        self.revision.to_string()
    }

    /// Finds a line by UUID or number.
    pub fn line(&self, line_ref: &LineRef) -> Option<&Line> {
        self.lines.iter().find(|line| line_ref.matches(line))
    }

    /// Index of a line in `lines`.
    pub(crate) fn line_index(&self, line_ref: &LineRef) -> Option<usize> {
        self.lines.iter().position(|line| line_ref.matches(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(case_number(1001), "INVCS0001001");
        assert_eq!(line_number(7), "INVCSL0000007");
        assert_eq!(case_number(12_345_678), "INVCS12345678");
        assert!(is_case_number("INVCS0001001"));
        assert!(!is_case_number("INVCSL0001001"));
        assert!(!is_case_number("INVCS001"));
        assert!(is_case_number(&format!("INVCS{}", "9".repeat(19))));
        assert!(!is_case_number(&format!("INVCS{}", "1".repeat(20))));
        assert!(!is_line_number(&format!("INVCSL{}", "1".repeat(20_000))));
        assert!(is_line_number("INVCSL0001001"));
        assert!(!is_line_number("INVCS0001001"));
    }

    #[test]
    fn names_round_trip() {
        for v in DisputeCode::ALL {
            assert_eq!(DisputeCode::parse(v.as_str()), Some(*v));
        }
        for v in ResolutionCode::ALL {
            assert_eq!(ResolutionCode::parse(v.as_str()), Some(*v));
        }
        for v in RequestSource::ALL {
            assert_eq!(RequestSource::parse(v.as_str()), Some(*v));
        }
        for level in 1..=4 {
            assert_eq!(
                Priority::from_level(level).map(|p| p.level() as i64),
                Some(level)
            );
        }
        assert_eq!(Priority::from_level(0), None);
        assert_eq!(Priority::from_level(5), None);
    }

    #[test]
    fn line_refs() {
        let id = Uuid::new_v4();
        assert_eq!(LineRef::parse(&id.to_string()), Some(LineRef::Id(id)));
        assert_eq!(
            LineRef::parse("INVCSL0000001"),
            Some(LineRef::Number("INVCSL0000001".into()))
        );
        assert_eq!(LineRef::parse("INVCS0000001"), None);
        assert_eq!(LineRef::parse(""), None);
    }
}
