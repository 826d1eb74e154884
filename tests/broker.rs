//! The publisher against the real broker: a pipelined batch keeps its order and
//! reports, message by message, which ones the broker could not route.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use sagaflow::broker::{Outgoing, PublishError, Publisher};

#[tokio::test]
async fn a_pipelined_batch_arrives_in_order_and_each_unroutable_message_is_reported() {
    let conn = sagaflow::broker::connect(&common::amqp_url(), "sagaflow-test-broker")
        .await
        .expect("amqp");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("sft_pub_{tag}");
    let queue = format!("sft_pub_{tag}.q");
    // The test's own side (declare, consume) on a plain lapin connection.
    let raw = lapin::Connection::connect(&common::amqp_url(), Default::default())
        .await
        .expect("amqp");
    let ch = raw.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "routed".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    // Every 97th message goes to a routing key nothing is bound to.
    let n = 3000;
    let unroutable = |i: usize| i.is_multiple_of(97);
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| i.to_string().into_bytes()).collect();
    let batch: Vec<Outgoing> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| Outgoing {
            exchange: &exchange,
            routing_key: if unroutable(i) { "nowhere" } else { "routed" },
            body: b,
            mandatory: true,
            headers: None,
        })
        .collect();
    let publisher = Publisher::open(&conn).await.unwrap();
    let results = publisher.publish_all(&batch).await;

    assert_eq!(results.len(), n);
    for (i, r) in results.iter().enumerate() {
        match (unroutable(i), r) {
            (true, Err(PublishError::Returned { routing_key, .. })) => {
                assert_eq!(routing_key, "nowhere")
            }
            (false, Ok(())) => {}
            (expect_unroutable, other) => {
                panic!("message {i} (unroutable: {expect_unroutable}) got {other:?}")
            }
        }
    }
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "t".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let expected: Vec<usize> = (0..n).filter(|i| !unroutable(*i)).collect();
    let mut got = Vec::with_capacity(expected.len());
    while got.len() < expected.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("every routed message arrives")
            .expect("consumer open")
            .expect("delivery");
        got.push(String::from_utf8(d.data).unwrap().parse::<usize>().unwrap());
    }
    assert_eq!(got, expected, "the broker received the batch in order");
    conn.close("done").await;
    let _ = raw.close(200, "done".into()).await;
}
