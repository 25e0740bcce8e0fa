//! Writing an action: one statement writes the case, its lines, the event
//! and the idempotency record, and commits on its own (or within the
//! call's deadline transaction).
//!
//! Concurrency is optimistic: the case was read without a lock, and the
//! statement changes it only if its revision is still the one read (the
//! caller reads again and decides again when it is not). Before the case row
//! is written — before the transaction has an id — the statement takes the
//! case's advisory lock (the one `lock_for_event` takes) and holds it until
//! commit: two actions on one case then get transaction ids in the order
//! they commit, which is what makes the event log's (txid, id) order commit
//! order for any one case (see `event_log.rs`).

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName,
    sql_types::{
        Array, BigInt, Bool, Bytea, Integer, Jsonb, Nullable, Numeric, SmallInt, Text,
        Timestamptz, Uuid as SqlUuid,
    },
};
use uuid::Uuid;

use super::{StoreError, idempotency::Idempotency};
use crate::domain::{Case, Decision, Line};

/// The lines a decision added, as column arrays.
macro_rules! insert_lines {
    () => {
        "added AS ( \
             INSERT INTO case_lines (id, case_id, position, number, state, dispute_code, \
                 invoice_line_ref, invoice_number, short_description, invoiced_amount, \
                 disputed_amount, invoiced_quantity, disputed_quantity, create_time, update_time) \
             SELECT a.id, c.id, a.position, a.number, a.state, a.dispute_code, \
                 a.invoice_line_ref, a.invoice_number, a.short_description, a.invoiced_amount, \
                 a.disputed_amount, a.invoiced_quantity, a.disputed_quantity, $now, $now \
             FROM c, unnest($add_id::uuid[], $add_position::integer[], $add_number::text[], \
                 $add_state::text[], $add_dispute_code::text[], $add_invoice_line_ref::text[], \
                 $add_invoice_number::text[], $add_short_description::text[], \
                 $add_invoiced_amount::numeric[], $add_disputed_amount::numeric[], \
                 $add_invoiced_quantity::numeric[], $add_disputed_quantity::numeric[]) \
                 AS a(id, position, number, state, dispute_code, invoice_line_ref, \
                      invoice_number, short_description, invoiced_amount, disputed_amount, \
                      invoiced_quantity, disputed_quantity)) "
    };
}

/// The event, the idempotency record and the cross-replica wake-up, and
/// what the statement returns.
macro_rules! record_and_return {
    () => {
        "event AS ( \
             INSERT INTO case_events (case_id, case_number, account_id, action, actor, \
                 occur_time, etag, changes, comment) \
             SELECT c.id, $case_number, $account_id, $action, $actor, $now, $etag, \
                 $changes, $comment FROM c), \
         reply AS ( \
             INSERT INTO idempotency_records (request_id, actor, method, fingerprint, case_id, \
                 response) \
             SELECT $request_id, $actor, $method, $fingerprint, c.id, $response \
             FROM c WHERE $request_id::uuid IS NOT NULL), \
         wake AS ( \
             SELECT pg_notify('invoice_case_events', '') FROM c WHERE $notify) \
         SELECT (SELECT count(*) FROM c) AS written, (SELECT count(*) FROM wake) AS woken"
    };
}

