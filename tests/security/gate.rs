//! The gate: a call of the service is authenticated from its headers
//! before anything reads its body, and the headers' size is a setting with
//! documented answers.

use http_body_util::{BodyExt, Full};
use prost::bytes::Bytes;
use tonic::{Code, Status, transport::Channel};
use tower::ServiceExt;

use crate::helpers::{spawn_app, violated_fields};

/// Sends one gRPC call by hand: `path`, the headers, and `frame` as the
/// whole body (already framed). Returns the call's status.
async fn raw_call(
    channel: Channel,
    path: &str,
    headers: &[(&str, String)],
    frame: Vec<u8>,
) -> Status {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(tonic::body::Body::new(Full::new(Bytes::from(frame))))
        .expect("a request");
    let response = match channel.oneshot(request).await {
        Ok(response) => response,
        Err(e) => return Status::unavailable(format!("transport: {e}")),
    };
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    if !response.status().is_success() {
        return Status::unknown(format!("HTTP {}", response.status()));
    }
    match response.into_body().collect().await {
        Ok(collected) => collected
            .trailers()
            .and_then(Status::from_header_map)
            .unwrap_or_else(|| Status::unknown("no grpc-status")),
        Err(e) => Status::unknown(format!("body: {e}")),
    }
}

/// A gRPC frame: flag (compressed or not), length, payload.
fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![u8::from(compressed)];
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

const GET: &str = "/invoicecase.v1.InvoiceCaseService/GetInvoiceCase";
const WATCH: &str = "/invoicecase.v1.InvoiceCaseService/WatchStateChanges";

#[tokio::test]
async fn a_call_without_a_valid_token_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    let token = app.token("viewer", &["viewer"], None);
    // Not protobuf; and "compressed" bytes that are not gzip.
    let garbage = frame(false, &[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let bad_gzip = frame(true, b"not gzip at all");
    let gzip = [("grpc-encoding", "gzip".to_owned())];
    for path in [GET, WATCH] {
        for (what, body, headers) in [
            ("garbage", garbage.clone(), &[][..]),
            ("bad gzip", bad_gzip.clone(), &gzip[..]),
        ] {
            // No token, and a token that is not one: UNAUTHENTICATED, not a
            // complaint about the body.
            let mut with_bad_token = headers.to_vec();
            with_bad_token.push(("authorization", "Bearer not-a-token".to_owned()));
            for headers in [headers.to_vec(), with_bad_token] {
                let status = raw_call(app.channel().await, path, &headers, body.clone()).await;
                assert_eq!(
                    status.code(),
                    Code::Unauthenticated,
                    "{path}, {what}: {status:?}"
                );
            }
            // A valid token: now the body is read, and refused.
            let mut authorized = headers.to_vec();
            authorized.push(("authorization", format!("Bearer {token}")));
            let status = raw_call(app.channel().await, path, &authorized, body.clone()).await;
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::Internal | Code::Unimplemented
                ) && status.code() != Code::Unauthenticated,
                "{path}, {what}, with a token: {status:?}"
            );
            if what == "garbage" {
                assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
                assert_eq!(violated_fields(&status), ["(request body)"]);
            }
        }
    }
}

#[tokio::test]
async fn oversized_authorization_headers_get_unauthenticated() {
    let app = spawn_app().await;
    // Up to the header list limit (128 KiB by default) the service reads
    // the header and refuses a token over 8 KiB.
    for kib in [9, 20, 100] {
        let value = format!("Bearer {}", "a".repeat(kib * 1024));
        let status = raw_call(
            app.channel().await,
            GET,
            &[("authorization", value)],
            frame(false, &[]),
        )
        .await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{kib} KiB: {status:?}"
        );
        assert!(status.message().len() < 200, "{kib} KiB: {status:?}");
    }
    // Beyond the limit HTTP/2 refuses the headers itself (431), which gRPC
    // clients see as UNKNOWN; the connection stays usable.
    let channel = app.channel().await;
    let value = format!("Bearer {}", "a".repeat(200 * 1024));
    let status = raw_call(
        channel.clone(),
        GET,
        &[("authorization", value)],
        frame(false, &[]),
    )
    .await;
    assert_eq!(status.code(), Code::Unknown, "200 KiB: {status:?}");
    assert!(status.message().contains("431"), "200 KiB: {status:?}");
    let after = raw_call(channel, GET, &[], frame(false, &[])).await;
    assert_eq!(
        after.code(),
        Code::Unauthenticated,
        "the next call: {after:?}"
    );
}

/// An identifier far longer than any real one is refused as malformed, and
/// no answer repeats more than a short prefix of it.
#[tokio::test]
async fn overlong_identifiers_are_invalid_and_never_echoed_whole() {
    use invoice_cases::pb;

    use crate::helpers::{create, expect_code};

    let app = spawn_app().await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let long_case = format!("INVCS{}", "1".repeat(20_000));
    let long_line = format!("INVCSL{}", "2".repeat(20_000));
    let small = |status: &Status, what: &str| {
        assert!(status.message().len() < 300, "{what}: a long message");
        assert!(status.details().len() < 1024, "{what}: long details");
        assert!(
            !status.message().contains(&"1".repeat(100)),
            "{what}: echoed"
        );
    };
    let status = expect_code(
        admin
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: long_case.clone(),
            })
            .await,
        Code::InvalidArgument,
    );
    small(&status, "get");
    assert_eq!(violated_fields(&status), ["case_id"]);
    let status = expect_code(
        admin
            .submit_case(pb::SubmitCaseRequest {
                case_id: long_case.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    small(&status, "submit");
    let status = expect_code(
        admin
            .set_line_state(pb::SetLineStateRequest {
                case_id: case.id.clone(),
                line_id: long_line.clone(),
                state: pb::case_line::State::Canceled.into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    small(&status, "set line state");
    assert_eq!(violated_fields(&status), ["line_id"]);
    let status = expect_code(
        admin
            .remove_case_line(pb::RemoveCaseLineRequest {
                case_id: case.id.clone(),
                line_id: long_line.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    small(&status, "remove line");
    let status = expect_code(
        admin
            .list_state_changes(pb::ListStateChangesRequest {
                case_id: long_case.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    small(&status, "history");
    let status = admin
        .watch_state_changes(pb::WatchStateChangesRequest {
            case_id: long_case.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a watch of an overlong case id");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    small(&status, "watch");
    // The longest real number is still a number: NOT_FOUND, quoted whole.
    let longest = format!("INVCS{}", "9".repeat(19));
    let status = expect_code(
        admin
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: longest.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert!(status.message().contains(&longest), "{status:?}");
}
