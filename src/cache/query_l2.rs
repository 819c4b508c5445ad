//! QUERY results in L2 (tiered mode), shared by every instance: the read path is this
//! instance's QUERY cache, then L2, then PostgreSQL.
//!
//! Each tag has a version in L2 — a counter `v` in the hash `strata:qtag:{<tag>}`, and beside
//! it the newest write position that invalidated it, the score of `lsn` in the sorted set
//! `strata:qlsn:{<tag>}` (`ZADD GT` keeps the maximum; both keys share the tag's slot on a
//! Cluster, and every command names its key first, as Cluster routing needs) — and every write (and TAGINVAL) bumps the
//! versions of the tags it invalidates before it is acknowledged; DDL bumps the global tag `*`,
//! which every entry carries. A result is stored in L2 (`strata:query:{<key>}`, postcard-encoded,
//! with the TTL of the QUERY) together with the versions its tags had *before* the database was
//! asked, and an L2 hit is served only if every version is still the same. So a result that
//! crossed a write is never served from L2, whichever instance stored it and however late it
//! landed; nothing needs deleting (stale entries are simply never valid again, and expire).
//! The `lsn` of the tags is the proof a replica-read result needs before it may be stored (see
//! `cache::query`).

use super::l2::{Keys, L2};
use super::query::QueryResult;
use redis::Value;
use std::sync::Arc;

/// The tag every result carries; bumped by DDL and whole-cache flushes.
pub const GLOBAL_TAG: &str = "*";

fn version_key(tag: &str) -> String {
    format!("strata:qtag:{{{tag}}}")
}

fn lsn_key(tag: &str) -> String {
    format!("strata:qlsn:{{{tag}}}")
}

fn entry_key(key: u128) -> String {
    format!("strata:query:{{{key:032x}}}")
}

/// The versions of a result's tags when it was read, and their newest write position.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Versions {
    pub tags: Vec<(String, u64)>,
    pub lsn: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    versions: Vec<(String, u64)>,
    result: QueryResult,
}

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(n) => (*n).max(0) as u64,
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |f| f.max(0.0) as u64),
        Value::Double(f) => f.max(0.0) as u64,
        _ => 0,
    }
}

/// The current versions of `tags` (the global tag included); `None` when L2 cannot answer.
pub async fn versions(l2: &Arc<L2>, tags: &[String]) -> Option<Versions> {
    let mut all: Vec<String> = tags.to_vec();
    all.push(GLOBAL_TAG.to_string());
    let mut pipe = redis::pipe();
    for t in &all {
        pipe.cmd("HGET").arg(version_key(t)).arg("v");
        pipe.cmd("ZSCORE").arg(lsn_key(t)).arg("lsn");
    }
    let (replies, _) = l2.run(0, false, false, &pipe, Keys::First).await.ok()?;
    if replies.iter().any(|r| matches!(r, Value::ServerError(_))) {
        return None;
    }
    let mut out = Versions::default();
    for (t, r) in all.into_iter().zip(replies.chunks(2)) {
        out.tags.push((t, int(&r[0])));
        out.lsn = out.lsn.max(int(&r[1]));
    }
    Some(out)
}

/// A valid L2 entry for `key`: the result, its tags (without the global one) and the time it
/// has left in milliseconds.
pub async fn lookup(l2: &Arc<L2>, key: u128) -> Option<(QueryResult, Vec<String>, u64)> {
    let k = entry_key(key);
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(&k).cmd("PTTL").arg(&k);
    let (replies, _) = l2.run(0, false, false, &pipe, Keys::First).await.ok()?;
    let Some(Value::BulkString(raw)) = replies.first() else {
        return None;
    };
    let ttl = match replies.get(1) {
        Some(Value::Int(n)) if *n > 0 => *n as u64,
        _ => return None,
    };
    let stored: Stored = postcard::from_bytes(raw).ok()?;
    let names: Vec<String> = stored.versions.iter().map(|(t, _)| t.clone()).collect();
    let now = versions(l2, &names[..names.len().saturating_sub(1)]).await?;
    if now.tags != stored.versions {
        return None;
    }
    let tags = names
        .into_iter()
        .filter(|t| t != GLOBAL_TAG)
        .collect::<Vec<_>>();
    Some((stored.result, tags, ttl))
}

/// Stores a result read under `versions` (best effort: an unreachable L2 stores nothing).
pub async fn store(
    l2: &Arc<L2>,
    key: u128,
    result: &QueryResult,
    versions: &Versions,
    ttl_ms: u64,
) {
    let stored = Stored {
        versions: versions.tags.clone(),
        result: result.clone(),
    };
    let Ok(raw) = postcard::to_allocvec(&stored) else {
        return;
    };
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(entry_key(key))
        .arg(raw)
        .arg("PX")
        .arg(ttl_ms.max(1));
    let _ = l2.run(0, false, false, &pipe, Keys::First).await;
}

/// Adds to `pipe` the version bumps of an invalidation: `tags` at write position `lsn`, or
/// everything (`flush`).
pub fn bump(pipe: &mut redis::Pipeline, tags: &[String], lsn: u64, flush: bool) {
    let global = [GLOBAL_TAG.to_string()];
    let tags = if flush { &global[..] } else { tags };
    for t in tags {
        pipe.cmd("HINCRBY").arg(version_key(t)).arg("v").arg(1);
        pipe.cmd("ZADD")
            .arg(lsn_key(t))
            .arg("GT")
            .arg(lsn)
            .arg("lsn");
    }
}
