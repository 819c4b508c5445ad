//! What a QUERY's names mean, from PostgreSQL's catalog: which relations unqualified names
//! resolve to, which base tables a read depends on (its cache tags), which tables a write
//! invalidates, and whether the functions it calls are immutable. `classify` supplies the names
//! from the SQL text; this module only reads the catalog (pg_class, pg_inherits, pg_rewrite,
//! pg_depend, pg_constraint, pg_trigger, pg_proc) in a bounded number of round trips over any
//! `tokio_postgres::GenericClient`, one per lookup except for trigger rounds. It never runs the
//! statement itself. `Catalog` caches the answers until `invalidate` (DDL and catalog-change
//! notifications call it).
//!
//! Tags are `schema.table` with PostgreSQL's own spelling (no quotes); the caller prefixes them
//! (`table:`).
//!
//! Rules:
//! - **Resolution** follows a `SearchPath` (the schemas `current_schemas(true)` lists for the
//!   session that will run the query): a qualified name is looked up in its schema, an
//!   unqualified one in the first schema of the path that has a relation of that name, any kind,
//!   as PostgreSQL does. Names that resolve to nothing are skipped (and not cached): the
//!   statement itself will fail with PostgreSQL's error.
//! - **Read tags** = every relation in the closure of the tables read: a view (`relkind 'v'`)
//!   is expanded through its rules (pg_rewrite → pg_depend) to the relations it reads,
//!   recursively, and keeps its own tag; a materialized view is *not* expanded — it is cached
//!   data itself, changed only by REFRESH, which writes it. For every relation reached, its
//!   inheritance ancestors and descendants (`pg_inherits`, both ways, partitions included) are
//!   added: a read of a parent reads its children.
//! - **Write tags** = the closure of the tables written over these edges: inheritance
//!   descendants (a write without ONLY reaches them); tables whose foreign keys reference a
//!   written table with ON DELETE or ON UPDATE CASCADE / SET NULL / SET DEFAULT; relations named
//!   by the rules of a written relation (an auto-updatable view's base tables, DO ALSO / INSTEAD
//!   actions); and tables written by the SQL or PL/pgSQL trigger functions of a written table
//!   (best effort, below). Then every inheritance ancestor of the closure is added. Every
//!   traversal keeps a visited set (SQL `UNION`), so cycles (two tables cascading to each
//!   other) terminate.
//! - Parents and children are tied on both sides, so either side alone suffices: a write tagged
//!   only with the table it names (a DB.TRACK notification names the table its trigger fired
//!   on) still reaches reads of its parents (they carry the child's tag) and of its children
//!   (they carry the parent's tag). The price: a write to one partition also invalidates cached
//!   reads of its sibling partitions, through the parent's tag.
//! - **Volatility**: a call is volatile unless every `pg_proc` overload it may reach is
//!   immutable (`provolatile = 'i'`): the overloads of its name, in its schema or in any schema
//!   of the path when unqualified, that accept its number of arguments (defaults and VARIADIC
//!   counted; any number when `classify` could not count them). Argument types are not
//!   matched, so `date_part('year', d)` is volatile because one overload takes a timestamptz.
//!   A call that reaches no overload counts as volatile, and so do the SQL value functions
//!   (`current_user`, `CURRENT_TIMESTAMP`, ...), keywords rather than pg_proc calls. A read's
//!   dependencies are volatile as well when a view in its closure calls a function that is not
//!   immutable, when a table has row-level security (results depend on the role and settings),
//!   when a foreign table is read (its data changes where no trigger sees it) or when a system
//!   catalog is read (DDL changes it).
//!
//! Not supported (documented limits, all on the side of fewer invalidations, which a cache TTL
//! bounds): trigger functions in languages other than SQL and PL/pgSQL, dynamic SQL (`EXECUTE`)
//! and writes made by the functions a trigger calls; trigger sources are scanned for
//! `INSERT INTO` / `UPDATE` / `DELETE FROM` / `MERGE INTO` / `TRUNCATE` targets with the SQL
//! tokenizer, resolved through the function's own `search_path` setting, else the session's,
//! and followed for at most `MAX_TRIGGER_ROUNDS` rounds. View volatility: built-in functions
//! are pinned and absent from pg_depend, so every name called in `pg_get_viewdef` is matched
//! against pg_proc by name alone (any schema, any overload: over-reporting), plus pg_depend for
//! other functions and operators. Casts and operators in the query text itself are not checked.

