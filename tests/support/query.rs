//! QUERY helpers shared by the database tests (tests/query.rs, tests/query_lag.rs): the
//! `[database]` section for a harness cluster, QUERY and its FORMAT JSON reply, DB.STATUS as
//! maps.

use super::pg::PgCluster;
use redis::Value;
use serde_json::Value as Json;
use std::collections::HashMap;

/// `[database]` in front of `c` (the primary and every replica), with the tests' defaults
/// (probing every 50 ms, small pools) unless `extra` sets them.
pub fn database_section(c: &PgCluster, extra: &str) -> String {
    let defaults: String = [
        ("lag_probe_ms", "50"),
        ("pool_min", "2"),
        ("pool_max", "20"),
    ]
    .iter()
    .filter(|(k, _)| !extra.contains(&format!("{k} =")))
    .map(|(k, v)| format!("{k} = {v}\n"))
    .collect();
    let mut cfg = format!(
        "[database]\n{defaults}{extra}\n[database.primary]\nname = \"{}\"\nurl = \"{}\"\n",
        c.primary().name,
        c.primary().url()
    );
    for r in c.replicas() {
        cfg.push_str(&format!(
            "[[database.replicas]]\nname = \"{}\"\nurl = \"{}\"\n",
            r.name,
            r.url()
        ));
    }
    // The tests run far more QUERYs than the default limits allow (tests/rate.rs tests those).
    cfg.push_str(NO_QUERY_LIMITS);
    cfg
}

/// A `[rate]` section without the QUERY limits.
pub const NO_QUERY_LIMITS: &str = "[rate]\nquery_per_user = \"off\"\nquery_global = \"off\"\n";

pub fn query(c: &mut redis::Connection, sql: &str, rest: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd("QUERY");
    cmd.arg(sql);
    for r in rest {
        cmd.arg(*r);
    }
    cmd.query(c)
}

/// QUERY ... FORMAT JSON, parsed (a write's count of rows as a JSON number).
pub fn json(c: &mut redis::Connection, sql: &str, rest: &[&str]) -> Json {
    let mut args = rest.to_vec();
    args.extend(["FORMAT", "JSON"]);
    let v: String = match query(c, sql, &args) {
        Ok(Value::BulkString(b)) => String::from_utf8(b).expect("utf-8 JSON"),
        // A write without RETURNING answers the rows affected, whatever the FORMAT.
        Ok(Value::Int(n)) => return Json::from(n),
        other => panic!("QUERY {sql}: {other:?}"),
    };
    serde_json::from_str(&v).unwrap_or_else(|e| panic!("{e}: {v}"))
}

pub fn err(r: redis::RedisResult<Value>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// DB.STATUS as one map per instance (the closing summary left out: see `status_summary`).
pub fn status(c: &mut redis::Connection) -> Vec<HashMap<String, String>> {
    let (instances, _) = status_all(c);
    instances
}

/// DB.STATUS's closing summary: failovers done and the recent role changes.
pub fn status_summary(c: &mut redis::Connection) -> (u64, Vec<String>) {
    status_all(c).1
}

/// DB.STATUS's instances, and its summary (failovers, role changes).
type StatusAll = (Vec<HashMap<String, String>>, (u64, Vec<String>));

fn status_all(c: &mut redis::Connection) -> StatusAll {
    let v: Value = redis::cmd("DB.STATUS").query(c).expect("DB.STATUS");
    let Value::Array(mut items) = v else {
        panic!("DB.STATUS: {v:?}")
    };
    let summary = pairs(items.pop().expect("DB.STATUS summary"));
    let failovers = redis::from_redis_value(summary[0].1.clone()).expect("failovers");
    let changes = redis::from_redis_value(summary[1].1.clone()).expect("role_changes");
    let instances = items
        .into_iter()
        .map(|i| {
            pairs(i)
                .into_iter()
                .map(|(k, v)| {
                    (
                        redis::from_redis_value(k).expect("string field"),
                        redis::from_redis_value(v).expect("string value"),
                    )
                })
                .collect()
        })
        .collect();
    (instances, (failovers, changes))
}

/// A RESP2 flat array or a RESP3 map as key/value pairs.
fn pairs(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Array(f) => {
            let mut out = Vec::new();
            let mut it = f.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        Value::Map(m) => m,
        other => panic!("DB.STATUS entry: {other:?}"),
    }
}
