//! A black-holed database: the network between the service and PostgreSQL
//! stops carrying bytes (no reset, no refusal — packets just vanish). Calls
//! must still end within their deadline with UNAVAILABLE, health must go
//! NOT_SERVING, and the service must recover by itself when the network
//! comes back.
//!
//! A TCP proxy of the test's own sits between the server and PostgreSQL;
//! its switch stops forwarding in both directions while every socket stays
//! open, and new connections are still accepted (and black-holed too).

use std::{net::SocketAddr, time::Duration};

use invoice_cases::pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
    time::Instant,
};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::{binary::health, helpers::*};

/// A TCP proxy to `upstream` whose forwarding can be switched off.
struct Proxy {
    addr: SocketAddr,
    forwarding: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (forwarding, switch) = watch::channel(true);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let switch = switch.clone();
                tokio::spawn(async move {
                    // Connecting upstream waits while black-holed: the
                    // client's connect succeeded, its startup goes nowhere.
                    wait_forwarding(&mut switch.clone()).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(pump(client_read, server_write, switch.clone()));
                    let down = tokio::spawn(pump(server_read, client_write, switch));
                    let _ = futures::future::join(up, down).await;
                });
            }
        });
        Proxy {
            addr,
            forwarding,
            accept,
        }
    }

    /// Stops (false) or resumes (true) forwarding, on every connection.
    fn forward(&self, on: bool) {
        self.forwarding.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn wait_forwarding(switch: &mut watch::Receiver<bool>) {
    let _ = switch.wait_for(|on| *on).await;
}

/// Copies `from` to `to`, holding the bytes (neither reading nor writing)
/// while the switch is off. Ends when either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut switch: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_forwarding(&mut switch).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read just as the switch went off are held, not forwarded.
        wait_forwarding(&mut switch).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The host and port of a `postgres://` URL.
fn upstream_of(database_url: &str) -> SocketAddr {
    let authority = database_url
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split('/').next())
        .expect("a URL with a host");
    let host_port = authority.rsplit('@').next().expect("host");
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().expect("host:port of the test cluster")
}

/// The URL with its host and port replaced by `addr`.
fn through(database_url: &str, upstream: SocketAddr, addr: SocketAddr) -> String {
    let url = database_url.replacen(&upstream.to_string(), &addr.to_string(), 1);
    if url != database_url {
        return url;
    }
    database_url.replacen(
        &format!("localhost:{}", upstream.port()),
        &addr.to_string(),
        1,
    )
}

fn with_deadline<T>(message: T, deadline: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    request
}

/// ListStateChanges (which first finds the case) with a 3 s client
/// deadline: the code and the time taken.
async fn timed_history(client: &mut Client, case_id: &str) -> (Code, Duration) {
    let started = Instant::now();
    let call = client.list_state_changes(with_deadline(
        pb::ListStateChangesRequest {
            case_id: case_id.to_owned(),
            ..Default::default()
        },
        Duration::from_secs(3),
    ));
    let code = match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => panic!("ListStateChanges with a 3 s deadline did not end within 10 s"),
    };
    (code, started.elapsed())
}

/// GetInvoiceCase with a 3 s client deadline (and a test-side bound of 10
/// s, so that a hanging server fails the test rather than hanging it):
/// the code and the time taken.
async fn timed_get(client: &mut Client, case_id: &str) -> (Code, Duration) {
    let started = Instant::now();
    let call = client.get_invoice_case(with_deadline(
        pb::GetInvoiceCaseRequest {
            case_id: case_id.to_owned(),
        },
        Duration::from_secs(3),
    ));
    let code = match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => panic!("GetInvoiceCase with a 3 s deadline did not end within 10 s"),
    };
    (code, started.elapsed())
}

/// Polls health until it says `wanted`; returns how long it took.
async fn wait_health(addr: SocketAddr, wanted: ServingStatus, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if health(addr).await == Some(wanted) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "health did not say {wanted:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_fails_calls_within_their_deadline_and_recovers() {
    let database_url = cluster().new_database();
    let upstream = upstream_of(&database_url);
    let proxy = Proxy::start(upstream).await;
    let proxied = through(&database_url, upstream, proxy.addr);
    assert_ne!(proxied, *database_url, "the URL goes through the proxy");
    let secret = format!("test-secret-{}", Uuid::new_v4().simple());
    let mut settings = settings(&proxied, &secret);
    // As in production: health checks the database every 2 s.
    settings.health_interval = Duration::from_secs(2);
    let mut app = spawn_app_with(settings, secret).await;
    let mut admin = app.admin().await;
    let case = create(&mut admin, "ACME", 1).await;
    assert_eq!(get(&mut admin, &case.id).await, case);
    let (code, _) = timed_get(&mut admin, &case.id).await;
    assert_eq!(code, Code::Ok, "a call through the proxy");

    proxy.forward(false);
    let black_holed = Instant::now();
    eprintln!("black hole on");
    // Health is polled from now on, while the calls run.
    let addr = app.addr;
    let health_poll = tokio::spawn(async move {
        loop {
            if health(addr).await == Some(ServingStatus::NotServing) {
                return Some(black_holed.elapsed());
            }
            if black_holed.elapsed() > Duration::from_secs(15) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(timed_get(&mut admin, &case.id).await);
    }
    during.push(timed_history(&mut admin, &case.id).await);
    // A client that connects during the black hole.
    let mut late = app.admin().await;
    during.push(timed_get(&mut late, &case.id).await);
    let not_serving = health_poll.await.expect("health poll");
    eprintln!("calls while black-holed (3 s deadline): {during:?}");
    eprintln!("health NOT_SERVING after {not_serving:?}");
    let wrong: Vec<_> = during
        .iter()
        .filter(|(code, took)| *code != Code::Unavailable || *took > Duration::from_secs(4))
        .collect();
    assert!(
        wrong.is_empty(),
        "calls to a black-holed database must end with UNAVAILABLE within ~4 s: {during:?}"
    );
    let not_serving = not_serving.expect("health never said NOT_SERVING within 15 s");
    assert!(
        not_serving <= Duration::from_secs(15),
        "NOT_SERVING after {not_serving:?}"
    );

    proxy.forward(true);
    let restored = Instant::now();
    eprintln!("black hole off");
    let serving = wait_health(app.addr, ServingStatus::Serving, Duration::from_secs(20)).await;
    eprintln!("health SERVING {serving:?} after the network came back");
    // Calls succeed again (within a bound), without a restart.
    let mut after = Vec::new();
    loop {
        let (code, took) = timed_get(&mut admin, &case.id).await;
        after.push((code, took));
        if code == Code::Ok {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(30),
            "calls did not succeed again within 30 s: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("calls after the network came back: {after:?}");
    let (code, _) = timed_get(&mut late, &case.id).await;
    assert_eq!(code, Code::Ok, "the late client is served too");
    let submitted = ok(admin.submit_case(submit(&case.id)).await);
    assert_eq!(submitted.state(), pb::invoice_case::State::New);
    app.stop().await;
}
