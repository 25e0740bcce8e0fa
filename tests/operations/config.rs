//! Configuration: every setting documented with its environment variable,
//! invalid settings refused at start, `migrate`, and secrets kept out of
//! the logs.

use std::{collections::BTreeSet, process::Output, time::Duration};

use clap::CommandFactory;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use invoice_cases::{config::Cli, pb};
use tokio::process::Command;
use tonic::{Code, metadata::MetadataValue};

use crate::{
    binary::{BIN, Binary, Options, new_secret, url_password},
    helpers::*,
};

/// Runs the binary with `args` and `env`, without DATABASE_URL or
/// JWT_SECRET from the test's environment unless given.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("JWT_SECRET")
        .env_remove("LOG_FORMAT")
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the binary finishes within 60 s")
        .expect("run the binary")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Collapses whitespace, so that wrapped help text can be searched.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The arguments the user sets (not --help and --version).
fn settings(command: &clap::Command) -> Vec<&clap::Arg> {
    command
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect()
}

#[tokio::test]
async fn every_setting_is_documented_with_its_environment_variable() {
    let cli = Cli::command();
    let subcommands: BTreeSet<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    assert_eq!(
        subcommands,
        BTreeSet::from(["migrate", "serve", "states", "token"]),
        "the subcommands"
    );
    let global = settings(&cli);
    let mut problems = Vec::new();
    for name in ["serve", "migrate", "token"] {
        let sub = cli.find_subcommand(name).expect("subcommand");
        let args: Vec<&clap::Arg> = settings(sub).into_iter().chain(global.clone()).collect();
        // The help the binary prints, with an environment variable set so
        // that hidden values would show if they were not hidden.
        let secret = new_secret();
        let url = format!("postgres://invoice:{secret}-pw@127.0.0.1:1/x");
        let output = run(
            &[name, "--help"],
            &[("JWT_SECRET", &secret), ("DATABASE_URL", &url)],
        )
        .await;
        assert!(output.status.success(), "{name} --help: {}", text(&output));
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        let flat = squeeze(&help);
        assert!(
            !help.contains(&secret),
            "`{name} --help` shows the JWT secret from the environment:\n{help}"
        );
        for arg in &args {
            let id = arg.get_id().as_str();
            let long = arg
                .get_long()
                .unwrap_or_else(|| panic!("{name}: {id} has no --flag"));
            if arg
                .get_help()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                problems.push(format!("{name} --{long}: no help text"));
            }
            if !flat.contains(&format!("--{long}")) {
                problems.push(format!("`{name} --help` does not list --{long}"));
            }
            // `token`'s own options are local to one command line.
            let local = name == "token" && matches!(id, "sub" | "roles" | "accounts" | "ttl");
            match arg.get_env() {
                Some(env) => {
                    let env = env.to_string_lossy();
                    if !flat.contains(&format!("[env: {env}")) {
                        problems.push(format!(
                            "`{name} --help` does not show --{long}'s variable {env}"
                        ));
                    }
                }
                None if local => {}
                None => problems.push(format!("{name} --{long}: no environment variable")),
            }
        }
        eprintln!(
            "`invoice-cases {name} --help` documents {} settings",
            args.len()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // A secret from the environment never shows in `--help`.
    let output = run(
        &["serve", "--help"],
        &[("DATABASE_URL", "postgres://u:hidden-password-42@h:1/d")],
    )
    .await;
    assert!(!text(&output).contains("hidden-password-42"));

    // `token` prints a token and nothing else.
    let secret = new_secret();
    let output = run(
        &["token", "--sub", "olga", "--roles", "agent"],
        &[("JWT_SECRET", &secret)],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(stdout.trim().split('.').count(), 3, "a JWT: {stdout}");
}

#[tokio::test]
async fn invalid_settings_stop_the_binary_with_a_message_naming_the_setting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_str().expect("utf-8 path").to_owned();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("utf-8 path");
    let unreadable_jwks = dir.path().join("jwks-dir");
    std::fs::create_dir(&unreadable_jwks).expect("a directory");
    let unreadable_jwks = unreadable_jwks.to_str().expect("utf-8 path");
    let bad_jwks = dir.path().join("bad.json");
    std::fs::write(&bad_jwks, "{ not json").expect("write");
    let bad_jwks = bad_jwks.to_str().expect("utf-8 path");
    let short_secret = "too-short-secret-1234";
    let good_secret = new_secret();
    // Nothing listens there: a setting that passed by mistake would fail
    // later, on the database, and the message would not name it.
    let url = "postgres://invoice:db-password-xyz@127.0.0.1:1/invoice_cases";

    // (what, arguments after `serve`, extra environment, words naming the
    // setting: any one will do).
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<&str>, Vec<(&str, &str)>, &[&str])> = vec![
        (
            "--listen nope",
            vec!["--listen", "nope"],
            vec![],
            &["--listen", "LISTEN_ADDR"],
        ),
        (
            "LISTEN_ADDR=nope",
            vec![],
            vec![("LISTEN_ADDR", "nope")],
            &["--listen", "LISTEN_ADDR"],
        ),
        (
            "--db-pool-size 0",
            vec!["--db-pool-size", "0"],
            vec![],
            &["--db-pool-size", "DB_POOL_SIZE"],
        ),
        (
            "DB_POOL_SIZE=0",
            vec![],
            vec![("DB_POOL_SIZE", "0")],
            &["--db-pool-size", "DB_POOL_SIZE"],
        ),
        (
            "--tls-cert without --tls-key",
            vec!["--tls-cert", "x"],
            vec![],
            &["--tls-key", "TLS_KEY_FILE"],
        ),
        (
            "--metrics-listen nope",
            vec!["--metrics-listen", "nope"],
            vec![],
            &["--metrics-listen", "METRICS_LISTEN"],
        ),
        (
            "--jwt-leeway-seconds 9999",
            vec!["--jwt-leeway-seconds", "9999"],
            vec![],
            &["--jwt-leeway-seconds", "JWT_LEEWAY_SECONDS"],
        ),
        (
            "LOG_FORMAT=xml",
            vec![],
            vec![("LOG_FORMAT", "xml")],
            &["--log-format", "LOG_FORMAT"],
        ),
        (
            "a JWT_SECRET shorter than 32 bytes",
            vec![],
            vec![("JWT_SECRET", short_secret)],
            &["--jwt-secret", "JWT_SECRET", "JWT secret"],
        ),
        (
            "--jwks-file of a file that does not exist",
            vec!["--jwks-file", missing],
            vec![],
            &["--jwks-file", "JWKS_FILE"],
        ),
        (
            "--jwks-file of a directory (unreadable as a file)",
            vec!["--jwks-file", unreadable_jwks],
            vec![],
            &["--jwks-file", "JWKS_FILE"],
        ),
        (
            "--jwks-file of invalid JSON",
            vec!["--jwks-file", bad_jwks],
            vec![],
            &["--jwks-file", "JWKS_FILE", "JWKS"],
        ),
        (
            "--jwt-public-key-file of a file that does not exist",
            vec!["--jwt-public-key-file", missing],
            vec![],
            &["--jwt-public-key-file", "JWT_PUBLIC_KEY_FILES"],
        ),
        (
            "--tls-cert and --tls-key of files that do not exist",
            vec!["--tls-cert", missing, "--tls-key", missing],
            vec![],
            &["--tls-cert", "TLS_CERT_FILE", "--tls-key", "TLS_KEY_FILE"],
        ),
    ];
    let mut problems = Vec::new();
    for (what, args, env, names) in &cases {
        let mut full = vec!["serve", "--data-dir", &data_dir];
        full.extend(args.iter().copied());
        let mut environment = vec![("DATABASE_URL", url)];
        if !env.iter().any(|(k, _)| *k == "JWT_SECRET") {
            environment.push(("JWT_SECRET", &good_secret));
        }
        environment.extend(env.iter().copied());
        let output = run(&full, &environment).await;
        let message = text(&output);
        eprintln!("{what}: exit {}\n{}", output.status, message.trim_end());
        if output.status.success() {
            problems.push(format!("{what}: the binary exited successfully"));
            continue;
        }
        let folded = message.to_lowercase();
        if !names.iter().any(|n| folded.contains(&n.to_lowercase())) {
            problems.push(format!(
                "{what}: the message does not name the setting (one of {names:?}): {:?}",
                message.trim()
            ));
        }
        for secret in [short_secret, good_secret.as_str(), "db-password-xyz"] {
            if message.contains(secret) {
                problems.push(format!("{what}: the message shows a secret: {message:?}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "invalid settings not reported as they should be:\n{}",
        problems.join("\n")
    );
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    crate::helpers::count_rows(&mut conn, sql).await
}

#[tokio::test]
async fn migrate_applies_the_migrations_to_a_fresh_database_and_is_idempotent() {
    // An empty database (no migrations), dropped when the test is done.
    let database = cluster().new_empty_database();
    let url = database.url.clone();
    let tables = "SELECT count(*) AS n FROM information_schema.tables \
                  WHERE table_schema = 'public' AND table_name IN \
                  ('invoice_cases', 'case_lines', 'case_events', 'idempotency_records')";
    assert_eq!(count(&url, tables).await, 0, "a fresh database");
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("up.sql").exists())
        .count() as i64;

    // First run: from the environment.
    let first = run(&["migrate"], &[("DATABASE_URL", &url)]).await;
    eprintln!(
        "first migrate: {}\n{}",
        first.status,
        text(&first).trim_end()
    );
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(count(&url, tables).await, 4, "the tables exist");
    let applied = "SELECT count(*) AS n FROM __diesel_schema_migrations";
    assert_eq!(count(&url, applied).await, migrations, "every migration");

    // Second run: from the flag; nothing left to do, nothing fails.
    let second = run(&["migrate", "--database-url", &url], &[]).await;
    eprintln!(
        "second migrate: {}\n{}",
        second.status,
        text(&second).trim_end()
    );
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(count(&url, applied).await, migrations, "nothing re-applied");
    assert_eq!(count(&url, tables).await, 4);
    if let Some(password) = url_password(&url) {
        for output in [&first, &second] {
            assert!(
                !text(output).contains(&password),
                "migrate printed the database password"
            );
        }
    }
}

#[tokio::test]
async fn the_logs_never_contain_the_jwt_secret_or_the_database_password() {
    let database_url = cluster().new_database();
    let password = url_password(&database_url);
    let mut options = Options::new(&database_url);
    // Everything this service and its libraries log.
    options.log = "debug".into();
    let secret = options.secret.clone();
    let mut server = Binary::start(options).await;
    let mut admin = server.admin().await;
    let case = create(&mut admin, "ACME", 2).await;
    ok(admin.submit_case(submit(&case.id)).await);
    // A failing call: the case is no longer a draft.
    expect_code(
        admin.submit_case(submit(&case.id)).await,
        Code::FailedPrecondition,
    );
    get(&mut admin, &case.number).await;
    expect_code(
        admin
            .get_invoice_case(pb::GetInvoiceCaseRequest {
                case_id: "INVCS9999999".into(),
            })
            .await,
        Code::NotFound,
    );
    // Tokens the server refuses: another secret, garbage.
    let foreign = invoice_cases::auth::mint_token(
        &new_secret(),
        "mallory",
        &["admin".into()],
        None,
        60,
        None,
        None,
    )
    .expect("token");
    for token in [foreign.as_str(), "not-a-token"] {
        let mut client = crate::process::client(server.addr, token).await;
        expect_code(
            client
                .get_invoice_case(pb::GetInvoiceCaseRequest {
                    case_id: case.id.clone(),
                })
                .await,
            Code::Unauthenticated,
        );
    }
    // No token at all.
    let mut anonymous = pb::invoice_case_service_client::InvoiceCaseServiceClient::new(
        crate::binary::channel(server.addr).await,
    );
    let mut request = tonic::Request::new(pb::GetInvoiceCaseRequest {
        case_id: case.id.clone(),
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Basic Zm9vOmJhcg=="),
    );
    assert!(anonymous.get_invoice_case(request).await.is_err());

    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let logs = server.logs();
    assert!(
        logs.len() > 10,
        "the server logged (debug) too little to be a test: {logs:?}"
    );
    eprintln!(
        "{} log lines checked (RUST_LOG=debug); the last ones:\n{}",
        logs.len(),
        logs[logs.len().saturating_sub(8)..].join("\n")
    );
    for (i, line) in logs.iter().enumerate() {
        assert!(
            !line.contains(&secret),
            "log line {i} contains the JWT secret: {line}"
        );
        if let Some(password) = &password {
            assert!(
                !line.contains(password.as_str()),
                "log line {i} contains the database password: {line}"
            );
        }
    }

    // A start that fails on the database does not print the URL's password
    // either.
    let wrong = "wrong-db-password-7781";
    let bad_url = database_url.replacen(
        &format!(":{}@", password.as_deref().unwrap_or("")),
        &format!(":{wrong}@"),
        1,
    );
    let bad_url = if bad_url.contains(wrong) {
        bad_url
    } else {
        // A URL without a password: give it one.
        bad_url.replacen("://", &format!("://invoice_cases:{wrong}@"), 1)
    };
    let output = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ],
        &[("DATABASE_URL", &bad_url), ("JWT_SECRET", &secret)],
    )
    .await;
    let message = text(&output);
    eprintln!(
        "start with a wrong database password: {}\n{}",
        output.status,
        message.trim_end()
    );
    assert!(!output.status.success(), "{message}");
    assert!(!message.contains(wrong), "the password shows: {message}");
    assert!(!message.contains(&secret), "the secret shows: {message}");
}
