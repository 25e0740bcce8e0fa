//! Validated field values ("parse, don't validate"): each constructor
//! checks one field and says in plain words what is wrong.

use std::{fmt, str::FromStr};

use bigdecimal::BigDecimal;

/// Most lines a case may hold.
pub const MAX_LINES_PER_CASE: usize = 1000;
/// Longest short description, in characters.
pub const MAX_SHORT_DESCRIPTION: usize = 160;
/// Longest description, notes and comments, in characters.
pub const MAX_LONG_TEXT: usize = 4000;
/// Longest identifier (account, contact, invoice numbers).
pub const MAX_IDENTIFIER: usize = 64;
/// Longest actor (a token's `sub`).
pub const MAX_ACTOR: usize = 255;
/// Integer digits an amount or quantity may have.
const MAX_INTEGER_DIGITS: usize = 15;
/// Fraction digits an amount or quantity may have.
const MAX_FRACTION_DIGITS: usize = 4;

/// An exact non-negative decimal (money or quantity), kept with the scale it
/// was given in (`"12.50"` stays `"12.50"`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(BigDecimal);

impl Decimal {
    /// Parses `digits[.digits]` with at most 15 integer and 4 fraction
    /// digits; no sign, exponent or spaces.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (int, frac) = match text.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
            return Err(format!(
                "must be a non-negative decimal number like \"1250.00\", not {}",
                quote(text)
            ));
        }
        if int.trim_start_matches('0').len() > MAX_INTEGER_DIGITS {
            return Err(format!(
                "has more than {MAX_INTEGER_DIGITS} digits before the decimal point"
            ));
        }
        if frac.is_some_and(|f| f.len() > MAX_FRACTION_DIGITS) {
            return Err(format!(
                "has more than {MAX_FRACTION_DIGITS} digits after the decimal point"
            ));
        }
        BigDecimal::from_str(text)
            .map(Decimal)
            .map_err(|e| format!("is not a decimal number: {e}"))
    }

    /// Wraps a value read back from the database (which enforces the same
    /// bounds).
    pub fn from_big_decimal(value: BigDecimal) -> Self {
        Decimal(value)
    }

    /// The value, for the database.
    pub fn as_big_decimal(&self) -> &BigDecimal {
        &self.0
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_plain_string())
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({self})")
    }
}

impl TryFrom<String> for Decimal {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Decimal::parse(&value)
    }
}

impl From<Decimal> for String {
    fn from(value: Decimal) -> String {
        value.to_string()
    }
}

/// Quotes (at most 40 characters of) a caller's value back in an error
/// message: enough to recognise it, never enough to bloat the answer.
pub fn quote(text: &str) -> String {
    const MAX: usize = 40;
    let mut short: String = text.chars().take(MAX).collect();
    if text.chars().nth(MAX).is_some() {
        short.push('…');
    }
    format!("{short:?}")
}

/// Checks an identifier given to look something up (an account in a
/// filter, say): 1 to `max` characters, no control characters.
pub fn identifier(text: &str, max: usize) -> Result<String, String> {
    if text.chars().count() > max {
        return Err(format!("is longer than {max} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(text.to_owned())
}

/// Checks a required one-line text of `1..=max` characters: not blank, no
/// control characters.
pub fn required_text(text: &str, max: usize) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("is required".into());
    }
    single_line(text, max)?;
    Ok(text.to_owned())
}

/// Checks an optional one-line text: empty means absent.
pub fn optional_text(text: &str, max: usize) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    required_text(text, max).map(Some)
}

/// Checks an optional multi-line text (description, notes, comments): empty
/// means absent; newlines and tabs are allowed, other control characters are
/// not.
pub fn optional_long_text(text: &str, max: usize) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let count = text.chars().count();
    if count > max {
        return Err(format!(
            "is {count} characters long; at most {max} are allowed"
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters".into());
    }
    Ok(Some(text.to_owned()))
}

fn single_line(text: &str, max: usize) -> Result<(), String> {
    let count = text.chars().count();
    if count > max {
        return Err(format!(
            "is {count} characters long; at most {max} are allowed"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters or line breaks".into());
    }
    Ok(())
}

/// Checks an ISO 4217 currency code: three capital letters.
pub fn currency_code(text: &str) -> Result<String, String> {
    if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(text.to_owned())
    } else if text.is_empty() {
        Err("is required".into())
    } else {
        Err(format!(
            "must be an ISO 4217 code of three capital letters (like \"EUR\"), not {}",
            quote(text)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(Decimal::parse("1250.00").unwrap().to_string(), "1250.00");
        assert_eq!(Decimal::parse("0").unwrap().to_string(), "0");
        assert_eq!(Decimal::parse("0.0001").unwrap().to_string(), "0.0001");
        assert_eq!(
            Decimal::parse("999999999999999.9999").unwrap().to_string(),
            "999999999999999.9999"
        );
    }

    #[test]
    fn decimals_compare_by_value() {
        assert!(Decimal::parse("10.5").unwrap() < Decimal::parse("10.5001").unwrap());
        assert_eq!(
            Decimal::parse("10.50").unwrap(),
            Decimal::parse("10.5").unwrap()
        );
    }

    #[test]
    fn malformed_decimals_are_refused() {
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            " 1",
            "1 ",
            "1.",
            ".5",
            "1.2.3",
            "abc",
            "1,5",
            "1.00001",
            "1000000000000000",
            "NaN",
            "١",
        ] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn texts() {
        assert!(required_text("", 10).is_err());
        assert!(required_text("   ", 10).is_err());
        assert!(required_text("a\nb", 10).is_err());
        assert_eq!(required_text("héllo", 5).unwrap(), "héllo");
        assert!(required_text("héllo!", 5).is_err());
        assert_eq!(optional_text("", 5).unwrap(), None);
        assert_eq!(
            optional_long_text("a\nb", 5).unwrap().as_deref(),
            Some("a\nb")
        );
        assert!(optional_long_text("a\u{0}b", 5).is_err());
    }

    #[test]
    fn quotes_are_short() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "x".repeat(100_000);
        assert!(quote(&long).len() < 50);
        assert!(Decimal::parse(&long).unwrap_err().len() < 120);
        assert!(currency_code(&long).unwrap_err().len() < 120);
        assert!(identifier("a\0b", 64).is_err());
        assert!(identifier(&"a".repeat(65), 64).is_err());
    }

    #[test]
    fn currency_codes() {
        assert_eq!(currency_code("EUR").unwrap(), "EUR");
        for bad in ["", "eur", "EURO", "E1R", "ÉUR"] {
            assert!(currency_code(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
