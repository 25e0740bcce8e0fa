//! The filter of ListInvoiceCases: an AIP-160 subset.
//!
//! ```text
//! filter     = comparison { "AND" comparison }
//! comparison = field ( "=" | "!=" ) value
//! field      = "state" | "account_id" | "assigned_to" | "priority"
//! value      = bare word | "double quoted" | 'single quoted'
//! ```
//!
//! `assigned_to = ""` selects unassigned cases.

use crate::{
    domain::{
        CaseState, Priority,
        values::{MAX_ACTOR, MAX_IDENTIFIER, identifier, quote},
    },
    store::{CaseFilter, Comparison},
};

/// Longest filter accepted.
const MAX_FILTER: usize = 2048;

#[derive(Debug, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Quoted(String),
    Equal,
    NotEqual,
}

fn tokens(text: &str) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(tokens);
        };
        if let Some(after) = rest.strip_prefix("!=") {
            tokens.push(Token::NotEqual);
            rest = after;
        } else if let Some(after) = rest.strip_prefix('=') {
            tokens.push(Token::Equal);
            rest = after;
        } else if c == '"' || c == '\'' {
            let body = &rest[1..];
            let mut value = String::new();
            let mut chars = body.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("has an unterminated {c}quoted{c} value")),
                    Some((i, q)) if q == c => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => return Err("ends inside an escape".into()),
                    },
                    Some((_, other)) => value.push(other),
                }
            };
            tokens.push(Token::Quoted(value));
            rest = &body[end + 1..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '=' || c == '!' || c == '"' || c == '\'')
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("has an unexpected {c:?}"));
            }
            tokens.push(Token::Word(&rest[..end]));
            rest = &rest[end..];
        }
    }
}

/// Parses a filter; the error describes what is wrong with it.
pub fn parse(text: &str) -> Result<CaseFilter, String> {
    if text.len() > MAX_FILTER {
        return Err(format!("is longer than {MAX_FILTER} characters"));
    }
    let tokens = tokens(text)?;
    let mut filter = CaseFilter::default();
    let mut iter = tokens.into_iter().peekable();
    if iter.peek().is_none() {
        return Ok(filter);
    }
    loop {
        let field = match iter.next() {
            Some(Token::Word(field)) => field,
            other => return Err(format!("expected a field name, found {}", describe(other))),
        };
        let comparison = match iter.next() {
            Some(Token::Equal) => Comparison::Equal,
            Some(Token::NotEqual) => Comparison::NotEqual,
            other => {
                return Err(format!(
                    "expected = or != after {}, found {}",
                    quote(field),
                    describe(other)
                ));
            }
        };
        let value = match iter.next() {
            Some(Token::Word(word)) => word.to_owned(),
            Some(Token::Quoted(value)) => value,
            other => {
                return Err(format!(
                    "expected a value after {}, found {}",
                    quote(field),
                    describe(other)
                ));
            }
        };
        match field {
            "state" => {
                let state = CaseState::parse(&value).ok_or_else(|| {
                    format!("{} is not a case state (DRAFT, NEW, WORK_IN_PROGRESS, AWAITING_INFO, RESOLVED, CLOSED, CANCELED)", quote(&value))
                })?;
                filter.states.push((comparison, state));
            }
            "account_id" => filter
                .accounts
                .push((comparison, identifier(&value, MAX_IDENTIFIER)?)),
            "assigned_to" => {
                let value = identifier(&value, MAX_ACTOR)?;
                filter
                    .assignees
                    .push((comparison, (!value.is_empty()).then_some(value)));
            }
            "priority" => {
                let priority = value
                    .parse::<i64>()
                    .ok()
                    .and_then(Priority::from_level)
                    .or(match value.as_str() {
                        "CRITICAL" => Some(Priority::Critical),
                        "HIGH" => Some(Priority::High),
                        "MODERATE" => Some(Priority::Moderate),
                        "LOW" => Some(Priority::Low),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        format!(
                            "{} is not a priority (1-4 or CRITICAL, HIGH, MODERATE, LOW)",
                            quote(&value)
                        )
                    })?;
                filter.priorities.push((comparison, priority));
            }
            other => {
                return Err(format!(
                    "cannot filter on {}; the fields are state, account_id, assigned_to and priority",
                    quote(other)
                ));
            }
        }
        match iter.next() {
            None => return Ok(filter),
            Some(Token::Word("AND")) => {}
            other => {
                return Err(format!(
                    "expected AND or the end, found {}",
                    describe(other)
                ));
            }
        }
    }
}

fn describe(token: Option<Token<'_>>) -> String {
    match token {
        None => "the end".into(),
        Some(Token::Word(word)) => quote(word),
        Some(Token::Quoted(value)) => quote(&value),
        Some(Token::Equal) => "=".into(),
        Some(Token::NotEqual) => "!=".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subset() {
        let filter = parse(
            r#"state = NEW AND priority != 4 AND account_id = "ACME 1" AND assigned_to = ''"#,
        )
        .unwrap();
        assert_eq!(filter.states, [(Comparison::Equal, CaseState::New)]);
        assert_eq!(filter.priorities, [(Comparison::NotEqual, Priority::Low)]);
        assert_eq!(filter.accounts, [(Comparison::Equal, "ACME 1".to_owned())]);
        assert_eq!(filter.assignees, [(Comparison::Equal, None)]);
        assert_eq!(parse("").unwrap(), CaseFilter::default());
        assert_eq!(parse("   ").unwrap(), CaseFilter::default());
        assert_eq!(
            parse("priority=CRITICAL").unwrap().priorities,
            [(Comparison::Equal, Priority::Critical)]
        );
        assert_eq!(
            parse(r#"account_id="a\"b""#).unwrap().accounts,
            [(Comparison::Equal, "a\"b".to_owned())]
        );
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "state",
            "state =",
            "state = BOGUS",
            "state = NEW OR state = DRAFT",
            "state = NEW AND",
            "priority = 5",
            "number = INVCS0001001",
            "state < NEW",
            "account_id = \"open",
            "= NEW",
            "state = NEW state = DRAFT",
            "account_id = \"a\u{0}b\"",
            "assigned_to = x\u{1}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