statement! {
    /// Creates a case with its lines, its event and its idempotency record.
    pub(super) struct InsertCase<'a> {
        id: SqlUuid = Uuid,
        number: Text = &'a str,
        state: Text = &'a str,
        account_id: Text = &'a str,
        contact_id: Nullable<Text> = Option<&'a str>,
        invoice_number: Nullable<Text> = Option<&'a str>,
        request_source: Text = &'a str,
        short_description: Text = &'a str,
        description: Nullable<Text> = Option<&'a str>,
        priority: SmallInt = i16,
        currency_code: Text = &'a str,
        opened_by: Text = &'a str,
        revision: BigInt = i64,
        now: Timestamptz = DateTime<Utc>,
        add_id: Array<SqlUuid> = Vec<Uuid>,
        add_position: Array<Integer> = Vec<i32>,
        add_number: Array<Text> = Vec<&'a str>,
        add_state: Array<Text> = Vec<&'a str>,
        add_dispute_code: Array<Text> = Vec<&'a str>,
        add_invoice_line_ref: Array<Nullable<Text>> = Vec<Option<&'a str>>,
        add_invoice_number: Array<Nullable<Text>> = Vec<Option<&'a str>>,
        add_short_description: Array<Text> = Vec<&'a str>,
        add_invoiced_amount: Array<Numeric> = Vec<&'a BigDecimal>,
        add_disputed_amount: Array<Numeric> = Vec<&'a BigDecimal>,
        add_invoiced_quantity: Array<Nullable<Numeric>> = Vec<Option<&'a BigDecimal>>,
        add_disputed_quantity: Array<Nullable<Numeric>> = Vec<Option<&'a BigDecimal>>,
        case_number: Text = &'a str,
        action: Text = &'a str,
        actor: Text = &'a str,
        etag: Text = String,
        changes: Jsonb = serde_json::Value,
        comment: Nullable<Text> = Option<&'a str>,
        request_id: Nullable<SqlUuid> = Option<Uuid>,
        method: Text = &'a str,
        fingerprint: Nullable<Bytea> = Option<&'a [u8]>,
        response: Nullable<Jsonb> = Option<serde_json::Value>,
        notify: Bool = bool,
    }
    concat!(
        "WITH c AS ( \
             INSERT INTO invoice_cases (id, number, state, account_id, contact_id, \
                 invoice_number, request_source, short_description, description, priority, \
                 currency_code, opened_by, create_time, update_time, revision) \
             VALUES ($id, $number, $state, $account_id, $contact_id, $invoice_number, \
                 $request_source, $short_description, $description, $priority, \
                 $currency_code, $opened_by, $now, $now, $revision) \
             RETURNING id), ",
        insert_lines!(), ", ",
        record_and_return!()
    )
}

