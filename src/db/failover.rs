//! The actions that change who replicates from whom, all on administrative connections
//! (`database.admin_user`): promoting a replica (`pg_promote`), keeping
//! `synchronous_standby_names` valid on the new primary, repointing replicas at it
//! (`ALTER SYSTEM SET primary_conninfo` + `pg_reload_conf()`), the planned switchover of
//! DB.FAILOVER (fence the old primary, wait for the target to catch up, promote, rejoin the old
//! primary), and running `health.resync_command`. `health` decides when; this module does.

use super::database::Database;
use super::router::{lsn_text, parse_lsn};
use std::time::{Duration, Instant};

/// An administrative connection to instance `i`, with its driver task.
async fn admin(db: &Database, i: usize) -> Result<tokio_postgres::Client, String> {
    let inst = &db.instances[i];
    let mut pg = inst.admin.clone();
    pg.application_name("strata-admin");
    let timeout = Duration::from_millis(db.health.check_timeout_ms);
    match tokio::time::timeout(timeout, super::tls::connect(&pg)).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            Ok(client)
        }
        Ok(Err(e)) => Err(format!("{}: {}", inst.name, super::error_chain(&e))),
        Err(_) => Err(format!("{}: connect timed out", inst.name)),
    }
}

/// Runs one statement, returning the first column of the first row as text.
async fn one(client: &tokio_postgres::Client, sql: &str) -> Result<Option<String>, String> {
    let msgs = client
        .simple_query(sql)
        .await
        .map_err(|e| super::error_chain(&e))?;
    Ok(msgs
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .flatten())
}

/// A string as an SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `primary_conninfo` replica `replica` needs to stream from `primary`.
pub fn conninfo(db: &Database, replica: usize, primary: usize) -> String {
    let p = &db.instances[primary];
    let base = db
        .health
        .replication_conninfo
        .replace("{name}", &db.instances[replica].name);
    format!("host={} port={} {base}", p.host, p.port)
}

/// Points replica `i` at primary `p` (no restart: the WAL receiver reconnects, following the
/// new timeline).
pub async fn repoint(db: &Database, i: usize, p: usize) -> Result<(), String> {
    let client = admin(db, i).await?;
    one(
        &client,
        &format!(
            "ALTER SYSTEM SET primary_conninfo = {}",
            literal(&conninfo(db, i, p))
        ),
    )
    .await?;
    one(&client, "SELECT pg_catalog.pg_reload_conf()").await?;
    Ok(())
}

/// `synchronous_standby_names` for a primary whose standbys are `names`, keeping the method
/// and count of the old setting (`''` stays `''`; the count never exceeds the standbys, and
/// without standbys it is emptied so that commits do not wait forever).
pub fn sync_names(old: &str, names: &[String]) -> String {
    let old = old.trim();
    if old.is_empty() || names.is_empty() {
        return String::new();
    }
    let upper = old.to_ascii_uppercase();
    let (method, rest) = if upper.starts_with("ANY ") {
        ("ANY ", &old[4..])
    } else if upper.starts_with("FIRST ") {
        ("FIRST ", &old[6..])
    } else {
        ("", old)
    };
    let rest = rest.trim();
    let count = rest
        .split_once('(')
        .and_then(|(n, _)| n.trim().parse::<usize>().ok());
    let n = count.unwrap_or(1).clamp(1, names.len());
    let list = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let method = if method.is_empty() && count.is_none() {
        "FIRST "
    } else {
        method
    };
    format!("{method}{n} ({list})")
}