use crate::db::classify::{normalize_ident, FunctionCall, Name, SQL_VALUE_FUNCTIONS};
use parking_lot::Mutex;
use sqlparser::ast::Ident;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use tokio_postgres::GenericClient;

/// How many trigger rounds a write closure follows (a trigger's target may have triggers).
const MAX_TRIGGER_ROUNDS: usize = 16;

/// Schemas whose relations change through DDL, not writes.
const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "pg_toast"];

/// A catalog lookup that failed (connection lost, permission denied on a catalog, ...).
#[derive(Debug)]
pub struct CatalogError(pub tokio_postgres::Error);

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(
                f,
                "catalog lookup failed: {} {}",
                db.code().code(),
                db.message()
            ),
            None => write!(f, "catalog lookup failed: {}", self.0),
        }
    }
}

impl std::error::Error for CatalogError {}

impl From<tokio_postgres::Error> for CatalogError {
    fn from(e: tokio_postgres::Error) -> CatalogError {
        CatalogError(e)
    }
}

/// The schemas unqualified names are looked up in, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchPath(Vec<String>);

impl SearchPath {
    /// A path of schema names (already normalized). `pg_catalog` is searched first unless it
    /// is listed, as PostgreSQL does.
    pub fn new(schemas: Vec<String>) -> SearchPath {
        let mut schemas = schemas;
        if !schemas.iter().any(|s| s == "pg_catalog") {
            schemas.insert(0, "pg_catalog".to_string());
        }
        SearchPath(schemas)
    }

    /// The effective path of the client's session: `current_schemas(true)` (`$user` expanded,
    /// missing schemas dropped, implicit schemas included).
    pub async fn current<C: GenericClient + Sync>(client: &C) -> Result<SearchPath, CatalogError> {
        let row = client
            .query_one("SELECT pg_catalog.current_schemas(true)::text[]", &[])
            .await?;
        Ok(SearchPath(row.try_get(0)?))
    }

    pub fn schemas(&self) -> &[String] {
        &self.0
    }

    fn key(&self) -> String {
        self.0.join("\u{0}")
    }
}

/// What a relation is (`pg_class.relkind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RelKind {
    Table,
    PartitionedTable,
    View,
    MaterializedView,
    ForeignTable,
    Sequence,
    /// Indexes, composite types, TOAST tables: not something a query reads rows from.
    Other(char),
}

impl RelKind {
    fn from_relkind(text: &str) -> RelKind {
        match text {
            "r" => RelKind::Table,
            "p" => RelKind::PartitionedTable,
            "v" => RelKind::View,
            "m" => RelKind::MaterializedView,
            "f" => RelKind::ForeignTable,
            "S" => RelKind::Sequence,
            other => RelKind::Other(other.chars().next().unwrap_or('?')),
        }
    }
}

/// A relation a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub kind: RelKind,
}