statement! {
    /// Writes a decision on an existing case if the case is still at
    /// `expected_revision`: the case, its added, removed and changed lines,
    /// the event and the idempotency record.
    pub(super) struct UpdateCase<'a> {
        id: SqlUuid = Uuid,
        expected_revision: BigInt = i64,
        state: Text = &'a str,
        contact_id: Nullable<Text> = Option<&'a str>,
        invoice_number: Nullable<Text> = Option<&'a str>,
        short_description: Text = &'a str,
        description: Nullable<Text> = Option<&'a str>,
        priority: SmallInt = i16,
        assigned_to: Nullable<Text> = Option<&'a str>,
        resolution_code: Nullable<Text> = Option<&'a str>,
        resolution_notes: Nullable<Text> = Option<&'a str>,
        submit_time: Nullable<Timestamptz> = Option<DateTime<Utc>>,
        resolve_time: Nullable<Timestamptz> = Option<DateTime<Utc>>,
        close_time: Nullable<Timestamptz> = Option<DateTime<Utc>>,
        revision: BigInt = i64,
        now: Timestamptz = DateTime<Utc>,
        remove_id: Array<SqlUuid> = Vec<Uuid>,
        add_id: Array<SqlUuid> = Vec<Uuid>,
        add_position: Array<Integer> = Vec<i32>,
        add_number: Array<Text> = Vec<&'a str>,
        add_state: Array<Text> = Vec<&'a str>,
        add_dispute_code: Array<Text> = Vec<&'a str>,
        add_invoice_line_ref: Array<Nullable<Text>> = Vec<Option<&'a str>>,
        add_invoice_number: Array<Nullable<Text>> = Vec<Option<&'a str>>,
        add_short_description: Array<Text> = Vec<&'a str>,
        add_invoiced_amount: Array<Numeric> = Vec<&'a BigDecimal>,
        add_disputed_amount: Array<Numeric> = Vec<&'a BigDecimal>,
        add_invoiced_quantity: Array<Nullable<Numeric>> = Vec<Option<&'a BigDecimal>>,
        add_disputed_quantity: Array<Nullable<Numeric>> = Vec<Option<&'a BigDecimal>>,
        set_id: Array<SqlUuid> = Vec<Uuid>,
        set_state: Array<Text> = Vec<&'a str>,
        set_dispute_code: Array<Text> = Vec<&'a str>,
        set_invoice_line_ref: Array<Nullable<Text>> = Vec<Option<&'a str>>,
        set_invoice_number: Array<Nullable<Text>> = Vec<Option<&'a str>>,
        set_short_description: Array<Text> = Vec<&'a str>,
        set_invoiced_amount: Array<Numeric> = Vec<&'a BigDecimal>,
        set_disputed_amount: Array<Numeric> = Vec<&'a BigDecimal>,
        set_approved_amount: Array<Nullable<Numeric>> = Vec<Option<&'a BigDecimal>>,
        set_invoiced_quantity: Array<Nullable<Numeric>> = Vec<Option<&'a BigDecimal>>,
        set_disputed_quantity: Array<Nullable<Numeric>> = Vec<Option<&'a BigDecimal>>,
        set_resolution_code: Array<Nullable<Text>> = Vec<Option<&'a str>>,
        set_resolution_notes: Array<Nullable<Text>> = Vec<Option<&'a str>>,
        case_number: Text = &'a str,
        account_id: Text = &'a str,
        action: Text = &'a str,
        actor: Text = &'a str,
        etag: Text = String,
        changes: Jsonb = serde_json::Value,
        comment: Nullable<Text> = Option<&'a str>,
        request_id: Nullable<SqlUuid> = Option<Uuid>,
        method: Text = &'a str,
        fingerprint: Nullable<Bytea> = Option<&'a [u8]>,
        response: Nullable<Jsonb> = Option<serde_json::Value>,
        notify: Bool = bool,
    }
    concat!(
        "WITH case_lock AS MATERIALIZED ( \
             SELECT pg_advisory_xact_lock(470441472, hashtext($id::text)) AS taken), \
         c AS ( \
             UPDATE invoice_cases SET state = $state, contact_id = $contact_id, \
                 invoice_number = $invoice_number, short_description = $short_description, \
                 description = $description, priority = $priority, assigned_to = $assigned_to, \
                 resolution_code = $resolution_code, resolution_notes = $resolution_notes, \
                 update_time = $now, submit_time = $submit_time, resolve_time = $resolve_time, \
                 close_time = $close_time, revision = $revision \
             FROM case_lock \
             WHERE invoice_cases.id = $id AND invoice_cases.revision = $expected_revision \
             RETURNING invoice_cases.id), \
         removed AS ( \
             DELETE FROM case_lines l USING c \
             WHERE l.case_id = c.id AND l.id = ANY($remove_id::uuid[])), ",
        insert_lines!(), ", \
         changed AS ( \
             UPDATE case_lines l SET state = s.state, dispute_code = s.dispute_code, \
                 invoice_line_ref = s.invoice_line_ref, invoice_number = s.invoice_number, \
                 short_description = s.short_description, invoiced_amount = s.invoiced_amount, \
                 disputed_amount = s.disputed_amount, approved_amount = s.approved_amount, \
                 invoiced_quantity = s.invoiced_quantity, disputed_quantity = s.disputed_quantity, \
                 resolution_code = s.resolution_code, resolution_notes = s.resolution_notes, \
                 update_time = $now \
             FROM c, unnest($set_id::uuid[], $set_state::text[], $set_dispute_code::text[], \
                 $set_invoice_line_ref::text[], $set_invoice_number::text[], \
                 $set_short_description::text[], $set_invoiced_amount::numeric[], \
                 $set_disputed_amount::numeric[], $set_approved_amount::numeric[], \
                 $set_invoiced_quantity::numeric[], $set_disputed_quantity::numeric[], \
                 $set_resolution_code::text[], $set_resolution_notes::text[]) \
                 AS s(id, state, dispute_code, invoice_line_ref, invoice_number, \
                      short_description, invoiced_amount, disputed_amount, approved_amount, \
                      invoiced_quantity, disputed_quantity, resolution_code, resolution_notes) \
             WHERE l.id = s.id AND l.case_id = c.id), ",
        record_and_return!()
    )
}

/// What a write statement reports.
#[derive(QueryableByName)]
pub(super) struct Written {
    /// 1 when the case was written; 0 when its revision had moved on.
    #[diesel(sql_type = BigInt)]
    pub written: i64,
    /// 1 when other replicas were notified.
    #[diesel(sql_type = BigInt)]
    #[allow(dead_code)]
    pub woken: i64,
}

