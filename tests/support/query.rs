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
    cfg
}

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

/// DB.STATUS as one map per instance.
pub fn status(c: &mut redis::Connection) -> Vec<HashMap<String, String>> {
    let v: Value = redis::cmd("DB.STATUS").query(c).expect("DB.STATUS");
    let Value::Array(items) = v else {
        panic!("DB.STATUS: {v:?}")
    };
    items
        .into_iter()
        .map(|i| {
            let fields: Vec<String> = match i {
                Value::Array(f) => f
                    .into_iter()
                    .map(|x| redis::from_redis_value(x).expect("string field"))
                    .collect(),
                Value::Map(m) => m
                    .into_iter()
                    .flat_map(|(k, v)| [k, v])
                    .map(|x| redis::from_redis_value(x).expect("string field"))
                    .collect(),
                other => panic!("DB.STATUS entry: {other:?}"),
            };
            fields
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect()
        })
        .collect()
}