impl QualifiedTable {
    /// `schema.name`, the tag form.
    pub fn tag(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// The tags of a read and whether its result can change without a write Strata sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependencies {
    pub tags: BTreeSet<String>,
    /// See the module documentation (views calling non-immutable functions, row-level
    /// security, foreign tables, system catalogs).
    pub volatile: bool,
}

const RESOLVE_SQL: &str = "
SELECT u.i, c.oid, c.nspname, c.relname, c.relkind
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(nsp, rel, i)
CROSS JOIN LATERAL (
    SELECT c.oid, n.nspname::text AS nspname, c.relname::text AS relname,
           c.relkind::text AS relkind
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = u.rel
      AND CASE WHEN u.nsp IS NULL THEN n.nspname = ANY($3::text[]) ELSE n.nspname = u.nsp END
    ORDER BY array_position($3::text[], n.nspname::text)
    LIMIT 1
) c
ORDER BY u.i";

/// Resolves relation names through `path` (see the module documentation); names that resolve
/// to nothing are skipped, duplicates reported once, in the order given.
pub async fn resolve<C: GenericClient + Sync>(
    client: &C,
    names: &[Name],
    path: &SearchPath,
) -> Result<Vec<QualifiedTable>, CatalogError> {
    Ok(distinct(resolve_each(client, names, path).await?))
}

/// `resolve` answering for each name in turn (`None`: resolves to nothing).
async fn resolve_each<C: GenericClient + Sync>(
    client: &C,
    names: &[Name],
    path: &SearchPath,
) -> Result<Vec<Option<QualifiedTable>>, CatalogError> {
    let mut out = vec![None; names.len()];
    if names.is_empty() {
        return Ok(out);
    }
    let schemas: Vec<Option<String>> = names.iter().map(|n| n.schema.clone()).collect();
    let rels: Vec<String> = names.iter().map(|n| n.name.clone()).collect();
    let rows = client
        .query(RESOLVE_SQL, &[&schemas, &rels, &path.0])
        .await?;
    for row in rows {
        let position: i64 = row.try_get(0)?;
        let table = QualifiedTable {
            oid: row.try_get(1)?,
            schema: row.try_get(2)?,
            name: row.try_get(3)?,
            kind: RelKind::from_relkind(row.try_get::<_, &str>(4)?),
        };
        // WITH ORDINALITY counts from 1.
        if let Some(slot) = usize::try_from(position - 1)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            *slot = Some(table);
        }
    }
    Ok(out)
}

fn distinct(tables: Vec<Option<QualifiedTable>>) -> Vec<QualifiedTable> {
    let mut out: Vec<QualifiedTable> = Vec::new();
    for table in tables.into_iter().flatten() {
        if !out.iter().any(|t| t.oid == table.oid) {
            out.push(table);
        }
    }
    out
}

/// The read closure (views expanded, then ancestors and descendants), each relation with its
/// kind, row-level security and, for views, whether it calls something not immutable: a
/// function or operator in pg_depend, a SQL value function keyword in its definition, or a name
/// called in its definition that matches a pg_proc entry that is not immutable.
const READ_SQL: &str = r"
WITH RECURSIVE base(oid) AS (
    SELECT unnest($1::oid[])
  UNION
    SELECT d.refobjid
    FROM base b
    JOIN pg_catalog.pg_class bc ON bc.oid = b.oid AND bc.relkind = 'v'
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = b.oid
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass
        AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass
    WHERE d.refobjid <> b.oid
), up(oid) AS (
    SELECT oid FROM base
  UNION
    SELECT i.inhparent FROM up JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.oid
), down(oid) AS (
    SELECT oid FROM base
  UNION
    SELECT i.inhrelid FROM down JOIN pg_catalog.pg_inherits i ON i.inhparent = down.oid
), rels AS (
    SELECT oid FROM up UNION SELECT oid FROM down
)
SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relrowsecurity,
    CASE WHEN c.relkind <> 'v' THEN false ELSE (
        EXISTS (
            SELECT 1
            FROM pg_catalog.pg_rewrite r
            JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass
                AND d.objid = r.oid
            LEFT JOIN pg_catalog.pg_operator o ON d.refclassid = 'pg_catalog.pg_operator'::regclass
                AND o.oid = d.refobjid
            JOIN pg_catalog.pg_proc p ON p.oid = CASE
                WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass THEN d.refobjid
                ELSE o.oprcode::oid END
            WHERE r.ev_class = c.oid AND p.provolatile <> 'i'
        )
        OR pg_catalog.pg_get_viewdef(c.oid) ~* '\m(current_(catalog|date|role|schema|time|timestamp|user)|localtime|localtimestamp|session_user|system_user|user)\M'
        OR EXISTS (
            SELECT 1
            FROM regexp_matches(pg_catalog.pg_get_viewdef(c.oid),
                                '([[:alpha:]_][[:alnum:]_$]*)\s*\(', 'g') AS m(name)
            JOIN pg_catalog.pg_proc p ON p.proname = lower(m.name[1])
            WHERE p.provolatile <> 'i'
        )
    ) END
