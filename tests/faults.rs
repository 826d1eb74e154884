//! Fault injection against throwaway servers (see docs/faults.md).

mod common;

use std::time::Duration;

use common::throwaway::{ThrowawayPostgres, ThrowawayRabbit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwaway_servers_crash_and_come_back() {
    let pg = ThrowawayPostgres::start();
    let q = |url: String| async move {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
        one
    };
    assert_eq!(q(pg.url("postgres")).await, 1);
    pg.crash();
    assert!(
        <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url("postgres"))
            .await
            .is_err(),
        "down after crash()"
    );
    pg.start_again();
    assert_eq!(q(pg.url("postgres")).await, 1);
    assert!(pg.terminate_backends().await >= 0);

    let mut rabbit = ThrowawayRabbit::start();
    let amqp = |url: String| async move {
        let c = lapin::Connection::connect(&url, Default::default()).await;
        if let Ok(c) = &c {
            let _ = c.close(200, "ok".into()).await;
        }
        c.is_ok()
    };
    assert!(amqp(rabbit.url()).await);
    rabbit.stop_app();
    assert!(!amqp(rabbit.url()).await, "down after stop_app");
    rabbit.start_app();
    assert!(amqp(rabbit.url()).await);
    rabbit.kill9();
    assert!(!amqp(rabbit.url()).await, "down after kill9");
    rabbit.start_again();
    assert!(amqp(rabbit.url()).await);
    let _ = Duration::ZERO;
}
