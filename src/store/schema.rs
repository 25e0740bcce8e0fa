//! Diesel's view of the tables in `migrations/`.
//!
//! `case_events.txid` (xid8, which diesel has no type for) is left out: the
//! database fills it in, and the watch reader selects it with SQL of its own.

diesel::table! {
    invoice_cases (id) {
        id -> Uuid,
        number -> Text,
        state -> Text,
        account_id -> Text,
        contact_id -> Nullable<Text>,
        invoice_number -> Nullable<Text>,
        request_source -> Text,
        short_description -> Text,
        description -> Nullable<Text>,
        priority -> SmallInt,
        currency_code -> Text,
        assigned_to -> Nullable<Text>,
        opened_by -> Text,
        resolution_code -> Nullable<Text>,
        resolution_notes -> Nullable<Text>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        submit_time -> Nullable<Timestamptz>,
        resolve_time -> Nullable<Timestamptz>,
        close_time -> Nullable<Timestamptz>,
        revision -> BigInt,
        assignment_group -> Nullable<Text>,
    }
}

diesel::table! {
    case_lines (id) {
        id -> Uuid,
        case_id -> Uuid,
        position -> Integer,
        number -> Text,
        state -> Text,
        dispute_code -> Text,
        invoice_line_ref -> Nullable<Text>,
        invoice_number -> Nullable<Text>,
        short_description -> Text,
        invoiced_amount -> Numeric,
        disputed_amount -> Numeric,
        approved_amount -> Nullable<Numeric>,
        invoiced_quantity -> Nullable<Numeric>,
        disputed_quantity -> Nullable<Numeric>,
        resolution_code -> Nullable<Text>,
        resolution_notes -> Nullable<Text>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    case_events (id) {
        id -> BigInt,
        case_id -> Uuid,
        case_number -> Text,
        account_id -> Text,
        action -> Text,
        actor -> Text,
        occur_time -> Timestamptz,
        etag -> Text,
        changes -> Jsonb,
        comment -> Nullable<Text>,
        details -> Nullable<Jsonb>,
    }
}

diesel::table! {
    idempotency_records (request_id) {
        request_id -> Uuid,
        actor -> Text,
        method -> Text,
        fingerprint -> Bytea,
        case_id -> Uuid,
        response -> Nullable<Jsonb>,
        create_time -> Timestamptz,
        reply -> Nullable<Bytea>,
    }
}

diesel::joinable!(case_lines -> invoice_cases (case_id));
diesel::joinable!(case_events -> invoice_cases (case_id));
diesel::allow_tables_to_appear_in_same_query!(
    invoice_cases,
    case_lines,
    case_events,
    idempotency_records
);