FROM rels
JOIN pg_catalog.pg_class c ON c.oid = rels.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";

/// The tags of a read of `tables` (see the module documentation).
pub async fn read_dependencies<C: GenericClient + Sync>(
    client: &C,
    tables: &[QualifiedTable],
) -> Result<Dependencies, CatalogError> {
    let mut deps = Dependencies::default();
    if tables.is_empty() {
        return Ok(deps);
    }
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    for row in client.query(READ_SQL, &[&oids]).await? {
        let schema: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let kind = RelKind::from_relkind(row.try_get::<_, &str>(2)?);
        let row_security: bool = row.try_get(3)?;
        let volatile_view: bool = row.try_get(4)?;
        deps.volatile |= volatile_view
            || row_security
            || kind == RelKind::ForeignTable
            || SYSTEM_SCHEMAS.contains(&schema.as_str());
        deps.tags.insert(format!("{schema}.{name}"));
    }
    Ok(deps)
}

const WRITE_SQL: &str = "
WITH RECURSIVE edges(src, dst) AS (
    SELECT inhparent, inhrelid FROM pg_catalog.pg_inherits
  UNION ALL
    SELECT confrelid, conrelid FROM pg_catalog.pg_constraint
    WHERE contype = 'f'
      AND (confdeltype IN ('c', 'n', 'd') OR confupdtype IN ('c', 'n', 'd'))
  UNION ALL
    SELECT r.ev_class, d.refobjid
    FROM pg_catalog.pg_rewrite r
    JOIN pg_catalog.pg_class rc ON rc.oid = r.ev_class AND rc.relkind <> 'm'
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass
        AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass
    WHERE d.refobjid <> r.ev_class
), w(oid) AS (
    SELECT unnest($1::oid[])
  UNION
    SELECT e.dst FROM w JOIN edges e ON e.src = w.oid
), up(oid) AS (
    SELECT oid FROM w
  UNION
    SELECT i.inhparent FROM up JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.oid
)
SELECT c.oid, n.nspname::text, c.relname::text, c.oid IN (SELECT oid FROM w)
FROM up
JOIN pg_catalog.pg_class c ON c.oid = up.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";

const TRIGGERS_SQL: &str = "
SELECT p.prosrc, p.proconfig
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE t.tgrelid = ANY($1::oid[]) AND l.lanname IN ('plpgsql', 'sql')";

/// The tags a write to `tables` invalidates (see the module documentation). `path` resolves
/// the names trigger functions write when they do not set a search_path of their own.
pub async fn write_invalidations<C: GenericClient + Sync>(
    client: &C,
    tables: &[QualifiedTable],
    path: &SearchPath,
) -> Result<BTreeSet<String>, CatalogError> {
    let mut roots: BTreeSet<u32> = tables.iter().map(|t| t.oid).collect();
    let mut tags = BTreeSet::new();
    let mut scanned: BTreeSet<u32> = BTreeSet::new();
    for _ in 0..MAX_TRIGGER_ROUNDS {
        if roots.is_empty() {
            break;
        }
        let oids: Vec<u32> = roots.iter().copied().collect();
        let mut written = Vec::new();
        for row in client.query(WRITE_SQL, &[&oids]).await? {
            let oid: u32 = row.try_get(0)?;
            let schema: String = row.try_get(1)?;
            let name: String = row.try_get(2)?;
            tags.insert(format!("{schema}.{name}"));
            if row.try_get::<_, bool>(3)? && scanned.insert(oid) {
                written.push(oid);
            }
        }
        let mut next = BTreeSet::new();
        for (names, fn_path) in trigger_targets(client, &written, path).await? {
            for table in resolve(client, &names, &fn_path).await? {
                if !scanned.contains(&table.oid) {
                    next.insert(table.oid);
                }
            }
        }
        roots = next;
    }
    Ok(tags)
}

