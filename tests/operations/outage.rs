//! A database outage under the running service: calls fail fast with
//! UNAVAILABLE, health goes NOT_SERVING, and everything comes back when
//! PostgreSQL does, without restarting the service.

use std::{path::PathBuf, time::Duration};

use invoice_cases::{embedded::EmbeddedPostgres, pb};
use tokio::time::Instant;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::{
    binary::{Binary, Options, health},
    helpers::*,
};

/// A PostgreSQL cluster of the test's own, killed and removed on drop
/// (a failing test leaves nothing running).
struct OwnCluster {
    postgres: EmbeddedPostgres,
    dir: PathBuf,
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.postgres.kill_blocking();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One call with a 3 s client deadline: (what, result code, time taken).
async fn timed<T>(
    what: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> (&'static str, Code, Duration) {
    let started = Instant::now();
    let code = match tokio::time::timeout(Duration::from_secs(4), call).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => Code::DeadlineExceeded,
    };
    (what, code, started.elapsed())
}

fn deadline<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(Duration::from_secs(3));
    request
}

/// A read, a change and a creation, each under a 3 s deadline.
async fn three_calls(client: &mut Client, case_id: &str) -> Vec<(&'static str, Code, Duration)> {
    vec![
        timed(
            "GetInvoiceCase",
            client.get_invoice_case(deadline(pb::GetInvoiceCaseRequest {
                case_id: case_id.to_owned(),
            })),
        )
        .await,
        timed("SubmitCase", client.submit_case(deadline(submit(case_id)))).await,
        timed(
            "CreateInvoiceCase",
            client.create_invoice_case(deadline(pb::CreateInvoiceCaseRequest {
                invoice_case: Some(new_case("ACME", 1)),
                request_id: String::new(),
                comment: String::new(),
            })),
        )
        .await,
    ]
}

/// Polls health until it says `wanted`; returns how long it took.
async fn wait_health(server: &Binary, wanted: ServingStatus, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if health(server.addr).await == Some(wanted) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "health did not say {wanted:?} within {limit:?}; logs:\n{}",
            server.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_calls_fast_and_the_service_recovers_by_itself() {
    let dir =
        std::env::temp_dir().join(format!("invoice-cases-outage-{}", Uuid::new_v4().simple()));
    let postgres = EmbeddedPostgres::start(&dir, None)
        .await
        .expect("start PostgreSQL");
    let mut cluster = OwnCluster { postgres, dir };
    let mut server = Binary::start(Options::new(&cluster.postgres.database_url())).await;
    let mut admin = server.admin().await;
    let draft = create(&mut admin, "ACME", 1).await;
    get(&mut admin, &draft.id).await;
    let mark = server.log_mark();

    let killed = Instant::now();
    cluster.postgres.kill().await.expect("stop PostgreSQL");
    eprintln!("PostgreSQL killed (pg_ctl stop -m immediate)");
    // Health is polled from the kill on, while the calls run.
    let addr = server.addr;
    let health_poll = tokio::spawn(async move {
        loop {
            if health(addr).await == Some(ServingStatus::NotServing) {
                return Some(killed.elapsed());
            }
            if killed.elapsed() > Duration::from_secs(15) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut outage_calls = three_calls(&mut admin, &draft.id).await;
    let not_serving = health_poll.await.expect("health poll").unwrap_or_else(|| {
        panic!(
            "health never said NOT_SERVING during the outage; logs:\n{}",
            server.logs().join("\n")
        )
    });
    outage_calls.extend(three_calls(&mut admin, &draft.id).await);
    // A client that connects during the outage.
    let mut late = server.admin().await;
    outage_calls.extend(three_calls(&mut late, &draft.id).await);
    let restarting = Instant::now();
    cluster
        .postgres
        .restart()
        .await
        .expect("start PostgreSQL again");
    eprintln!("PostgreSQL started again after {:?} down", killed.elapsed());
    let serving = wait_health(&server, ServingStatus::Serving, Duration::from_secs(20)).await;
    let after = three_calls(&mut admin, &draft.id).await;
    let after_late = three_calls(&mut late, &draft.id).await;
    let recovered = restarting.elapsed();

    eprintln!(
        "---- the server's log lines from the outage to the recovery ----\n{}\n----",
        server.logs_since(mark)
    );
    eprintln!("calls while PostgreSQL was down (3 s client deadline):");
    for (what, code, took) in &outage_calls {
        eprintln!("  {what}: {code:?} in {took:?}");
    }
    eprintln!("health NOT_SERVING {not_serving:?} after the kill");
    eprintln!("health SERVING {serving:?} after PostgreSQL was started again");
    eprintln!("calls after the recovery:");
    for (what, code, took) in after.iter().chain(&after_late) {
        eprintln!("  {what}: {code:?} in {took:?}");
    }
    eprintln!("recovered {recovered:?} after the restart began");

    let slow_or_wrong: Vec<_> = outage_calls
        .iter()
        .filter(|(_, code, took)| *code != Code::Unavailable || *took > Duration::from_secs(2))
        .collect();
    assert!(
        slow_or_wrong.is_empty(),
        "calls during the outage must fail with UNAVAILABLE within 2 s: {slow_or_wrong:?}"
    );
    assert!(
        not_serving <= Duration::from_secs(5),
        "health said NOT_SERVING only {not_serving:?} after the database went away"
    );
    // After the recovery: the draft was submitted by the first call that
    // succeeded; the second SubmitCase then finds a NEW case.
    let expected = [
        ("GetInvoiceCase", Code::Ok),
        ("SubmitCase", Code::Ok),
        ("CreateInvoiceCase", Code::Ok),
        ("GetInvoiceCase", Code::Ok),
        ("SubmitCase", Code::FailedPrecondition),
        ("CreateInvoiceCase", Code::Ok),
    ];
    let got: Vec<(&str, Code)> = after
        .iter()
        .chain(&after_late)
        .map(|(what, code, _)| (*what, *code))
        .collect();
    assert_eq!(
        got, expected,
        "calls once health says SERVING again (no restart of the service)"
    );
    assert_eq!(
        get(&mut admin, &draft.id).await.state(),
        pb::invoice_case::State::New
    );

    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    cluster.postgres.stop().await.expect("stop PostgreSQL");
}