/// Promotes `new` (the old primary was `old`): `pg_promote`, a valid
/// `synchronous_standby_names`, the other replicas repointed, the roles switched and the
/// cached QUERY results invalidated. Returns a one-line summary.
pub async fn promote(db: &Database, old: usize, new: usize, why: &str) -> Result<String, String> {
    let started = Instant::now();
    db.set_primary(
        None,
        &format!("{why}: promoting {}", db.instances[new].name),
    );
    let client = match admin(db, new).await {
        Ok(c) => c,
        Err(e) => {
            db.set_primary(Some(old), &format!("{why} aborted"));
            return Err(e);
        }
    };
    let promoted = one(&client, "SELECT pg_catalog.pg_promote(true, 60)::text").await;
    if promoted.as_ref().ok().and_then(|v| v.as_deref()) != Some("true") {
        // It may have been promoted meanwhile by someone else: look.
        let in_recovery = one(&client, "SELECT pg_catalog.pg_is_in_recovery()::text").await;
        if in_recovery.as_ref().ok().and_then(|v| v.as_deref()) != Some("false") {
            db.set_primary(Some(old), &format!("{why} aborted"));
            return Err(format!(
                "pg_promote on {} failed: {}",
                db.instances[new].name,
                promoted.err().unwrap_or_else(|| "it returned false".into())
            ));
        }
    }
    // Keep synchronous replication able to commit: the other instances as standbys.
    let others: Vec<usize> = (0..db.instances.len()).filter(|&i| i != new).collect();
    let names: Vec<String> = others
        .iter()
        .map(|&i| db.instances[i].name.clone())
        .collect();
    let old_sync = one(&client, "SHOW synchronous_standby_names")
        .await?
        .unwrap_or_default();
    let new_sync = sync_names(&old_sync, &names);
    if new_sync != old_sync {
        one(
            &client,
            &format!(
                "ALTER SYSTEM SET synchronous_standby_names = {}",
                literal(&new_sync)
            ),
        )
        .await?;
        one(&client, "SELECT pg_catalog.pg_reload_conf()").await?;
    }
    let mut repointed = Vec::new();
    for &i in others.iter().filter(|&&i| i != old) {
        match repoint(db, i, new).await {
            Ok(()) => repointed.push(db.instances[i].name.clone()),
            Err(e) => {
                tracing::warn!(instance = %db.instances[i].name, error = %e, "repoint after promotion failed")
            }
        }
    }
    db.set_primary(Some(new), why);
    db.roles_changed().await;
    Ok(format!(
        "{} promoted in {} ms (was: {}); replicas repointed: [{}]",
        db.instances[new].name,
        started.elapsed().as_millis(),
        db.instances[old].name,
        repointed.join(", ")
    ))
}