/// The names the trigger functions of `oids` write, each with the path to resolve them in.
async fn trigger_targets<C: GenericClient + Sync>(
    client: &C,
    oids: &[u32],
    path: &SearchPath,
) -> Result<Vec<(Vec<Name>, SearchPath)>, CatalogError> {
    if oids.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for row in client.query(TRIGGERS_SQL, &[&oids]).await? {
        let source: String = row.try_get(0)?;
        let config: Option<Vec<String>> = row.try_get(1)?;
        let names = trigger_write_targets(&source);
        if names.is_empty() {
            continue;
        }
        let fn_path = config
            .iter()
            .flatten()
            .find_map(|setting| setting.strip_prefix("search_path="))
            .map(parse_search_path)
            .unwrap_or_else(|| path.clone());
        out.push((names, fn_path));
    }
    Ok(out)
}

/// A `search_path` setting's value as a path (`$user` and `pg_temp` dropped).
fn parse_search_path(value: &str) -> SearchPath {
    let schemas = value
        .split(',')
        .map(str::trim)
        .filter_map(|s| {
            let s = match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => s.to_ascii_lowercase(),
            };
            (!s.is_empty() && s != "$user" && !s.starts_with("pg_temp")).then_some(s)
        })
        .collect();
    SearchPath::new(schemas)
}

/// The tables a SQL or PL/pgSQL function body writes, by a token scan: the targets of
/// `INSERT INTO`, `UPDATE [ONLY]`, `DELETE FROM [ONLY]`, `MERGE INTO [ONLY]` and
/// `TRUNCATE [TABLE] [ONLY] a, b`. Dynamic SQL (`EXECUTE '...'`) is not seen; a body the
/// tokenizer rejects yields nothing.
pub fn trigger_write_targets(source: &str) -> Vec<Name> {
    #[derive(PartialEq)]
    enum Tok {
        Word { upper: String, ident: Ident },
        Period,
        Comma,
        Other,
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, source).tokenize() else {
        return Vec::new();
    };
    let toks: Vec<Tok> = tokens
        .into_iter()
        .filter_map(|t| match t {
            Token::Whitespace(_) | Token::EOF => None,
            Token::Word(w) => Some(Tok::Word {
                upper: if w.quote_style.is_none() {
                    w.value.to_ascii_uppercase()
                } else {
                    String::new()
                },
                ident: Ident {
                    value: w.value,
                    quote_style: w.quote_style,
                    span: sqlparser::tokenizer::Span::empty(),
                },
            }),
            Token::Period => Some(Tok::Period),
            Token::Comma => Some(Tok::Comma),
            _ => Some(Tok::Other),
        })
        .collect();
    let upper = |i: usize| match toks.get(i) {
        Some(Tok::Word { upper, .. }) => upper.as_str(),
        _ => "",
    };
    // A possibly qualified name at `i`: (name, index after it).
    let name_at = |i: usize| -> Option<(Name, usize)> {
        let Some(Tok::Word { ident: first, .. }) = toks.get(i) else {
            return None;
        };
        if let (Some(Tok::Period), Some(Tok::Word { ident: second, .. })) =
            (toks.get(i + 1), toks.get(i + 2))
        {
            return Some((
                Name::qualified(&normalize_ident(first), &normalize_ident(second)),
                i + 3,
            ));
        }
        Some((Name::unqualified(&normalize_ident(first)), i + 1))
    };
    let skip_only = |i: usize| if upper(i) == "ONLY" { i + 1 } else { i };
    let mut out = Vec::new();
    let mut push = |name: Name| {
        if !out.contains(&name) {
            out.push(name);
        }
    };
    for i in 0..toks.len() {
        let previous = if i > 0 { upper(i - 1) } else { "" };
        let target = match upper(i) {
            "INSERT" | "MERGE" if upper(i + 1) == "INTO" => Some(skip_only(i + 2)),
            "DELETE" if upper(i + 1) == "FROM" => Some(skip_only(i + 2)),
            // Not `FOR UPDATE`, `FOR NO KEY UPDATE`, `DO UPDATE SET`, `ON UPDATE CASCADE`.
            "UPDATE" if !matches!(previous, "FOR" | "KEY" | "DO" | "ON") => Some(skip_only(i + 1)),
            "TRUNCATE" => {
                let mut j = i + 1;
                if upper(j) == "TABLE" {
                    j += 1;
                }
                while let Some((name, next)) = name_at(skip_only(j)) {
                    push(name);
                    if toks.get(next) != Some(&Tok::Comma) {
                        break;
                    }
                    j = next + 1;
                }
                None
            }
            _ => None,
        };
        if let Some((name, _)) = target.and_then(name_at) {
            push(name);
        }
    }
    out
}