/// The columns of the lines a decision added.
struct Added<'a> {
    id: Vec<Uuid>,
    position: Vec<i32>,
    number: Vec<&'a str>,
    state: Vec<&'a str>,
    dispute_code: Vec<&'a str>,
    invoice_line_ref: Vec<Option<&'a str>>,
    invoice_number: Vec<Option<&'a str>>,
    short_description: Vec<&'a str>,
    invoiced_amount: Vec<&'a BigDecimal>,
    disputed_amount: Vec<&'a BigDecimal>,
    invoiced_quantity: Vec<Option<&'a BigDecimal>>,
    disputed_quantity: Vec<Option<&'a BigDecimal>>,
}

impl<'a> Added<'a> {
    fn of(lines: impl Iterator<Item = &'a Line>) -> Self {
        let lines: Vec<&Line> = lines.collect();
        Added {
            id: lines.iter().map(|l| l.id).collect(),
            position: lines.iter().map(|l| l.position).collect(),
            number: lines.iter().map(|l| l.number.as_str()).collect(),
            state: lines.iter().map(|l| l.state.as_str()).collect(),
            dispute_code: lines.iter().map(|l| l.dispute_code.as_str()).collect(),
            invoice_line_ref: lines.iter().map(|l| l.invoice_line_ref.as_deref()).collect(),
            invoice_number: lines.iter().map(|l| l.invoice_number.as_deref()).collect(),
            short_description: lines.iter().map(|l| l.short_description.as_str()).collect(),
            invoiced_amount: lines
                .iter()
                .map(|l| l.invoiced_amount.as_big_decimal())
                .collect(),
            disputed_amount: lines
                .iter()
                .map(|l| l.disputed_amount.as_big_decimal())
                .collect(),
            invoiced_quantity: lines
                .iter()
                .map(|l| l.invoiced_quantity.as_ref().map(|d| d.as_big_decimal()))
                .collect(),
            disputed_quantity: lines
                .iter()
                .map(|l| l.disputed_quantity.as_ref().map(|d| d.as_big_decimal()))
                .collect(),
        }
    }
}

/// The event and the idempotency record of a decision.
pub(super) struct Record<'a> {
    pub actor: &'a str,
    pub comment: Option<&'a str>,
    pub idempotency: Option<&'a Idempotency>,
    /// Notify other replicas' watch readers.
    pub notify: bool,
}

fn changes(decision: &Decision) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(&decision.changes)
        .map_err(|e| StoreError::Corrupt(format!("event changes: {e}")))
}

fn response(record: &Record<'_>, case: &Case) -> Result<Option<serde_json::Value>, StoreError> {
    record
        .idempotency
        .map(|_| serde_json::to_value(case))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("response: {e}")))
}

impl<'a> InsertCase<'a> {
    /// The statement that writes a create decision.
    pub fn new(decision: &'a Decision, record: &Record<'a>) -> Result<Self, StoreError> {
        let case = &decision.case;
        let added = Added::of(case.lines.iter());
        Ok(InsertCase {
            id: case.id,
            number: &case.number,
            state: case.state.as_str(),
            account_id: &case.account_id,
            contact_id: case.contact_id.as_deref(),
            invoice_number: case.invoice_number.as_deref(),
            request_source: case.request_source.as_str(),
            short_description: &case.short_description,
            description: case.description.as_deref(),
            priority: case.priority.level(),
            currency_code: &case.currency_code,
            opened_by: &case.opened_by,
            revision: case.revision,
            now: case.update_time,
            add_id: added.id,
            add_position: added.position,
            add_number: added.number,
            add_state: added.state,
            add_dispute_code: added.dispute_code,
            add_invoice_line_ref: added.invoice_line_ref,
            add_invoice_number: added.invoice_number,
            add_short_description: added.short_description,
            add_invoiced_amount: added.invoiced_amount,
            add_disputed_amount: added.disputed_amount,
            add_invoiced_quantity: added.invoiced_quantity,
            add_disputed_quantity: added.disputed_quantity,
            case_number: &case.number,
            action: decision.action.as_str(),
            actor: record.actor,
            etag: case.etag(),
            changes: changes(decision)?,
            comment: record.comment,
            request_id: record.idempotency.map(|key| key.request_id),
            method: record.idempotency.map_or("", |key| key.method),
            fingerprint: record.idempotency.map(|key| key.fingerprint.as_slice()),
            response: response(record, case)?,
            notify: record.notify,
        })
    }
}

