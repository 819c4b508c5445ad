//! Pub/sub through raw sockets against the real binary (and redis-server for the exact bytes):
//! RESP2 arrays and RESP3 pushes, pattern delivery, and the bound on a subscriber that never
//! reads (it is disconnected once its backlog passes the pubsub output limit, and the
//! server's memory stays bounded while publishers keep going).

mod support;

use std::time::Duration;
use support::{rss_kib, wait_until, RedisServer, Strata};

fn exchange(server_port: u16, resp3: bool) -> Vec<u8> {
    let mut sub = support::Raw::connect(server_port);
    let mut publisher = support::Raw::connect(server_port);
    let mut got = Vec::new();
    if resp3 {
        sub.cmd(&[b"HELLO", b"3"]);
        sub.reply();
    }
    sub.cmd(&[b"SUBSCRIBE", b"news", b"sport"]);
    got.extend(sub.reply());
    got.extend(sub.reply());
    sub.cmd(&[b"PSUBSCRIBE", b"n*"]);
    got.extend(sub.reply());
    publisher.cmd(&[b"PUBLISH", b"news", b"hello"]);
    got.extend(publisher.reply());
    // The direct subscription's message comes before the pattern's, as in Redis.
    got.extend(sub.reply());
    got.extend(sub.reply());
    // Named, so the order is defined (UNSUBSCRIBE without names follows Redis's hash order).
    sub.cmd(&[b"UNSUBSCRIBE", b"sport", b"news"]);
    got.extend(sub.reply());
    got.extend(sub.reply());
    sub.cmd(&[b"UNSUBSCRIBE"]);
    got.extend(sub.reply());
    sub.cmd(&[b"PUNSUBSCRIBE", b"n*", b"other"]);
    got.extend(sub.reply());
    got.extend(sub.reply());
    got
}

#[test]
fn messages_and_confirmations_are_byte_identical_to_redis() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    for resp3 in [false, true] {
        let want = exchange(redis.port, resp3);
        let got = exchange(strata.port, resp3);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "resp3={resp3}"
        );
    }
}

#[test]
fn a_subscriber_that_never_reads_is_cut_off_and_memory_stays_bounded() {
    let strata = Strata::with_config("[server]\nclient_output_buffer_limit_pubsub = \"8mb\"\n");
    let mut slow = support::Raw::connect(strata.port);
    slow.cmd(&[b"SUBSCRIBE", b"firehose"]);
    slow.reply();
    let before = rss_kib(strata.pid());
    let payload = vec![b'x'; 1 << 20];
    let mut publisher = strata.conn();
    let mut receivers = Vec::new();
    for _ in 0..200 {
        let n: i64 = redis::cmd("PUBLISH")
            .arg("firehose")
            .arg(&payload[..])
            .query(&mut publisher)
            .expect("publish");
        receivers.push(n);
    }
    // Delivered while the backlog fit, then the subscriber was dropped.
    assert_eq!(receivers[0], 1);
    assert_eq!(
        *receivers.last().unwrap(),
        0,
        "slow subscriber still counted"
    );
    let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("firehose")
        .query(&mut publisher)
        .expect("numsub");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let v: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("firehose")
                .query(&mut publisher)
                .unwrap_or_default();
            v.first().is_some_and(|(_, n)| *n == 0)
        }),
        "subscriber not removed: {numsub:?}"
    );
    let grown = rss_kib(strata.pid()).saturating_sub(before);
    assert!(
        grown < 100 * 1024,
        "RSS grew by {grown} KiB for 200 MiB published"
    );
    // Everyone else is still served.
    let pong: String = redis::cmd("PING").query(&mut publisher).expect("ping");
    assert_eq!(pong, "PONG");
    assert!(
        slow.closed(),
        "the slow subscriber's connection should be closed"
    );
}