/// For each call: its overloads are those of its name (in its schema, or in the path) that
/// accept its number of arguments (defaults and VARIADIC counted); immutable when there is at
/// least one and every one is immutable.
const VOLATILITY_SQL: &str = "
SELECT u.i, coalesce(bool_and(p.provolatile = 'i'), false)
FROM unnest($1::text[], $2::text[], $4::int4[]) WITH ORDINALITY AS u(nsp, fn, nargs, i)
LEFT JOIN (
    pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
) ON p.proname = u.fn
    AND CASE WHEN u.nsp IS NULL THEN n.nspname = ANY($3::text[]) ELSE n.nspname = u.nsp END
    AND (u.nargs IS NULL
         OR u.nargs BETWEEN p.pronargs - p.pronargdefaults AND p.pronargs
         OR (p.provariadic <> 0 AND u.nargs >= p.pronargs - 1 - p.pronargdefaults))
GROUP BY u.i
ORDER BY u.i";

/// Whether each call is immutable: every overload it may call, found through `path`, is
/// immutable, and there is at least one. SQL value functions are never immutable.
pub async fn immutability<C: GenericClient + Sync>(
    client: &C,
    calls: &[FunctionCall],
    path: &SearchPath,
) -> Result<Vec<bool>, CatalogError> {
    let mut out = vec![false; calls.len()];
    let lookup: Vec<usize> = (0..calls.len())
        .filter(|&i| !is_sql_value_function(&calls[i].name))
        .collect();
    if lookup.is_empty() {
        return Ok(out);
    }
    let schemas: Vec<Option<String>> = lookup
        .iter()
        .map(|&i| calls[i].name.schema.clone())
        .collect();
    let names: Vec<String> = lookup.iter().map(|&i| calls[i].name.name.clone()).collect();
    let arities: Vec<Option<i32>> = lookup
        .iter()
        .map(|&i| calls[i].args.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
        .collect();
    let rows = client
        .query(VOLATILITY_SQL, &[&schemas, &names, &path.0, &arities])
        .await?;
    for row in rows {
        let position: i64 = row.try_get(0)?;
        let immutable: bool = row.try_get(1)?;
        let slot = usize::try_from(position - 1)
            .ok()
            .and_then(|k| lookup.get(k))
            .and_then(|&i| out.get_mut(i));
        if let Some(slot) = slot {
            *slot = immutable;
        }
    }
    Ok(out)
}

/// True when any of `calls` may call a function that is not immutable (or is unknown).
pub async fn volatility<C: GenericClient + Sync>(
    client: &C,
    calls: &[FunctionCall],
    path: &SearchPath,
) -> Result<bool, CatalogError> {
    Ok(immutability(client, calls, path)
        .await?
        .iter()
        .any(|immutable| !immutable))
}

fn is_sql_value_function(name: &Name) -> bool {
    name.schema.is_none() && SQL_VALUE_FUNCTIONS.contains(&name.name.as_str())
}

/// The catalog answers, cached. Bounded: a map that reaches `max_entries` is emptied before
/// the next insert. `invalidate` empties everything; an answer fetched across an `invalidate`
/// is returned but not cached.
pub struct Catalog {
    max_entries: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    generation: u64,
    /// (path key, name) → relation; names that resolve to nothing are not cached.
    tables: HashMap<(String, Name), QualifiedTable>,
    /// Sorted root oids → read dependencies.
    reads: HashMap<Vec<u32>, Arc<Dependencies>>,
    /// (path key, sorted root oids) → write tags.
    writes: HashMap<(String, Vec<u32>), Arc<BTreeSet<String>>>,
    /// (path key, call) → immutable.
    functions: HashMap<(String, FunctionCall), bool>,
}

fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, max: usize, k: K, v: V) {
    if map.len() >= max {
        map.clear();
    }
    map.insert(k, v);
}

