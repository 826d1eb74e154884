//! A saga's history a page at a time (issue 13): the store's keyset pages, the API's
//! `GET /api/sagas/{id}/history?limit&cursor&order`, `sagaflow sagas show
//! --history-limit/--all`, and the plan Postgres runs for a page of a saga with
//! 100,000 entries. Against the real Postgres, each test with its own database.

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, ORDER};
use reqwest::StatusCode;
use sagaflow::store::history::{self, Order, PAGE_ASC, PAGE_DESC};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// A saga row (through the factory: its few real entries first) and `n` more history
/// entries `{"n": 1..=n}` in one statement; returns all its entries' `n` in order,
/// `None` for the factory's.
async fn long_saga(env: &TestEnv, id: &str, n: i64) -> Vec<Option<i64>> {
    env.saga(id).definition("order_fulfillment").insert().await;
    append(&env.pool, id, 1, n).await;
    numbers(&env.pool, id).await
}

/// Appends entries `{"n": from..=to}` to saga `id`, in order.
async fn append(pool: &PgPool, id: &str, from: i64, to: i64) {
    sqlx::query(
        "INSERT INTO saga_history (saga_id, at, event, detail)
         SELECT $1, now(), 'signal_buffered', jsonb_build_object('n', g)
         FROM generate_series($2::int8, $3::int8) g ORDER BY g",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .execute(pool)
    .await
    .unwrap();
}

/// Every entry of saga `id`, oldest first, as its `n` (`None` without one).
async fn numbers(pool: &PgPool, id: &str) -> Vec<Option<i64>> {
    history::all(pool, id)
        .await
        .unwrap()
        .iter()
        .map(|h| h.detail["n"].as_i64())
        .collect()
}

fn n_of(entry: &Value) -> Option<i64> {
    entry["detail"]["n"].as_i64()
}

/// One API page: status and body.
async fn get(http: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let r = http.get(url).send().await.unwrap();
    let code = r.status();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Every page of saga `id` from the API in `order`, `limit` per page: the entries'
/// `n` in the order received, and the number of pages.
async fn read_all(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    order: &str,
    limit: usize,
) -> (Vec<Option<i64>>, usize) {
    let (mut seen, mut pages, mut cursor) = (vec![], 0, None::<String>);
    loop {
        let mut url = format!("{base}/api/sagas/{id}/history?order={order}&limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (code, page) = get(http, url).await;
        assert_eq!(code, StatusCode::OK, "{page}");
        let entries = page["entries"].as_array().unwrap();
        pages += 1;
        seen.extend(entries.iter().map(n_of));
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(entries.len(), limit, "only the last page is short");
                cursor = Some(c.to_string());
            }
            None => return (seen, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

#[tokio::test]
async fn pages_in_both_orders_cover_every_entry_once() {
    let env = TestEnv::database_only(&[("order.toml", ORDER)]).await;
    let all = long_saga(&env, "p-1", 1234).await;
    // Another saga's entries, interleaved by id, never show.
    env.saga("p-2")
        .definition("order_fulfillment")
        .insert()
        .await;
    append(&env.pool, "p-2", 5000, 5100).await;
    append(&env.pool, "p-1", 1235, 1300).await;
    let all: Vec<Option<i64>> = all.into_iter().chain((1235..=1300).map(Some)).collect();
    let stop = CancellationToken::new();
    let base = common::serve_api(&env, &env.settings, &stop).await;
    let http = reqwest::Client::new();

    for limit in [1, 7, 100, 1000] {
        let (asc, pages) = read_all(&http, &base, "p-1", "asc", limit).await;
        assert_eq!(asc, all, "asc, limit {limit}");
        assert_eq!(pages, all.len().div_ceil(limit).max(1), "limit {limit}");
        let (mut desc, _) = read_all(&http, &base, "p-1", "desc", limit).await;
        desc.reverse();
        assert_eq!(desc, all, "desc, limit {limit}");
    }

    // Defaults: oldest first, 200 entries; a page that ends exactly at the last
    // entry has no next cursor.
    let (code, page) = get(&http, format!("{base}/api/sagas/p-1/history")).await;
    assert_eq!(code, StatusCode::OK, "{page}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 200);
    assert_eq!(entries.iter().map(n_of).collect::<Vec<_>>(), all[..200]);
    assert!(entries[0].get("id").is_none(), "the row id stays internal");
    assert_eq!(entries[0]["event"], "saga_started");
    let exact = all.len();
    let (code, page) = get(
        &http,
        format!("{base}/api/sagas/p-1/history?limit=1000&order=desc"),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let rest = exact - 1000;
    let c = page["next_cursor"].as_str().unwrap();
    let (_, last) = get(
        &http,
        format!("{base}/api/sagas/p-1/history?limit={rest}&order=desc&cursor={c}"),
    )
    .await;
    assert_eq!(last["entries"].as_array().unwrap().len(), rest);
    assert_eq!(last["next_cursor"], Value::Null, "{}", last["next_cursor"]);

    // A saga without history entries: an empty page.
    sqlx::query("DELETE FROM saga_history WHERE saga_id = 'p-2'")
        .execute(&env.pool)
        .await
        .unwrap();
    let (code, page) = get(&http, format!("{base}/api/sagas/p-2/history")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        page,
        serde_json::json!({"entries": [], "next_cursor": null})
    );
    stop.cancel();
    env.cleanup().await;
}

/// Entries appended while a reader pages: an ascending reader meets them at the end,
/// a descending one (newest first from when it started) never; neither sees an
/// entry twice or misses an old one.
#[tokio::test]
async fn cursors_hold_while_entries_are_appended() {
    let env = TestEnv::database_only(&[("order.toml", ORDER)]).await;
    let before = long_saga(&env, "c-1", 50).await;
    let stop = CancellationToken::new();
    let base = common::serve_api(&env, &env.settings, &stop).await;
    let http = reqwest::Client::new();

    for order in ["asc", "desc"] {
        let start = numbers(&env.pool, "c-1").await;
        // New entries are numbered from 1000 (asc) or 2000 (desc), at most 30 each.
        let first_new = if order == "asc" { 1000 } else { 2000 };
        let (mut seen, mut cursor, mut next_n) = (vec![], None::<String>, first_new);
        loop {
            let mut url = format!("{base}/api/sagas/c-1/history?order={order}&limit=10");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let (code, page) = get(&http, url).await;
            assert_eq!(code, StatusCode::OK, "{page}");
            seen.extend(page["entries"].as_array().unwrap().iter().map(n_of));
            let Some(c) = page["next_cursor"].as_str() else {
                break;
            };
            cursor = Some(c.to_string());
            // Three entries more between every two pages, until there are 30 more.
            if next_n < first_new + 30 {
                append(&env.pool, "c-1", next_n, next_n + 2).await;
                next_n += 3;
            }
        }
        let now = numbers(&env.pool, "c-1").await;
        let appended = (next_n - first_new) as usize;
        assert!(
            appended >= 15,
            "entries were appended meanwhile: {appended}"
        );
        assert_eq!(now.len(), start.len() + appended);
        if order == "asc" {
            assert_eq!(seen, now, "asc: every entry once, the new ones at the end");
        } else {
            seen.reverse();
            assert_eq!(seen, start, "desc: what there was at the start, once each");
        }
    }
    assert!(before.len() > 50);
    stop.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn bad_paging_is_a_400_naming_the_parameter_and_an_unknown_saga_a_404() {
    let env = TestEnv::database_only(&[("order.toml", ORDER)]).await;
    long_saga(&env, "b-1", 30).await;
    let stop = CancellationToken::new();
    let base = common::serve_api(&env, &env.settings, &stop).await;
    let http = reqwest::Client::new();
    let url = |q: &str| format!("{base}/api/sagas/b-1/history?{q}");

    let (_, asc) = get(&http, url("limit=5")).await;
    let asc_cursor = asc["next_cursor"].as_str().unwrap().to_string();
    let (_, list) = get(&http, format!("{base}/api/sagas?limit=1")).await;
    assert_eq!(list["sagas"].as_array().unwrap().len(), 1);
    // A listing cursor for a saga list of one more saga.
    env.saga("b-2")
        .definition("order_fulfillment")
        .insert()
        .await;
    let (_, list) = get(&http, format!("{base}/api/sagas?limit=1")).await;
    let list_cursor = list["next_cursor"].as_str().unwrap().to_string();

    let cases = [
        ("limit=0", "limit must be 1..=1000"),
        ("limit=1001", "limit must be 1..=1000, not 1001"),
        ("limit=-3", "limit must be 1..=1000"),
        ("limit=lots", "limit"),
        (
            "order=sideways",
            "order must be `asc` or `desc`, not `sideways`",
        ),
        ("order=ASC", "order must be `asc` or `desc`"),
        ("cursor=zz", "bad cursor"),
        ("cursor=", "bad cursor"),
        (&format!("cursor={list_cursor}"), "bad cursor"),
        (
            &format!("order=desc&cursor={asc_cursor}"),
            "it continues a page in order=asc, this request asks for order=desc",
        ),
    ];
    for (q, says) in cases {
        let (code, v) = get(&http, url(q)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{q}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{q}: {message}");
    }
    // The largest page is allowed, and the cursor continues in its own order.
    let (code, _) = get(&http, url("limit=1000")).await;
    assert_eq!(code, StatusCode::OK);
    let (code, v) = get(&http, url(&format!("order=asc&cursor={asc_cursor}"))).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let total = numbers(&env.pool, "b-1").await.len();
    assert_eq!(v["entries"].as_array().unwrap().len(), total - 5);

    for q in ["", "limit=5&order=desc"] {
        let (code, v) = get(&http, format!("{base}/api/sagas/nope/history?{q}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["error"]["code"], "saga_not_found");
    }
    stop.cancel();
    env.cleanup().await;
}

/// Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first.
fn plan_nodes(node: &Value) -> Vec<&Value> {
    let mut nodes = vec![node];
    for child in node["Plans"].as_array().into_iter().flatten() {
        nodes.extend(plan_nodes(child));
    }
    nodes
}

/// The middle of a sorted sample, in milliseconds.
fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// The page queries on a saga with 100,000 entries (interleaved by id with another
/// saga's): the plan Postgres runs, custom or generic (prepared statements switch to
/// a generic plan after five runs), for the first page and one 50,000 entries deep,
/// in both orders, is a range scan of `saga_history_saga` that reads exactly the
/// page's rows: no Sort node, nothing removed by a filter. Prints the timings that
/// BENCHMARKS.md quotes (`--nocapture`).
#[tokio::test]
async fn a_page_of_a_100k_entry_history_is_an_index_range_scan() {
    let env = TestEnv::database_only(&[("order.toml", ORDER)]).await;
    env.saga("big")
        .definition("order_fulfillment")
        .insert()
        .await;
    let factory = numbers(&env.pool, "big").await.len() as i64;
    // One statement: 110,000 rows, every 11th for another saga.
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO saga_history (saga_id, at, event, detail)
         SELECT CASE WHEN g % 11 = 0 THEN 'other' ELSE 'big' END, now(), 'signal_buffered',
                jsonb_build_object('n', g)
         FROM generate_series(1, 110000) g",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let inserted = started.elapsed();
    sqlx::query("ANALYZE saga_history")
        .execute(&env.pool)
        .await
        .unwrap();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_history WHERE saga_id = 'big'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(total, 100_000 + factory);
    let mid: i64 = sqlx::query_scalar(
        "SELECT id FROM saga_history WHERE saga_id = 'big' ORDER BY id OFFSET 50000 LIMIT 1",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();

    let mut conn = env.pool.acquire().await.unwrap();
    for (name, sql) in [("asc", PAGE_ASC), ("desc", PAGE_DESC)] {
        sqlx::query(&format!("PREPARE page_{name}(text, int8, int8) AS {sql}"))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let limit = 201; // the API's default page and the row that says there is more
    let positions = [
        ("asc", "first", 0),
        ("asc", "deep", mid),
        ("desc", "first", i64::MAX),
        ("desc", "deep", mid),
    ];
    for mode in ["force_custom_plan", "force_generic_plan"] {
        sqlx::query(&format!("SET plan_cache_mode = {mode}"))
            .execute(&mut *conn)
            .await
            .unwrap();
        for (order, at, after) in positions {
            let explained: Value = sqlx::query_scalar(&format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page_{order}('big', {after}, {limit})"
            ))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            let what = format!("{mode}, {order}, {at} page: {explained:#}");
            let nodes = plan_nodes(&explained[0]["Plan"]);
            assert!(
                nodes.iter().all(|n| n["Node Type"] != "Sort"),
                "no sort: {what}"
            );
            let scans: Vec<&&Value> = nodes
                .iter()
                .filter(|n| n["Relation Name"] == "saga_history")
                .collect();
            assert_eq!(scans.len(), 1, "one scan of saga_history: {what}");
            let scan = scans[0];
            assert_eq!(scan["Node Type"], "Index Scan", "{what}");
            assert_eq!(scan["Index Name"], "saga_history_saga", "{what}");
            let direction = if order == "asc" {
                "Forward"
            } else {
                "Backward"
            };
            assert_eq!(scan["Scan Direction"], direction, "{what}");
            let cond = scan["Index Cond"].as_str().unwrap_or_default();
            assert!(
                cond.contains("saga_id") && cond.contains("id"),
                "both columns in the index condition: {what}"
            );
            // The scan stops after the page and reads no row it then throws away.
            assert_eq!(scan["Actual Rows"], limit, "{what}");
            assert!(
                scan.get("Rows Removed by Filter").is_none_or(|r| r == 0),
                "{what}"
            );
            if mode == "force_custom_plan" {
                println!(
                    "history paging: EXPLAIN ANALYZE {order} {at} page of {limit}: execution {} ms",
                    explained[0]["Execution Time"]
                );
            }
        }
    }
    drop(conn);

    // Wall clock, through the store and through the API (median of 25 each).
    let stop = CancellationToken::new();
    let base = common::serve_api(&env, &env.settings, &stop).await;
    let http = reqwest::Client::new();
    for (order, at, after) in positions {
        let o: Order = order.parse().unwrap();
        let after = (after != 0 && after != i64::MAX).then_some(after);
        let cursor = after.map(|a| sagaflow::api::cursor::encode_history(a, o));
        let mut store = vec![];
        let mut api = vec![];
        for _ in 0..25 {
            let t = Instant::now();
            let page = history::page(&env.pool, "big", o, after, 200)
                .await
                .unwrap();
            store.push(t.elapsed());
            assert_eq!(page.len(), 200);
            let mut url = format!("{base}/api/sagas/big/history?order={order}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let t = Instant::now();
            let (code, body) = get(&http, url).await;
            api.push(t.elapsed());
            assert_eq!(code, StatusCode::OK);
            assert_eq!(body["entries"].as_array().unwrap().len(), 200);
        }
        let (store, api) = (median_ms(store), median_ms(api));
        println!(
            "history paging: {order} {at} page of 200 of {total}: store {store:.2} ms, HTTP {api:.2} ms (medians of 25)"
        );
    }
    println!(
        "history paging: inserting 110,000 rows in one statement took {} ms",
        inserted.as_millis()
    );
    // For comparison: the whole history in one read, as every surface did before.
    let t = Instant::now();
    let everything = history::all(&env.pool, "big").await.unwrap();
    println!(
        "history paging: reading all {} entries at once (store::history::all): {} ms",
        everything.len(),
        t.elapsed().as_millis()
    );
    // Timings are figures for BENCHMARKS.md, not assertions (the machine drifts); what
    // keeps a deep page as cheap as the first is the plan, asserted above.
    stop.cancel();
    env.cleanup().await;
}

/// `sagaflow sagas show` against a database only (it reads Postgres, nothing else).
fn show(env: &TestEnv, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["sagas", "show"])
        .args(args)
        .env("SAGAFLOW__DATABASE__URL", &env.settings.database.url)
        .env("SAGAFLOW__SAGAS_DIR", &env.settings.sagas_dir)
        .env("SAGAFLOW__NAMESPACE", &env.settings.namespace)
        .output()
        .expect("sagaflow runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The `n` of each generated entry in a `sagas show` table, in order printed.
fn table_numbers(out: &str) -> Vec<i64> {
    out.lines()
        .filter(|l| l.contains("signal_buffered"))
        .map(|l| {
            let detail = &l[l.find('{').expect("a detail")..];
            let v: Value = serde_json::from_str(detail).expect("the detail is JSON");
            v["n"].as_i64().expect("an n")
        })
        .collect()
}

#[tokio::test]
async fn the_cli_shows_the_newest_entries_and_says_how_many_are_left_out() {
    let env = TestEnv::database_only(&[("order.toml", ORDER)]).await;
    let all = long_saga(&env, "cli-1", 2500).await;
    let total = all.len();
    let hidden_line = |n: usize| format!("{n} older history entries are not shown");

    // Default: the newest 200, oldest first, after the line saying what is left out.
    let (code, out, err) = show(&env, &["cli-1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(table_numbers(&out), (2301..=2500).collect::<Vec<_>>());
    let line = out.lines().find(|l| l.contains("older history")).unwrap();
    assert!(line.starts_with(&hidden_line(total - 200)), "{line}");
    assert!(
        line.contains("--history-limit N") && line.contains("--all"),
        "{line}"
    );
    assert!(
        out.find("older history") < out.find("signal_buffered"),
        "{out}"
    );

    // --history-limit: the newest N, across more than one page of the store's reads.
    for (n, first) in [(5, 2496), (1200, 1301)] {
        let (code, out, err) = show(&env, &["cli-1", "--history-limit", &n.to_string()]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(
            table_numbers(&out),
            (first..=2500).collect::<Vec<_>>(),
            "{n}"
        );
        assert!(out.contains(&hidden_line(total - n)), "{n}: {out}");
    }
    let (_, out, _) = show(&env, &["cli-1", "--history-limit", "0"]);
    assert!(table_numbers(&out).is_empty());
    assert!(out.contains(&hidden_line(total)), "{out}");
    // More than there is: all of it, nothing said to be left out.
    let (_, out, _) = show(&env, &["cli-1", "--history-limit", "100000"]);
    assert_eq!(table_numbers(&out), (1..=2500).collect::<Vec<_>>());
    assert!(!out.contains("older history"), "{out}");

    // --all: every entry, in order (read a page at a time).
    let (code, out, err) = show(&env, &["cli-1", "--all"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(table_numbers(&out), (1..=2500).collect::<Vec<_>>());
    assert_eq!(
        out.lines().filter(|l| l.contains("saga_started")).count(),
        1
    );
    assert!(!out.contains("older history"), "{out}");

    // JSON: the same choices, with the count of what is left out.
    let (code, out, _) = show(&env, &["cli-1", "--json", "--history-limit", "5"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["saga"]["id"], "cli-1");
    assert_eq!(v["history_hidden"], total - 5);
    let got: Vec<Option<i64>> = v["history"].as_array().unwrap().iter().map(n_of).collect();
    assert_eq!(got, all[total - 5..]);
    let (code, out, _) = show(&env, &["cli-1", "--json", "--all"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["history_hidden"], 0);
    let got: Vec<Option<i64>> = v["history"].as_array().unwrap().iter().map(n_of).collect();
    assert_eq!(got, all);

    // --all and --history-limit contradict each other.
    let (code, _, err) = show(&env, &["cli-1", "--all", "--history-limit", "5"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    env.cleanup().await;
}

/// The OpenAPI document describes the paging parameters and the page.
#[test]
fn the_openapi_document_describes_history_pages() {
    let doc = serde_json::to_value(sagaflow::api::openapi::document()).unwrap();
    let op = &doc["paths"]["/api/sagas/{id}/history"]["get"];
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{op:#}"))
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in ["id", "limit", "cursor", "order"] {
        assert!(params.contains(&p), "{p}: {op:#}");
    }
    let ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_default();
    assert!(ok.ends_with("/HistoryPage"), "{op:#}");
    assert!(op["responses"]["400"].is_object(), "{op:#}");
    let page = &doc["components"]["schemas"]["HistoryPage"]["properties"];
    assert!(
        page["entries"].is_object() && page["next_cursor"].is_object(),
        "{page:#}"
    );
}
