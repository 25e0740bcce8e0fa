//! Database errors keep their meaning whatever language the server writes
//! its messages in (`lc_messages`): the service is put behind a proxy that
//! rewrites the text of every error PostgreSQL sends, as a server with
//! another `lc_messages` would, and keeps the rest of the protocol.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use invoice_cases::pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tonic::Code;

use crate::{
    helpers::{cluster, count_rows, create, get, settings, spawn_app_with, submit},
    limits::{RowLock, with_deadline},
};

/// What every error message becomes: no English word of the original.
const TRANSLATED: &str = "Meldung in einer anderen Sprache";

/// Forwards connections to PostgreSQL, replacing the message text (field
/// `M`) of each ErrorResponse and NoticeResponse from the server.
struct TranslatingProxy {
    addr: SocketAddr,
    rewritten: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TranslatingProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let rewritten = Arc::new(AtomicUsize::new(0));
        let count = rewritten.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, count).await;
                    }
                });
            }
        });
        TranslatingProxy {
            addr,
            rewritten,
            task,
        }
    }

    fn rewritten(&self) -> usize {
        self.rewritten.load(Ordering::SeqCst)
    }
}

impl Drop for TranslatingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, server: TcpStream, count: Arc<AtomicUsize>) {
    // No Nagle delay on top of PostgreSQL's own round trips.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // The client's side (startup message included) goes through as is.
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    let down = relay_translated(&mut server_read, &mut client_write, &count);
    // Either side's end ends both, as the end of a direct connection would.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies the server's messages (each a type byte and a length), error
/// and notice texts translated.
async fn relay_translated(
    server: &mut tokio::net::tcp::OwnedReadHalf,
    client: &mut tokio::net::tcp::OwnedWriteHalf,
    count: &AtomicUsize,
) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 5];
        server.read_exact(&mut head).await?;
        let length = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        server.read_exact(&mut body).await?;
        if matches!(head[0], b'E' | b'N') {
            body = translate(&body);
            count.fetch_add(1, Ordering::SeqCst);
            let length = u32::try_from(body.len() + 4).expect("a short message");
            head[1..5].copy_from_slice(&length.to_be_bytes());
        }
        let mut message = head.to_vec();
        message.extend_from_slice(&body);
        client.write_all(&message).await?;
    }
}

/// The fields of an ErrorResponse with `M` replaced: each field is a code
/// byte and a NUL-terminated string; a NUL code ends them.
fn translate(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.push(code);
        if code == b'M' {
            out.extend_from_slice(TRANSLATED.as_bytes());
        } else {
            out.extend_from_slice(&tail[..end]);
        }
        out.push(0);
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    out.push(0);
    out
}

#[tokio::test]
async fn database_errors_in_another_language_keep_their_meaning() {
    let database = cluster().new_database();
    let upstream: SocketAddr = {
        let after_at = database.rsplit_once('@').expect("a URL with credentials").1;
        let host_port = after_at.split_once('/').expect("a URL with a database").0;
        host_port.parse().expect("host:port")
    };
    let proxy = TranslatingProxy::start(upstream).await;
    let proxied_url = database.replace(&upstream.to_string(), &proxy.addr.to_string());
    let secret = format!("locale-secret-{}", uuid::Uuid::new_v4().simple());
    let app = spawn_app_with(settings(&proxied_url, &secret), secret).await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    let before = proxy.rewritten();

    // A statement timeout (the client's deadline runs out while the case's
    // row is locked): DEADLINE_EXCEEDED.
    let lock = RowLock::take(&database, &case.id).await;
    let status = admin
        .submit_case(with_deadline(submit(&case.id), Duration::from_millis(500)))
        .await
        .expect_err("the case row is locked past the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        proxy.rewritten() > before,
        "the timeout's error did not pass the proxy"
    );

    // A connection the server ends while a call waits on it: UNAVAILABLE.
    let mut waiting = admin.clone();
    let id = case.id.clone();
    let call = tokio::spawn(async move { waiting.submit_case(submit(&id)).await });
    let terminated = terminate_waiting_service_backends(&database).await;
    assert!(terminated > 0, "no service statement waited for the lock");
    let status = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("an answer")
        .expect("the task")
        .expect_err("its connection was ended");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    lock.release().await;

    // Nothing changed, and the service goes on.
    assert_eq!(get(&mut admin, &case.id).await, case);
    let submitted = admin
        .submit_case(submit(&case.id))
        .await
        .expect("a submit")
        .into_inner();
    assert_eq!(submitted.state(), pb::invoice_case::State::New);
}

/// Ends (pg_terminate_backend) the service's connections that wait for a
/// lock, once one does; returns how many.
async fn terminate_waiting_service_backends(database_url: &str) -> i64 {
    use diesel_async::{AsyncConnection, AsyncPgConnection};

    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("a raw connection");
    for _ in 0..100 {
        let terminated = count_rows(
            &mut conn,
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'invoice-cases' \
               AND wait_event_type = 'Lock'",
        )
        .await;
        if terminated > 0 {
            return terminated;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    0
}
