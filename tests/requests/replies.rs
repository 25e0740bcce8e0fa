//! How a request id's reply is stored (src/store/stored.rs): the bytes of
//! the response the first call sent (version 2), so that a retry gets
//! exactly those; and records written before replies were bytes (version
//! 1, the case as JSON) still answer their retries.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::{
    QueryableByName,
    sql_types::{Bytea, Jsonb, Nullable, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use invoice_cases::pb;
use prost::Message;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

#[derive(QueryableByName)]
struct StoredReply {
    #[diesel(sql_type = Nullable<Bytea>)]
    reply: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response: Option<Value>,
}

async fn stored_reply(conn: &mut AsyncPgConnection, request_id: Uuid) -> StoredReply {
    diesel::sql_query("SELECT reply, response FROM idempotency_records WHERE request_id = $1")
        .bind::<SqlUuid, _>(request_id)
        .get_result(conn)
        .await
        .expect("the record of the request id")
}

fn submit_with(case_id: &str, request_id: Uuid) -> pb::SubmitCaseRequest {
    pb::SubmitCaseRequest {
        case_id: case_id.to_owned(),
        request_id: request_id.to_string(),
        comment: "first try".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_retry_answers_with_the_stored_bytes_of_the_first_response() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .expect("connect");
    let draft = create(&mut admin, "ACME", 2).await;
    let rid = Uuid::new_v4();

    let first = ok(admin.submit_case(submit_with(&draft.id, rid)).await);
    let stored = stored_reply(&mut conn, rid).await;
    assert!(
        stored.response.is_none(),
        "no JSON form is written any more"
    );
    let bytes = stored.reply.expect("the reply's bytes");
    assert_eq!(bytes, first.encode_to_vec(), "the response as it was sent");

    // The retry sends what is stored, not the case made into a response
    // again: alter the stored bytes and the retry says what they say.
    let mut altered = first.clone();
    altered.description = "as stored".into();
    diesel::sql_query("UPDATE idempotency_records SET reply = $1 WHERE request_id = $2")
        .bind::<Bytea, _>(altered.encode_to_vec())
        .bind::<SqlUuid, _>(rid)
        .execute(&mut conn)
        .await
        .expect("alter the stored reply");
    let again = ok(admin.submit_case(submit_with(&draft.id, rid)).await);
    assert_eq!(again, altered);
    assert_eq!(get(&mut admin, &draft.id).await, first, "nothing changed");
}

#[tokio::test]
async fn replies_stored_as_json_by_earlier_versions_still_answer_retries() {
    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let mut conn = AsyncPgConnection::establish(&app.database_url)
        .await
        .expect("connect");
    let draft = create(&mut admin, "ACME", 2).await;
    let rid = Uuid::new_v4();
    let first = ok(admin.submit_case(submit_with(&draft.id, rid)).await);
    let line = ok(admin
        .add_case_line(pb::AddCaseLineRequest {
            case_id: draft.id.clone(),
            line: Some(line("a third line")),
            ..Default::default()
        })
        .await);

    // The record as a version that wrote replies as JSON left it.
    diesel::sql_query(
        "UPDATE idempotency_records SET reply = NULL, response = $1 WHERE request_id = $2",
    )
    .bind::<Jsonb, _>(version_1_form(&first))
    .bind::<SqlUuid, _>(rid)
    .execute(&mut conn)
    .await
    .expect("rewrite the record in version 1");

    let again = ok(admin.submit_case(submit_with(&draft.id, rid)).await);
    assert_eq!(again, first, "the first response, from its version 1 form");
    assert_eq!(get(&mut admin, &draft.id).await, line, "nothing changed");

    // A record in neither form is corrupt: INTERNAL, never a guess.
    diesel::sql_query(
        "UPDATE idempotency_records SET reply = NULL, response = NULL WHERE request_id = $1",
    )
    .bind::<SqlUuid, _>(rid)
    .execute(&mut conn)
    .await
    .expect("empty the record");
    let error = admin
        .submit_case(submit_with(&draft.id, rid))
        .await
        .expect_err("a record without a reply");
    assert_eq!(error.code(), tonic::Code::Internal);
    assert_eq!(get(&mut admin, &draft.id).await, line, "nothing changed");
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> Value {
    match timestamp {
        None => Value::Null,
        Some(t) => {
            let time = DateTime::<Utc>::from_timestamp(t.seconds, t.nanos as u32).expect("a time");
            json!(time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
    }
}

fn text(value: &str) -> Value {
    if value.is_empty() {
        Value::Null
    } else {
        json!(value)
    }
}

fn named(value: &str) -> Value {
    match value {
        "RESOLUTION_CODE_UNSPECIFIED" => Value::Null,
        name => json!(name),
    }
}

/// The JSON form of a case that version 1 stored (serde's form of the
/// domain's case: snake_case fields, priority by its variant name).
fn version_1_form(case: &pb::InvoiceCase) -> Value {
    let priority = match case.priority() {
        pb::invoice_case::Priority::Critical => "Critical",
        pb::invoice_case::Priority::High => "High",
        pb::invoice_case::Priority::Moderate => "Moderate",
        pb::invoice_case::Priority::Low | pb::invoice_case::Priority::Unspecified => "Low",
    };
    let lines: Vec<Value> = case
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            json!({
                "id": line.id,
                "number": line.number,
                "position": i + 1,
                "state": line.state().as_str_name(),
                "dispute_code": line.dispute_code().as_str_name(),
                "invoice_line_ref": text(&line.invoice_line_ref),
                "invoice_number": text(&line.invoice_number),
                "short_description": line.short_description,
                "invoiced_amount": line.invoiced_amount,
                "disputed_amount": line.disputed_amount,
                "approved_amount": line.approved_amount,
                "invoiced_quantity": line.invoiced_quantity,
                "disputed_quantity": line.disputed_quantity,
                "resolution_code": named(line.resolution_code().as_str_name()),
                "resolution_notes": text(&line.resolution_notes),
                "create_time": time(line.create_time.as_ref()),
                "update_time": time(line.update_time.as_ref()),
            })
        })
        .collect();
    json!({
        "id": case.id,
        "number": case.number,
        "state": case.state().as_str_name(),
        "account_id": case.account_id,
        "contact_id": text(&case.contact_id),
        "invoice_number": text(&case.invoice_number),
        "request_source": case.request_source().as_str_name(),
        "short_description": case.short_description,
        "description": text(&case.description),
        "priority": priority,
        "currency_code": case.currency_code,
        "assigned_to": text(&case.assigned_to),
        "opened_by": case.opened_by,
        "resolution_code": named(case.resolution_code().as_str_name()),
        "resolution_notes": text(&case.resolution_notes),
        "create_time": time(case.create_time.as_ref()),
        "update_time": time(case.update_time.as_ref()),
        "submit_time": time(case.submit_time.as_ref()),
        "resolve_time": time(case.resolve_time.as_ref()),
        "close_time": time(case.close_time.as_ref()),
        "revision": case.etag.parse::<i64>().expect("a numeric etag"),
        "lines": lines,
    })
}