impl<'a> UpdateCase<'a> {
    /// The statement that writes `decision`, taken on the case at
    /// `expected_revision`.
    pub fn new(
        decision: &'a Decision,
        expected_revision: i64,
        record: &Record<'a>,
    ) -> Result<Self, StoreError> {
        let case = &decision.case;
        let added = Added::of(
            case.lines
                .iter()
                .filter(|line| decision.added_lines.contains(&line.id)),
        );
        let set: Vec<&Line> = case
            .lines
            .iter()
            .filter(|line| decision.updated_lines.contains(&line.id))
            .collect();
        let big = |d: &'a crate::domain::Decimal| d.as_big_decimal();
        Ok(UpdateCase {
            id: case.id,
            expected_revision,
            state: case.state.as_str(),
            contact_id: case.contact_id.as_deref(),
            invoice_number: case.invoice_number.as_deref(),
            short_description: &case.short_description,
            description: case.description.as_deref(),
            priority: case.priority.level(),
            assigned_to: case.assigned_to.as_deref(),
            resolution_code: case.resolution_code.map(|c| c.as_str()),
            resolution_notes: case.resolution_notes.as_deref(),
            submit_time: case.submit_time,
            resolve_time: case.resolve_time,
            close_time: case.close_time,
            revision: case.revision,
            now: case.update_time,
            remove_id: decision.removed_lines.clone(),
            add_id: added.id,
            add_position: added.position,
            add_number: added.number,
            add_state: added.state,
            add_dispute_code: added.dispute_code,
            add_invoice_line_ref: added.invoice_line_ref,
            add_invoice_number: added.invoice_number,
            add_short_description: added.short_description,
            add_invoiced_amount: added.invoiced_amount,
            add_disputed_amount: added.disputed_amount,
            add_invoiced_quantity: added.invoiced_quantity,
            add_disputed_quantity: added.disputed_quantity,
            set_id: set.iter().map(|l| l.id).collect(),
            set_state: set.iter().map(|l| l.state.as_str()).collect(),
            set_dispute_code: set.iter().map(|l| l.dispute_code.as_str()).collect(),
            set_invoice_line_ref: set.iter().map(|l| l.invoice_line_ref.as_deref()).collect(),
            set_invoice_number: set.iter().map(|l| l.invoice_number.as_deref()).collect(),
            set_short_description: set.iter().map(|l| l.short_description.as_str()).collect(),
            set_invoiced_amount: set.iter().map(|l| big(&l.invoiced_amount)).collect(),
            set_disputed_amount: set.iter().map(|l| big(&l.disputed_amount)).collect(),
            set_approved_amount: set
                .iter()
                .map(|l| l.approved_amount.as_ref().map(big))
                .collect(),
            set_invoiced_quantity: set
                .iter()
                .map(|l| l.invoiced_quantity.as_ref().map(big))
                .collect(),
            set_disputed_quantity: set
                .iter()
                .map(|l| l.disputed_quantity.as_ref().map(big))
                .collect(),
            set_resolution_code: set
                .iter()
                .map(|l| l.resolution_code.map(|c| c.as_str()))
                .collect(),
            set_resolution_notes: set
                .iter()
                .map(|l| l.resolution_notes.as_deref())
                .collect(),
            case_number: &case.number,
            account_id: &case.account_id,
            action: decision.action.as_str(),
            actor: record.actor,
            etag: case.etag(),
            changes: changes(decision)?,
            comment: record.comment,
            request_id: record.idempotency.map(|key| key.request_id),
            method: record.idempotency.map_or("", |key| key.method),
            fingerprint: record.idempotency.map(|key| key.fingerprint.as_slice()),
            response: response(record, case)?,
            notify: record.notify,
        })
    }
}