impl Catalog {
    pub fn new(max_entries: usize) -> Catalog {
        Catalog {
            max_entries: max_entries.max(1),
            state: Mutex::new(CacheState::default()),
        }
    }

    /// Forgets every cached answer (after DDL, or a catalog-change notification).
    pub fn invalidate(&self) {
        let mut state = self.state.lock();
        let generation = state.generation.wrapping_add(1);
        *state = CacheState {
            generation,
            ..CacheState::default()
        };
    }

    /// Cached entries, all maps together.
    pub fn len(&self) -> usize {
        let s = self.state.lock();
        s.tables.len() + s.reads.len() + s.writes.len() + s.functions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// `resolve`, cached per (path, name).
    pub async fn resolve<C: GenericClient + Sync>(
        &self,
        client: &C,
        names: &[Name],
        path: &SearchPath,
    ) -> Result<Vec<QualifiedTable>, CatalogError> {
        let key = path.key();
        let mut found: Vec<Option<QualifiedTable>> = {
            let state = self.state.lock();
            names
                .iter()
                .map(|n| state.tables.get(&(key.clone(), n.clone())).cloned())
                .collect()
        };
        let missing: Vec<Name> = names
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        if !missing.is_empty() {
            let generation = self.generation();
            let resolved = resolve_each(client, &missing, path).await?;
            let mut state = self.state.lock();
            for (name, table) in missing.into_iter().zip(resolved) {
                let Some(table) = table else {
                    continue;
                };
                for (n, slot) in names.iter().zip(found.iter_mut()) {
                    if *n == name {
                        *slot = Some(table.clone());
                    }
                }
                if state.generation == generation {
                    let max = self.max_entries;
                    bounded_insert(&mut state.tables, max, (key.clone(), name), table);
                }
            }
        }
        Ok(distinct(found))
    }

    /// `read_dependencies`, cached per set of tables.
    pub async fn read_dependencies<C: GenericClient + Sync>(
        &self,
        client: &C,
        tables: &[QualifiedTable],
    ) -> Result<Arc<Dependencies>, CatalogError> {
        let key = sorted_oids(tables);
        if let Some(deps) = self.state.lock().reads.get(&key) {
            return Ok(deps.clone());
        }
        let generation = self.generation();
        let deps = Arc::new(read_dependencies(client, tables).await?);
        let mut state = self.state.lock();
        if state.generation == generation {
            let max = self.max_entries;
            bounded_insert(&mut state.reads, max, key, deps.clone());
        }
        Ok(deps)
    }

    /// `write_invalidations`, cached per (path, set of tables).
    pub async fn write_invalidations<C: GenericClient + Sync>(
        &self,
        client: &C,
        tables: &[QualifiedTable],
        path: &SearchPath,
    ) -> Result<Arc<BTreeSet<String>>, CatalogError> {
        let key = (path.key(), sorted_oids(tables));
        if let Some(tags) = self.state.lock().writes.get(&key) {
            return Ok(tags.clone());
        }
        let generation = self.generation();
        let tags = Arc::new(write_invalidations(client, tables, path).await?);
        let mut state = self.state.lock();
        if state.generation == generation {
            let max = self.max_entries;
            bounded_insert(&mut state.writes, max, key, tags.clone());
        }
        Ok(tags)
    }

    /// `volatility`, cached per (path, call).
    pub async fn volatile<C: GenericClient + Sync>(
        &self,
        client: &C,
        calls: &[FunctionCall],
        path: &SearchPath,
    ) -> Result<bool, CatalogError> {
        let key = path.key();
        let missing: Vec<FunctionCall> = {
            let state = self.state.lock();
            let mut missing = Vec::new();
            for call in calls {
                match state.functions.get(&(key.clone(), call.clone())) {
                    Some(false) => return Ok(true),
                    Some(true) => {}
                    None => missing.push(call.clone()),
                }
            }
            missing
        };
        if missing.is_empty() {
            return Ok(false);
        }
        let generation = self.generation();
        let immutable = immutability(client, &missing, path).await?;
        let mut state = self.state.lock();
        if state.generation == generation {
            let max = self.max_entries;
            for (call, &i) in missing.iter().zip(&immutable) {
                bounded_insert(&mut state.functions, max, (key.clone(), call.clone()), i);
            }
        }
        Ok(immutable.iter().any(|i| !i))
    }
}

fn sorted_oids(tables: &[QualifiedTable]) -> Vec<u32> {
    let mut oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    oids.sort_unstable();
    oids.dedup();
    oids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Name> {
        list.iter()
            .map(|n| match n.split_once('.') {
                Some((s, t)) => Name::qualified(s, t),
                None => Name::unqualified(n),
            })
            .collect()
    }

    #[test]
    fn trigger_sources_yield_their_write_targets() {
        let cases: &[(&str, &[&str])] = &[
            (
                "BEGIN INSERT INTO audit.log(id) VALUES (NEW.id); RETURN NEW; END;",
                &["audit.log"],
            ),
            (
                "BEGIN UPDATE ONLY Counters SET n = n + 1; DELETE FROM \"Queue\" WHERE id = OLD.id; RETURN NULL; END",
                &["counters", "Queue"],
            ),
            (
                "BEGIN PERFORM 1 FROM t FOR UPDATE; INSERT INTO x VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2; RETURN NEW; END",
                &["x"],
            ),
            ("BEGIN TRUNCATE TABLE a, ONLY s.b; RETURN NULL; END", &["a", "s.b"]),
            ("BEGIN MERGE INTO m USING src ON true WHEN MATCHED THEN DELETE; END", &["m"]),
            ("SELECT 1", &[]),
            // Dynamic SQL is not seen.
            ("BEGIN EXECUTE 'INSERT INTO hidden VALUES (1)'; END", &[]),
            // A string PL/pgSQL compares with is a literal, not a statement.
            ("BEGIN IF TG_OP = 'UPDATE' THEN RETURN NEW; END IF; END", &[]),
            // The tokenizer gives up: nothing.
            ("BEGIN INSERT INTO 'unterminated", &[]),
        ];
        for (source, want) in cases {
            assert_eq!(trigger_write_targets(source), names(want), "{source}");
        }
    }

    #[test]
    fn function_search_path_settings_parse() {
        assert_eq!(
            parse_search_path("\"$user\", Public, \"My Schema\", pg_temp").schemas(),
            ["pg_catalog", "public", "My Schema"]
        );
        assert_eq!(
            parse_search_path("app, pg_catalog").schemas(),
            ["app", "pg_catalog"]
        );
    }

    #[test]
    fn cache_is_bounded() {
        let mut map = HashMap::new();
        for i in 0..10 {
            bounded_insert(&mut map, 4, i, i);
            assert!(map.len() <= 4);
        }
        let catalog = Catalog::new(8);
        assert!(catalog.is_empty());
        catalog.invalidate();
        assert_eq!(catalog.generation(), 1);
    }
}
