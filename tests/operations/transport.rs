//! Transport: gzip both ways.
//!
//! HTTP/2 keepalive (server.rs: pings every 30 s, 10 s timeout) is not
//! tested: observing it takes over a minute of idle connection. TCP
//! keepalive on accepted sockets is checked by listener.rs's unit test (the
//! socket options of a really accepted connection).

use invoice_cases::pb;
use tonic::codec::CompressionEncoding;

use crate::helpers::*;

#[tokio::test]
async fn a_client_sending_and_accepting_gzip_is_served() {
    let mut app = spawn_app().await;
    let token = app.token("admin", &["admin"], None);
    let mut client = authorized(app.channel().await, &token)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);

    // A large, compressible request and response.
    let created = client
        .create_invoice_case(pb::CreateInvoiceCaseRequest {
            invoice_case: Some(new_case("ACME", 300)),
            request_id: String::new(),
            comment: String::new(),
        })
        .await
        .expect("a gzip-compressed call");
    assert_eq!(
        created
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "the response is gzip-compressed: {:?}",
        created.metadata()
    );
    let case = created.into_inner();
    assert_eq!(case.lines.len(), 300);
    let got = client
        .get_invoice_case(pb::GetInvoiceCaseRequest {
            case_id: case.id.clone(),
        })
        .await
        .expect("get, compressed");
    assert_eq!(got.into_inner().lines.len(), 300);
    let submitted = ok(client.submit_case(submit(&case.id)).await);
    assert_eq!(submitted.state(), pb::invoice_case::State::New);
    // Errors come back through a compressing client as well.
    expect_code(
        client.submit_case(submit(&case.id)).await,
        tonic::Code::FailedPrecondition,
    );
    app.stop().await;
}
