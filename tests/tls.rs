
#[test]
fn blocking_pops_and_pub_sub_work_over_tls() {
    let pki = Pki::new("block");
    let tls_port = free_port();
    let s = Strata::with_config(&pki.server_toml(tls_port, "no"));
    let client = pki.client(tls_port, "ca", None);
    let waiter = std::thread::spawn(move || {
        let mut c = client.get_connection().unwrap();
        redis::cmd("BLPOP")
            .arg("q")
            .arg(10)
            .query::<Option<(String, String)>>(&mut c)
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut plain = s.conn();
    let _: () = plain.rpush("q", "job").unwrap();
    assert_eq!(
        waiter.join().unwrap(),
        Some(("q".to_string(), "job".to_string()))
    );

    let mut sub_conn = pki.client(tls_port, "ca", None).get_connection().unwrap();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("news").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(support::wait_until(Duration::from_secs(5), || {
        plain.publish::<_, _, i64>("news", "hello").unwrap() == 1
    }));
    let msg = sub.get_message().unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}
