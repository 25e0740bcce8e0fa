//! Statements whose SQL text never changes, so that every connection
//! prepares each once and reuses it (diesel-async caches a prepared
//! statement by the query's type only when the type says its SQL is fixed:
//! `sql_query`, boxed queries and `eq_any` lists never are).
//!
//! [`statement!`] declares one: a struct of bind values and an SQL text
//! whose placeholders name the fields (`$case_id`). A placeholder may appear
//! more than once; every appearance is sent as a bind of its own.

use diesel::{QueryResult, pg::Pg, query_builder::AstPass};

/// Pushes `sql` to `out`, calling `bind` for every `$name` placeholder in
/// order.
pub(super) fn walk<'b>(
    sql: &'static str,
    out: &mut AstPass<'_, 'b, Pg>,
    mut bind: impl FnMut(&str, AstPass<'_, 'b, Pg>) -> QueryResult<()>,
) -> QueryResult<()> {
    let bytes = sql.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
        if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_lowercase()) {
            out.push_sql(&sql[start..i]);
            let mut end = i + 1;
            while end < bytes.len() && is_name(bytes[end]) {
                end += 1;
            }
            bind(&sql[i + 1..end], out.reborrow())?;
            start = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.push_sql(&sql[start..]);
    Ok(())
}

/// The error of a placeholder no field answers (a bug in a statement).
pub(super) fn unknown_placeholder(name: &str) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(format!("no bind value for ${name}").into())
}

/// Declares a statement with a fixed SQL text: a struct whose fields are
/// the bind values, each with its SQL type.
///
/// ```ignore
/// statement! {
///     /// Doc.
///     pub(super) struct FindCase<'a> {
///         number: Text = &'a str,
///     }
///     "SELECT id FROM invoice_cases WHERE number = $number"
/// }
/// ```
macro_rules! statement {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($field:ident: $sql:ty = $rust:ty),* $(,)?
        }
        $text:expr
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(pub $field: $rust,)*
        }

        impl diesel::query_builder::QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl diesel::query_builder::Query for $name {
            type SqlType = diesel::sql_types::Untyped;
        }

        impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for $name {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
            ) -> diesel::QueryResult<()> {
                $crate::store::statement::walk($text, &mut out, |name, mut out| {
                    let _ = &mut out;
                    match name {
                        $(stringify!($field) => out.push_bind_param::<$sql, $rust>(&self.$field),)*
                        other => Err($crate::store::statement::unknown_placeholder(other)),
                    }
                })
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident<$lt:lifetime> {
            $($field:ident: $sql:ty = $rust:ty),* $(,)?
        }
        $text:expr
    ) => {
        $(#[$meta])*
        $vis struct $name<$lt> {
            $(pub $field: $rust,)*
        }

        impl diesel::query_builder::QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl diesel::query_builder::Query for $name<'_> {
            type SqlType = diesel::sql_types::Untyped;
        }

        impl<$lt> diesel::query_builder::QueryFragment<diesel::pg::Pg> for $name<$lt> {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
            ) -> diesel::QueryResult<()> {
                $crate::store::statement::walk($text, &mut out, |name, mut out| {
                    let _ = &mut out;
                    match name {
                        $(stringify!($field) => out.push_bind_param::<$sql, $rust>(&self.$field),)*
                        other => Err($crate::store::statement::unknown_placeholder(other)),
                    }
                })
            }
        }
    };
}

pub(super) use statement;