/// Runs `health.resync_command` for instance `i`, to follow primary `p`.
pub async fn resync(db: &Database, i: usize, p: usize) -> Result<String, String> {
    let cmd = &db.health.resync_command;
    if cmd.is_empty() {
        return Err("no health.resync_command is configured".into());
    }
    let (inst, primary) = (&db.instances[i], &db.instances[p]);
    let vars = [
        ("{name}", "STRATA_INSTANCE", inst.name.clone()),
        ("{host}", "STRATA_INSTANCE_HOST", inst.host.clone()),
        ("{port}", "STRATA_INSTANCE_PORT", inst.port.to_string()),
        (
            "{primary_name}",
            "STRATA_PRIMARY_NAME",
            primary.name.clone(),
        ),
        (
            "{primary_host}",
            "STRATA_PRIMARY_HOST",
            primary.host.clone(),
        ),
        (
            "{primary_port}",
            "STRATA_PRIMARY_PORT",
            primary.port.to_string(),
        ),
    ];
    let mut line = cmd.clone();
    // Longest placeholders first: {primary_name} before {name}.
    for (ph, _, v) in vars.iter().rev() {
        line = line.replace(ph, v);
    }
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(&line).kill_on_drop(true);
    for (_, env, v) in &vars {
        command.env(env, v);
    }
    command.env("STRATA_PRIMARY_CONNINFO", conninfo(db, i, p));
    tracing::warn!(instance = %inst.name, command = %line, "running resync_command");
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(1800), command.output())
        .await
        .map_err(|_| "resync_command timed out after 30 minutes".to_string())?
        .map_err(|e| format!("cannot run resync_command: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: String = text
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ");
    tracing::warn!(instance = %inst.name, status = %out.status, took_ms = started.elapsed().as_millis() as u64, output = %text, "resync_command finished");
    if out.status.success() {
        Ok(format!("{} ({} ms)", tail, started.elapsed().as_millis()))
    } else {
        Err(format!("{} exited with {}: {tail}", line, out.status))
    }
}

/// DB.FAILOVER [TO <name>]: a planned switchover. Fences the primary (read-only, its client
/// sessions ended), waits for the target to replay everything it wrote, promotes the target,
/// repoints the others and rejoins the old primary through `resync_command`.
pub async fn switchover(db: &Database, to: Option<&str>) -> Result<String, String> {
    let _guard = db.switching.lock().await;
    let old = db
        .primary_index()
        .ok_or("no primary to switch over from (a failover is under way)")?;
    let target = match to {
        Some(name) => {
            let t = db
                .by_name(name)
                .ok_or_else(|| format!("no database instance is called '{name}'"))?;
            if t.index == old {
                return Err(format!("{name} is already the primary"));
            }
            t.index
        }
        None => db
            .replicas()
            .filter(|r| r.in_rotation() && r.health.is_replica())
            .max_by_key(|r| {
                (
                    r.lag.sample().map_or(0, |s| s.replay_lsn),
                    usize::MAX - r.index,
                )
            })
            .map(|r| r.index)
            .ok_or("no healthy replica to switch over to")?,
    };
    let started = Instant::now();
    let fence = admin(db, old).await?;
    let target_client = admin(db, target).await?;
    if one(
        &target_client,
        "SELECT pg_catalog.pg_is_in_recovery()::text",
    )
    .await?
        != Some("true".into())
    {
        return Err(format!("{} is not a replica", db.instances[target].name));
    }
    // Fence: no new writes, and the sessions that could write are ended.
    one(
        &fence,
        "ALTER SYSTEM SET default_transaction_read_only = on",
    )
    .await?;
    one(&fence, "SELECT pg_catalog.pg_reload_conf()").await?;
    db.set_primary(
        None,
        &format!("switchover to {} started", db.instances[target].name),
    );
    one(
        &fence,
        "SELECT count(pg_catalog.pg_terminate_backend(pid, 5000)) FROM pg_catalog.pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid()",
    )
    .await?;
    let unfence = || async {
        let _ = one(&fence, "ALTER SYSTEM RESET default_transaction_read_only").await;
        let _ = one(&fence, "SELECT pg_catalog.pg_reload_conf()").await;
        db.set_primary(Some(old), "switchover aborted");
    };
    let fence_lsn = match one(&fence, "SELECT pg_catalog.pg_current_wal_lsn()::text").await {
        Ok(Some(l)) => parse_lsn(&l).unwrap_or(u64::MAX),
        _ => {
            unfence().await;
            return Err("cannot read the primary's WAL position".into());
        }
    };
    // Wait for the target to replay it all.
    let deadline = Instant::now() + Duration::from_secs(db.health.switchover_timeout_s);
    loop {
        let replayed = one(
            &target_client,
            "SELECT pg_catalog.pg_last_wal_replay_lsn()::text",
        )
        .await
        .ok()
        .flatten()
        .and_then(|l| parse_lsn(&l))
        .unwrap_or(0);
        if replayed >= fence_lsn {
            break;
        }
        if Instant::now() >= deadline {
            unfence().await;
            return Err(format!(
                "{} did not catch up within {} s (replayed {}, needs {})",
                db.instances[target].name,
                db.health.switchover_timeout_s,
                lsn_text(replayed),
                lsn_text(fence_lsn)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = started.elapsed();
    let summary = match promote(db, old, target, "switchover").await {
        Ok(s) => s,
        Err(e) => {
            unfence().await;
            return Err(e);
        }
    };
    db.failovers
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The old primary's own setting must not make it read-only should it be promoted later.
    let _ = one(&fence, "ALTER SYSTEM RESET default_transaction_read_only").await;
    drop(fence);
    let rejoin = if db.health.resync_command.is_empty() {
        format!(
            "{} stays fenced (read-only, out of rotation): set health.resync_command to rejoin it",
            db.instances[old].name
        )
    } else {
        match resync(db, old, target).await {
            Ok(out) => format!("{} rejoined as a replica: {out}", db.instances[old].name),
            Err(e) => format!("{} did not rejoin: {e}", db.instances[old].name),
        }
    };
    let text = format!(
        "switched over from {} to {}: caught up in {} ms; {summary}; {rejoin}",
        db.instances[old].name,
        db.instances[target].name,
        caught_up.as_millis()
    );
    db.notify(
        "switchover_finished",
        crate::observe::alerts::Severity::Warning,
        text.clone(),
    );
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_standby_names_follow_the_standbys() {
        let names = vec!["r2".to_string(), "r3".to_string()];
        assert_eq!(sync_names("", &names), "");
        assert_eq!(
            sync_names("ANY 1 (p0, r1, r2, r3)", &names),
            "ANY 1 (\"r2\", \"r3\")"
        );
        assert_eq!(
            sync_names("FIRST 3 (a, b, c)", &names),
            "FIRST 2 (\"r2\", \"r3\")"
        );
        assert_eq!(sync_names("2 (a, b, c)", &names), "2 (\"r2\", \"r3\")");
        assert_eq!(sync_names("*", &names), "FIRST 1 (\"r2\", \"r3\")");
        assert_eq!(sync_names("ANY 1 (a)", &[]), "");
    }
}
