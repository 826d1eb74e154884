//! TLS end to end, on throwaway servers of our own (never the machine's): a Postgres
//! that accepts TLS connections only (`ssl = on`, one `hostssl` line in pg_hba.conf)
//! and a RabbitMQ node whose TLS listener requires a client certificate. The
//! certificates are made here by openssl (`tests/common/tls.rs`); the server's
//! names only the IP address 127.0.0.1.
//!
//! How the CA and the client certificate are given: docs/security.md, "Transport
//! security (TLS)".

mod common;

use std::time::Duration;

use common::throwaway::ThrowawayPostgres;
use common::tls::{configure_postgres, rabbitmqctl, Pki, TlsRabbit};
use common::{id, TestEnv};
use sagaflow::store::{self, StoreError};
use serde_json::json;
use sqlx::Connection as _;

/// Only TLS connections get in, and `postgres` needs no password on them.
const HBA_TLS_ONLY: &str = "hostssl all all 127.0.0.1/32 trust\n";

/// A throwaway Postgres that takes TLS connections only, with `pki`'s certificate.
async fn tls_postgres(pki: &Pki) -> ThrowawayPostgres {
    let pg = tokio::task::block_in_place(ThrowawayPostgres::start);
    let plain = format!("{}?sslmode=disable", pg.url("postgres"));
    let tls = format!("{}?sslmode=require", pg.url("postgres"));
    configure_postgres(&pg, HBA_TLS_ONLY, Some(pki), || async {
        sqlx::PgConnection::connect(&plain).await.is_err()
            && sqlx::PgConnection::connect(&tls).await.is_ok()
    })
    .await;
    pg
}

fn with_params(url: &str, params: &str) -> String {
    format!("{url}?{params}")
}

/// sslmode=require encrypts without checking the certificate; verify-ca checks it
/// against `sslrootcert`; verify-full also checks the host name. A plain connection is
/// refused by the server, and verification failures are reported as TLS errors.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_sslmodes_against_a_tls_only_server() {
    let pki = Pki::generate();
    let pg = tls_postgres(&pki).await;
    let ca = pki.ca.display().to_string();
    let db = pg.url("tls_modes");
    let by_name = db.replace("127.0.0.1", "localhost");

    // What works: require (no CA needed), verify-ca and verify-full with the CA.
    for params in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let url = with_params(&db, &params);
        let pool = store::connect(&url, 2)
            .await
            .unwrap_or_else(|e| panic!("{params}: {e}"));
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(ssl, "{params}: the session is not encrypted");
        pool.close().await;
    }
    // What is refused, and how it reads.
    let refused = |params: String, base: String| async move {
        let url = with_params(&base, &params);
        match store::connect(&url, 1).await {
            Ok(_) => panic!("{params}: connected"),
            Err(e) => (params, e),
        }
    };
    let (params, e) = refused("sslmode=disable".into(), db.clone()).await;
    assert!(matches!(e, StoreError::Connect { .. }), "{params}: {e}");
    assert!(e.to_string().contains("no encryption"), "{params}: {e}");
    // The CA is not in webpki-roots: verify-full without sslrootcert cannot verify.
    let (params, e) = refused("sslmode=verify-full".into(), db.clone()).await;
    assert!(
        e.to_string().to_lowercase().contains("unknown"),
        "{params}: {e}"
    );
    let (params, e) = refused(format!("sslmode=verify-full&sslrootcert={ca}"), by_name).await;
    assert!(
        e.to_string().to_lowercase().contains("not valid for name"),
        "{params}: {e}"
    );
    let (params, e) = refused(
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem".into(),
        db.clone(),
    )
    .await;
    assert!(
        e.to_string().contains("/nonexistent/ca.pem"),
        "{params}: {e}"
    );
    let _ = store::drop_database(&with_params(&db, "sslmode=require")).await;
}

/// A saga from start to `completed` with every connection on TLS: the coordinator
/// and the demo worker run in-process (`TestEnv`) on `postgres://…?sslmode=verify-full`
/// and `amqps://…?cacertfile=…&certfile=…&keyfile=…`. Afterwards the servers are
/// asked: every sagaflow connection RabbitMQ holds is TLS with our client
/// certificate, and every session of the saga database is encrypted.
#[tokio::test(flavor = "multi_thread")]
async fn a_saga_runs_end_to_end_over_tls() {
    let pki = Pki::generate();
    let pg = tls_postgres(&pki).await;
    let rabbit = tokio::task::block_in_place(|| TlsRabbit::start(&pki));
    let amqps = rabbit.url(&pki);

    // The broker's certificate is verified, and the broker wants ours.
    let ca_only = amqps.split("&certfile").next().unwrap().to_string();
    let e = sagaflow::broker::connect(&ca_only, "t").await.unwrap_err();
    println!("without a client certificate: {e}");
    let no_ca = format!(
        "amqps://guest:guest@127.0.0.1:{}/%2f?certfile={}&keyfile={}",
        rabbit.tls_port,
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let e = sagaflow::broker::connect(&no_ca, "t").await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("unknown"), "{e}");
    assert!(!e.to_string().contains("guest:guest"), "{e}");

    // TestEnv connects its own pool first (sslmode=prefer: TLS, unverified, the only
    // way in); the deployment then runs on verify-full.
    let mut env = TestEnv::on(&[("order.toml", common::ORDER)], &amqps, &pg.base()).await;
    env.settings.database.url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        env.settings.database.url,
        pki.ca.display()
    );
    env.pool.close().await;
    env.pool = store::connect(&env.settings.database.url, 10)
        .await
        .expect("verify-full");
    env.start_coordinator().await;
    env.start_worker().await;

    let client = env.client().await;
    client
        .start("order_fulfillment", json!({}), id("tls-1"))
        .await
        .unwrap();
    let done = env
        .wait_terminal(&["tls-1".to_string()], Duration::from_secs(60))
        .await;
    assert_eq!(done["tls-1"], "completed");
    assert_eq!(
        env.effect_activities("tls-1").await,
        ["inventory.reserve", "payments.charge", "shipping.ship"]
    );

    let conns = tokio::task::block_in_place(|| {
        rabbitmqctl(
            &rabbit.rabbit.node,
            &[
                "list_connections",
                "-q",
                "--no-table-headers",
                "name",
                "ssl",
                "peer_cert_subject",
            ],
        )
    });
    println!("broker connections:\n{conns}");
    let lines: Vec<&str> = conns.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 3,
        "coordinator, worker and client are connected: {conns}"
    );
    for l in &lines {
        assert!(
            l.contains("\ttrue\t") && l.contains("sagaflow-test-client"),
            "a connection without TLS or without our client certificate: {l}"
        );
    }
    let (tls, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = current_database() AND a.backend_type = 'client backend'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(
        tls >= 2 && plain == 0,
        "sessions: {tls} on TLS, {plain} plain"
    );

    client.close().await;
    env.cleanup().await;
}
