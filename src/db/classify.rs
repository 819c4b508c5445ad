//! What a QUERY's SQL is, from its text alone: exactly one statement, of a kind QUERY accepts,
//! read or write, the relations and functions it names, and the canonical text its cache key is
//! built from. It uses sqlparser's PostgreSQL dialect and never talks to PostgreSQL: what the
//! names mean (views, partitions, search_path, function volatility) is `catalog`'s job.
//!
//! Rules (DESIGN.md, "QUERY: database read-through"):
//! - One statement. None (empty, comments only) and two or more are errors.
//! - Accepted: SELECT / WITH / VALUES / SHOW / EXPLAIN, INSERT / UPDATE / DELETE / MERGE, and DDL
//!   (CREATE / ALTER / DROP / TRUNCATE / COMMENT / GRANT / REVOKE / REFRESH MATERIALIZED VIEW ...)
//!   for admin users only (`NOPERM` otherwise). Refused for everyone, because they would leak
//!   through pooled connections or do not fit one statement on a pooled connection: transaction
//!   control, session state (SET, RESET, SET ROLE, SET SESSION AUTHORIZATION, DISCARD, LOAD, and
//!   the functions `set_config` with session scope and session-level advisory locks),
//!   LISTEN / NOTIFY / UNLISTEN (and `pg_notify`), PREPARE / EXECUTE / DEALLOCATE, cursors
//!   (DECLARE / FETCH / CLOSE), COPY, DO, CALL (procedures may commit and set session state),
//!   LOCK, maintenance (VACUUM, ANALYZE, and unparsed CHECKPOINT / CLUSTER / REINDEX), temporary
//!   tables, views and sequences, and SELECT ... INTO (it creates a table).
//! - Read: a query without a locking clause (FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE) in
//!   any of its subqueries or CTEs, without a data-modifying CTE, and without a call to a
//!   built-in function that writes (`nextval`, `setval`, `txid_current`, large-object writers).
//!   EXPLAIN is a read unless it is EXPLAIN ANALYZE of a write (or of a locking SELECT).
//!   Everything else is a write. (sqlparser 0.64 does not read `FOR NO KEY UPDATE` and
//!   `FOR KEY SHARE`: such SQL is unparsed, hence a write, below.) Whether a read's result may
//!   be cached is decided with the catalog (function volatility, `calls`); `volatile` only
//!   flags what the text alone shows: SQL value functions (CURRENT_TIMESTAMP, current_user, ...,
//!   keywords rather than pg_proc calls), TABLESAMPLE, SHOW and EXPLAIN.
//! - SQL the parser does not understand is *not* refused: PostgreSQL accepts syntax sqlparser
//!   does not, and the primary gives the real error (with its SQLSTATE) for SQL that is wrong.
//!   It is classified as a write with `parsed: false` and the parser's message in `parse_error`,
//!   after a token-level check that still refuses it when it starts with a refused keyword (DO,
//!   BEGIN, SET, ...), asks for a temporary table or SELECT INTO, or calls a session-state
//!   function, and answers `NOPERM` when it starts with a DDL keyword and the user is no admin.
//!   The caller decides whether to send it (to the primary) or to refuse it with
//!   `ClassifyError::Syntax`. It relies on PostgreSQL's extended protocol refusing several
//!   statements in one. SQL with more than `MAX_OPERATORS` operators is left unparsed too, so
//!   no input can overflow the stack.
//!
//! Names are PostgreSQL-normalized: unquoted identifiers folded to lower case (ASCII letters
//! only, as PostgreSQL does), quoted ones kept, both cut to 63 bytes. A catalog part
//! (`db.schema.table`) is dropped: PostgreSQL only accepts the current database there.
//! CTE names are not relations, within the scope PostgreSQL gives them: a CTE of a plain WITH is
//! visible to the CTEs after it and to the statement body, one of WITH RECURSIVE to all its CTEs
//! as well, so `WITH t AS (SELECT * FROM t) SELECT * FROM t` reads the table `t` once. A
//! schema-qualified name is never a CTE.
//!
//! The normalized text is the parsed statement's canonical `Display` with unquoted identifiers
//! folded: whitespace, comments and the case of keywords and unquoted names do not change it.
//! Parameters (`$1`, ...) are kept as they are: arguments are part of the key separately.
//!
//! Not detected from the text: functions called implicitly (operators, casts, column defaults,
//! triggers, views, row-level security policies — see `catalog` for views) and writes hidden in
//! user functions (the replica refuses those with SQLSTATE 25006, DESIGN's retry).

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, ObjectNamePart,
    Query, Set, SetExpr, Statement, TableFactor, TableObject, Value, Visit, VisitMut, Visitor,
    VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};
use std::collections::BTreeSet;
use std::fmt;
use std::ops::ControlFlow;

/// PostgreSQL keeps the first `NAMEDATALEN - 1` bytes of an identifier.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// SQL value functions: keywords PostgreSQL evaluates per statement or per session, never
/// immutable, some of which sqlparser reads as plain identifiers (`current_schema`,
/// `current_role`). Reported in `functions` and setting `volatile`.
pub const SQL_VALUE_FUNCTIONS: &[&str] = &[
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "localtime",
    "localtimestamp",
    "session_user",
    "system_user",
    "user",
];

/// sqlparser bounds nesting (parentheses, subqueries) but builds a chain of binary operators
/// (`a + b + c ...`, `x OR y OR ...`, `::int::int ...`) as a tree as deep as the chain, which
/// visiting, printing and dropping walk recursively: past this many operator tokens the SQL is
/// left unparsed (a write for the primary), so no input can overflow the stack.
pub const MAX_OPERATORS: usize = 4000;

/// Built-in functions that write: a statement calling one is a write (a replica refuses it).
const WRITING_FUNCTIONS: &[&str] = &[
    "lo_creat",
    "lo_create",
    "lo_from_bytea",
    "lo_import",
    "lo_put",
    "lo_unlink",
    "nextval",
    "pg_current_xact_id",
    "setval",
    "txid_current",
];

/// Built-in functions whose effect outlives the statement on its (pooled) connection.
const SESSION_FUNCTIONS: &[(&str, Reason)] = &[
    ("pg_advisory_lock", Reason::SessionState),
    ("pg_advisory_lock_shared", Reason::SessionState),
    ("pg_advisory_unlock", Reason::SessionState),
    ("pg_advisory_unlock_all", Reason::SessionState),
    ("pg_advisory_unlock_shared", Reason::SessionState),
    ("pg_notify", Reason::Notifications),
    ("pg_try_advisory_lock", Reason::SessionState),
    ("pg_try_advisory_lock_shared", Reason::SessionState),
    // Refused unless its third argument is the literal `true` (transaction-local).
    ("set_config", Reason::SessionState),
];

/// Leading keywords of statements refused for everyone, for SQL the parser cannot read.
const REFUSED_KEYWORDS: &[(&str, Reason)] = &[
    ("ABORT", Reason::Transaction),
    ("ANALYZE", Reason::Maintenance),
    ("ANALYSE", Reason::Maintenance),
    ("BEGIN", Reason::Transaction),
    ("CALL", Reason::Procedure),
    ("CHECKPOINT", Reason::Maintenance),
    ("CLOSE", Reason::Cursor),
    ("CLUSTER", Reason::Maintenance),
    ("COMMIT", Reason::Transaction),
    ("COPY", Reason::Copy),
    ("DEALLOCATE", Reason::Prepared),
    ("DECLARE", Reason::Cursor),
    ("DISCARD", Reason::SessionState),
    ("DO", Reason::Procedure),
    ("END", Reason::Transaction),
    ("EXECUTE", Reason::Prepared),
    ("FETCH", Reason::Cursor),
    ("LISTEN", Reason::Notifications),
    ("LOAD", Reason::SessionState),
    ("LOCK", Reason::Lock),
    ("MOVE", Reason::Cursor),
    ("NOTIFY", Reason::Notifications),
    ("PREPARE", Reason::Prepared),
    ("REINDEX", Reason::Maintenance),
    ("RELEASE", Reason::Transaction),
    ("RESET", Reason::SessionState),
    ("ROLLBACK", Reason::Transaction),
    ("SAVEPOINT", Reason::Transaction),
    ("SET", Reason::SessionState),
    ("START", Reason::Transaction),
    ("UNLISTEN", Reason::Notifications),
    ("VACUUM", Reason::Maintenance),
];

/// Leading keywords of DDL, for SQL the parser cannot read.
const DDL_KEYWORDS: &[&str] = &[
    "ALTER", "COMMENT", "CREATE", "DROP", "GRANT", "IMPORT", "REASSIGN", "REFRESH", "REVOKE",
    "SECURITY", "TRUNCATE",
];

/// Where a statement may run and what it does to the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Changes nothing: may run on a replica and be cached.
    Read,
    /// Changes data (or may: unparsed SQL): runs on the primary, then invalidates.
    Write,
    /// Changes the schema (admin only): runs on the primary; the catalog cache is stale after it.
    Ddl,
}

/// A relation or function name as PostgreSQL reads it: identifiers normalized (see the module
/// documentation), `schema` only when the SQL qualified the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name {
    pub schema: Option<String>,
    pub name: String,
}

impl Name {
    /// An unqualified name; `name` is taken as already normalized.
    pub fn unqualified(name: &str) -> Name {
        Name {
            schema: None,
            name: name.to_string(),
        }
    }

    /// A schema-qualified name; both parts are taken as already normalized.
    pub fn qualified(schema: &str, name: &str) -> Name {
        Name {
            schema: Some(schema.to_string()),
            name: name.to_string(),
        }
    }

    /// The name of an AST object name: its last part, qualified by the part before it.
    fn from_object_name(object: &ObjectName) -> Option<Name> {
        let mut parts = object.0.iter().rev().map(|part| match part {
            ObjectNamePart::Identifier(ident) => normalize_ident(ident),
            other => other.to_string(),
        });
        let name = parts.next()?;
        Some(Name {
            schema: parts.next(),
            name,
        })
    }

    /// The SQL spelling, every part double-quoted (so it means exactly this name whatever its
    /// characters and case), e.g. for `to_regclass`.
    pub fn to_sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }

    fn is_builtin(&self, names: &[&str]) -> bool {
        matches!(self.schema.as_deref(), None | Some("pg_catalog"))
            && names.contains(&self.name.as_str())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A function call: its name and, when the text shows it plainly, how many arguments it passes
/// (so the catalog can leave out overloads that cannot match).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FunctionCall {
    pub name: Name,
    /// `None`: any number (no parentheses, `WITHIN GROUP`, or not known).
    pub args: Option<usize>,
}

impl FunctionCall {
    /// A call of `name` with any number of arguments.
    pub fn any_arity(name: Name) -> FunctionCall {
        FunctionCall { name, args: None }
    }
}

/// `name` as a double-quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What `classify` found out about one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub kind: Kind,
    /// The statement kind for logs and errors: `SELECT`, `INSERT`, `CREATE TABLE`, ...
    pub statement: String,
    /// False when sqlparser could not read the SQL (`kind` is then `Write`, or `Ddl` for an
    /// admin's DDL, and the sets below are empty).
    pub parsed: bool,
    /// The parser's message when `parsed` is false.
    pub parse_error: Option<String>,
    /// The text the cache key is built from (the SQL itself, trimmed, when not parsed).
    pub normalized: String,
    /// Every relation the statement names, written ones included, CTE names excluded.
    pub relations: BTreeSet<Name>,
    /// The relations it writes: targets of INSERT / UPDATE / DELETE / MERGE (data-modifying CTEs
    /// included), and for DDL the tables it creates, alters, drops, truncates or refreshes.
    pub writes: BTreeSet<Name>,
    /// Every function it calls by name (set-returning functions in FROM and SQL value functions
    /// included).
    pub functions: BTreeSet<Name>,
    /// The same calls with their argument counts, for the catalog's volatility check.
    pub calls: BTreeSet<FunctionCall>,
    /// A locking clause (FOR UPDATE, ...) somewhere in it.
    pub locking: bool,
    /// Known from the text alone not to be cacheable (see the module documentation).
    pub volatile: bool,
}

impl Classified {
    pub fn calls_functions(&self) -> bool {
        !self.functions.is_empty()
    }

    /// The relations read and not written.
    pub fn read_only_relations(&self) -> impl Iterator<Item = &Name> {
        self.relations.difference(&self.writes)
    }

    /// The syntax error to reply with when the caller will not send unparsed SQL.
    pub fn syntax_error(&self) -> Option<ClassifyError> {
        self.parse_error.clone().map(ClassifyError::Syntax)
    }
}

/// Why a statement kind is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Transaction,
    SessionState,
    Notifications,
    Prepared,
    Cursor,
    Copy,
    Procedure,
    Lock,
    Maintenance,
    Temporary,
    SelectInto,
    Unsupported,
}

impl Reason {
    fn text(self) -> &'static str {
        match self {
            Reason::Transaction => {
                "transaction control would leak through pooled connections (each QUERY is its own transaction)"
            }
            Reason::SessionState => "session state would leak through pooled connections",
            Reason::Notifications => "notifications need a connection of their own",
            Reason::Prepared => {
                "prepared statements are session state (QUERY prepares statements itself)"
            }
            Reason::Cursor => "cursors are session state",
            Reason::Copy => "COPY streams data outside the query protocol",
            Reason::Procedure => "procedures and code blocks may control transactions and session state",
            Reason::Lock => "explicit locks are transaction state",
            Reason::Maintenance => "maintenance statements are not run through QUERY",
            Reason::Temporary => "temporary objects are session state",
            Reason::SelectInto => "it creates a table (use CREATE TABLE ... AS as an admin)",
            Reason::Unsupported => "QUERY runs SELECT, WITH, VALUES, SHOW, EXPLAIN, INSERT, UPDATE, DELETE, MERGE and (for admins) DDL",
        }
    }
}

/// Why `classify` refused a QUERY. `Display` is the full RESP error text, code included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyError {
    /// No statement (empty, whitespace or comments only).
    Empty,
    /// Two or more statements.
    Multiple,
    /// The parser's message (only from `Classified::syntax_error`).
    Syntax(String),
    /// A statement kind QUERY never runs.
    Refused { statement: String, reason: Reason },
    /// DDL from a user who is not an admin.
    NoPerm { statement: String },
}

impl fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassifyError::Empty => f.write_str("ERR QUERY needs an SQL statement"),
            ClassifyError::Multiple => f.write_str("ERR QUERY takes exactly one SQL statement"),
            ClassifyError::Syntax(message) => write!(f, "ERR SQL syntax error: {message}"),
            ClassifyError::Refused { statement, reason } => {
                write!(f, "ERR QUERY does not run {statement}: {}", reason.text())
            }
            ClassifyError::NoPerm { statement } => write!(
                f,
                "NOPERM this user has no permissions to run {statement} (DDL) through QUERY"
            ),
        }
    }
}

impl std::error::Error for ClassifyError {}

fn refused(statement: &str, reason: Reason) -> ClassifyError {
    ClassifyError::Refused {
        statement: statement.to_string(),
        reason,
    }
}

/// Classifies one QUERY statement (see the module documentation). `admin` allows DDL.
pub fn classify(sql: &str, admin: bool) -> Result<Classified, ClassifyError> {
    if let Some(operators) = too_many_operators(sql) {
        let message = format!(
            "{operators} operators: more than the {MAX_OPERATORS} the classifier reads (the syntax tree would be too deep)"
        );
        return unparsed(sql, admin, message);
    }
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => statements,
        Err(e) => return unparsed(sql, admin, e.to_string()),
    };
    let mut statements = statements.into_iter();
    let mut statement = match (statements.next(), statements.next()) {
        (None, _) => return Err(ClassifyError::Empty),
        (Some(_), Some(_)) => return Err(ClassifyError::Multiple),
        (Some(statement), None) => statement,
    };
    let analysis = analyze(&statement, admin)?;
    let _ = VisitMut::visit(&mut statement, &mut FoldIdents);
    Ok(Classified {
        kind: analysis.kind,
        statement: analysis.label,
        parsed: true,
        parse_error: None,
        normalized: statement.to_string(),
        relations: analysis.walker.relations,
        writes: analysis.walker.writes,
        functions: analysis.walker.functions,
        calls: analysis.walker.calls,
        locking: analysis.walker.locking,
        volatile: analysis.volatile || analysis.walker.volatile,
    })
}

struct Analysis {
    kind: Kind,
    label: String,
    volatile: bool,
    walker: Walker,
}

fn analyze(statement: &Statement, admin: bool) -> Result<Analysis, ClassifyError> {
    if let Statement::Explain {
        statement: inner,
        analyze: analyze_keyword,
        options,
        ..
    } = statement
    {
        let mut inner = analyze(inner, admin)?;
        let runs = *analyze_keyword
            || options
                .iter()
                .flatten()
                .any(|o| o.name.value.eq_ignore_ascii_case("analyze") && option_on(&o.arg));
        inner.label = format!("EXPLAIN {}", inner.label);
        // A plan (and EXPLAIN ANALYZE's timings) changes without any write Strata sees.
        inner.volatile = true;
        if !runs {
            // Planned, not executed: nothing is written or locked, a replica can answer.
            inner.kind = Kind::Read;
            inner.walker.writes.clear();
            inner.walker.locking = false;
        }
        return Ok(inner);
    }
    let (kind, label) = statement_kind(statement, admin)?;
    let mut walker = Walker::new(kind == Kind::Ddl);
    if let ControlFlow::Break(e) = Visit::visit(statement, &mut walker) {
        return Err(e);
    }
    for target in ddl_targets(statement) {
        walker.relations.insert(target.clone());
        walker.writes.insert(target);
    }
    let kind = if kind == Kind::Read
        && (walker.locking || !walker.writes.is_empty() || walker.writing_function)
    {
        Kind::Write
    } else {
        kind
    };
    let volatile = matches!(label.as_str(), "SHOW");
    Ok(Analysis {
        kind,
        label,
        volatile,
        walker,
    })
}

/// An EXPLAIN option's boolean argument: on unless it clearly says off.
fn option_on(arg: &Option<Expr>) -> bool {
    let text = match arg {
        None => return true,
        Some(Expr::Value(v)) => match &v.value {
            Value::Boolean(b) => return *b,
            Value::Number(n, _) => n.clone(),
            Value::SingleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Some(Expr::Identifier(ident)) => ident.value.clone(),
        Some(other) => other.to_string(),
    };
    !matches!(
        text.to_ascii_lowercase().as_str(),
        "false" | "off" | "0" | "no"
    )
}

/// The statement's kind before looking inside it, or why it is refused.
fn statement_kind(statement: &Statement, admin: bool) -> Result<(Kind, String), ClassifyError> {
    use Statement as S;
    let ddl = |label: &str| {
        if admin {
            Ok((Kind::Ddl, label.to_string()))
        } else {
            Err(ClassifyError::NoPerm {
                statement: label.to_string(),
            })
        }
    };
    let refuse = |label: &str, reason| Err(refused(label, reason));
    match statement {
        S::Query(query) => Ok((Kind::Read, query_label(query).to_string())),
        S::Insert(_) => Ok((Kind::Write, "INSERT".into())),
        S::Update(_) => Ok((Kind::Write, "UPDATE".into())),
        S::Delete(_) => Ok((Kind::Write, "DELETE".into())),
        S::Merge(_) => Ok((Kind::Write, "MERGE".into())),
        S::ShowVariable { .. } => Ok((Kind::Read, "SHOW".into())),
        S::StartTransaction { begin: true, .. } => refuse("BEGIN", Reason::Transaction),
        S::StartTransaction { .. } => refuse("START TRANSACTION", Reason::Transaction),
        S::Commit { end: true, .. } => refuse("END", Reason::Transaction),
        S::Commit { .. } => refuse("COMMIT", Reason::Transaction),
        S::Rollback {
            savepoint: Some(_), ..
        } => refuse("ROLLBACK TO SAVEPOINT", Reason::Transaction),
        S::Rollback { .. } => refuse("ROLLBACK", Reason::Transaction),
        S::Savepoint { .. } => refuse("SAVEPOINT", Reason::Transaction),
        S::ReleaseSavepoint { .. } => refuse("RELEASE SAVEPOINT", Reason::Transaction),
        S::Set(Set::SetRole { .. }) => refuse("SET ROLE", Reason::SessionState),
        S::Set(Set::SetSessionAuthorization(_)) => {
            refuse("SET SESSION AUTHORIZATION", Reason::SessionState)
        }
        S::Set(Set::SetTransaction { .. }) => refuse("SET TRANSACTION", Reason::Transaction),
        S::Set(_) => refuse("SET", Reason::SessionState),
        S::Reset(_) => refuse("RESET", Reason::SessionState),
        S::Discard { .. } => refuse("DISCARD", Reason::SessionState),
        S::Load { .. } => refuse("LOAD", Reason::SessionState),
        S::LISTEN { .. } => refuse("LISTEN", Reason::Notifications),
        S::UNLISTEN { .. } => refuse("UNLISTEN", Reason::Notifications),
        S::NOTIFY { .. } => refuse("NOTIFY", Reason::Notifications),
        S::Prepare { .. } => refuse("PREPARE", Reason::Prepared),
        S::Execute { .. } => refuse("EXECUTE", Reason::Prepared),
        S::Deallocate { .. } => refuse("DEALLOCATE", Reason::Prepared),
        S::Declare { .. } => refuse("DECLARE", Reason::Cursor),
        S::Fetch { .. } => refuse("FETCH", Reason::Cursor),
        S::Close { .. } => refuse("CLOSE", Reason::Cursor),
        S::Copy { .. } => refuse("COPY", Reason::Copy),
        S::Call(_) => refuse("CALL", Reason::Procedure),
        S::Lock(_) | S::LockTables { .. } => refuse("LOCK", Reason::Lock),
        S::Vacuum(_) => refuse("VACUUM", Reason::Maintenance),
        S::Analyze(_) => refuse("ANALYZE", Reason::Maintenance),
        S::CreateTable(t) if t.temporary => refuse("CREATE TEMPORARY TABLE", Reason::Temporary),
        S::CreateView(v) if v.temporary => refuse("CREATE TEMPORARY VIEW", Reason::Temporary),
        S::CreateSequence {
            temporary: true, ..
        } => refuse("CREATE TEMPORARY SEQUENCE", Reason::Temporary),
        S::CreateTable(_) => ddl("CREATE TABLE"),
        S::CreateView(v) if v.materialized => ddl("CREATE MATERIALIZED VIEW"),
        S::CreateView(_) => ddl("CREATE VIEW"),
        S::CreateIndex(_) => ddl("CREATE INDEX"),
        S::CreateSequence { .. } => ddl("CREATE SEQUENCE"),
        S::CreateSchema { .. } => ddl("CREATE SCHEMA"),
        S::CreateFunction(_) => ddl("CREATE FUNCTION"),
        S::CreateTrigger(_) => ddl("CREATE TRIGGER"),
        S::AlterTable(_) => ddl("ALTER TABLE"),
        S::Drop { .. } => ddl("DROP"),
        S::Truncate(_) => ddl("TRUNCATE"),
        S::Comment { .. } => ddl("COMMENT"),
        S::Grant(_) | S::GrantRole(_) => ddl("GRANT"),
        S::Revoke(_) | S::RevokeRole(_) => ddl("REVOKE"),
        S::RefreshMaterializedView(_) => ddl("REFRESH MATERIALIZED VIEW"),
        S::CreateRole(_)
        | S::CreateUser(_)
        | S::CreateDatabase { .. }
        | S::CreateProcedure { .. }
        | S::CreateType { .. }
        | S::CreateDomain(_)
        | S::CreateExtension(_)
        | S::CreatePolicy(_)
        | S::CreateRule(_)
        | S::CreateOperator(_)
        | S::CreateOperatorFamily(_)
        | S::CreateOperatorClass(_)
        | S::CreateTextSearch(_)
        | S::CreateAggregate(_)
        | S::CreateCollation(_)
        | S::CreateServer(_)
        | S::CreateForeignTable(_)
        | S::CreateForeignDataWrapper(_)
        | S::CreateUserMapping(_)
        | S::AlterSchema(_)
        | S::AlterIndex { .. }
        | S::AlterView(_)
        | S::AlterFunction(_)
        | S::AlterType(_)
        | S::AlterCollation(_)
        | S::AlterOperator(_)
        | S::AlterOperatorFamily(_)
        | S::AlterOperatorClass(_)
        | S::AlterTextSearch(_)
        | S::AlterRole { .. }
        | S::AlterUser(_)
        | S::AlterPolicy(_)
        | S::AlterTrigger(_)
        | S::AlterDefaultPrivileges(_)
        | S::DropFunction(_)
        | S::DropDomain(_)
        | S::DropProcedure { .. }
        | S::DropPolicy(_)
        | S::DropRule(_)
        | S::DropExtension(_)
        | S::DropOperator(_)
        | S::DropOperatorFamily(_)
        | S::DropOperatorClass(_)
        | S::DropTrigger(_) => ddl(&leading_words(statement)),
        other => refuse(&leading_words(other), Reason::Unsupported),
    }
}

/// The first two words of a statement's text, for its label.
fn leading_words(statement: &Statement) -> String {
    statement
        .to_string()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn query_label(query: &Query) -> &'static str {
    fn body(set: &SetExpr) -> &'static str {
        match set {
            SetExpr::Select(_) | SetExpr::Table(_) => "SELECT",
            SetExpr::Query(q) => body(&q.body),
            SetExpr::SetOperation { left, .. } => body(left),
            SetExpr::Values(_) => "VALUES",
            SetExpr::Insert(_) => "INSERT",
            SetExpr::Update(_) => "UPDATE",
            SetExpr::Delete(_) => "DELETE",
            SetExpr::Merge(_) => "MERGE",
        }
    }
    body(&query.body)
}

/// The tables a DDL statement changes (their cached results are stale after it).
fn ddl_targets(statement: &Statement) -> Vec<Name> {
    use sqlparser::ast::ObjectType;
    let names: Vec<&ObjectName> = match statement {
        Statement::CreateTable(t) => vec![&t.name],
        Statement::CreateView(v) => vec![&v.name],
        Statement::CreateIndex(i) => vec![&i.table_name],
        Statement::AlterTable(t) => vec![&t.name],
        Statement::Truncate(t) => t.table_names.iter().map(|t| &t.name).collect(),
        Statement::RefreshMaterializedView(r) => vec![&r.name],
        Statement::Drop {
            object_type:
                ObjectType::Table
                | ObjectType::View
                | ObjectType::MaterializedView
                | ObjectType::ForeignTable,
            names,
            ..
        } => names.iter().collect(),
        _ => Vec::new(),
    };
    names
        .into_iter()
        .filter_map(Name::from_object_name)
        .collect()
}

/// PostgreSQL's identifier normalization: unquoted → ASCII letters lower-cased; then at most
/// 63 bytes, cut on a character boundary.
pub fn normalize_ident(ident: &Ident) -> String {
    let mut value = if ident.quote_style.is_none() {
        ident.value.to_ascii_lowercase()
    } else {
        ident.value.clone()
    };
    if value.len() > MAX_IDENTIFIER_BYTES {
        let mut end = MAX_IDENTIFIER_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

/// The CTE names of one WITH clause and how many of them are visible right now.
struct Frame {
    /// The query owning the WITH clause.
    query: *const Query,
    names: Vec<String>,
    /// The CTE bodies, to recognise them when the visitor enters them.
    bodies: Vec<*const Query>,
    recursive: bool,
    /// Names visible where the visitor is: `names[..visible]`.
    visible: usize,
}

/// Collects relations, writes, functions and locking clauses, keeping track of CTE scopes.
struct Walker {
    /// Inside DDL: session-state function checks do not apply (defaults, bodies).
    ddl: bool,
    frames: Vec<Frame>,
    relations: BTreeSet<Name>,
    writes: BTreeSet<Name>,
    functions: BTreeSet<Name>,
    calls: BTreeSet<FunctionCall>,
    locking: bool,
    volatile: bool,
    writing_function: bool,
}

impl Walker {
    fn new(ddl: bool) -> Walker {
        Walker {
            ddl,
            frames: Vec::new(),
            relations: BTreeSet::new(),
            writes: BTreeSet::new(),
            functions: BTreeSet::new(),
            calls: BTreeSet::new(),
            locking: false,
            volatile: false,
            writing_function: false,
        }
    }

    /// True when an unqualified `name` refers to a CTE in scope here.
    fn is_cte(&self, name: &Name) -> bool {
        name.schema.is_none()
            && self
                .frames
                .iter()
                .any(|f| f.names[..f.visible].contains(&name.name))
    }

    fn relation(&mut self, object: &ObjectName) {
        if let Some(name) = Name::from_object_name(object) {
            if !self.is_cte(&name) {
                self.relations.insert(name);
            }
        }
    }

    fn write_target(&mut self, object: &ObjectName) {
        if let Some(name) = Name::from_object_name(object) {
            self.relations.insert(name.clone());
            self.writes.insert(name);
        }
    }

    fn table_factor_target(&mut self, factor: &TableFactor) {
        if let TableFactor::Table { name, .. } = factor {
            self.write_target(name);
        }
    }

    /// A call of `object` with `args` (`None`: no argument list); `arity` as the catalog should
    /// count it.
    fn function(
        &mut self,
        object: &ObjectName,
        args: Option<&[FunctionArg]>,
        arity: Option<usize>,
    ) -> ControlFlow<ClassifyError> {
        let Some(name) = Name::from_object_name(object) else {
            return ControlFlow::Continue(());
        };
        if name.is_builtin(SQL_VALUE_FUNCTIONS) {
            self.volatile = true;
        }
        if name.is_builtin(WRITING_FUNCTIONS) {
            self.writing_function = true;
        }
        if !self.ddl && matches!(name.schema.as_deref(), None | Some("pg_catalog")) {
            if let Some((_, reason)) = SESSION_FUNCTIONS.iter().find(|(f, _)| *f == name.name) {
                let local_set_config = name.name == "set_config" && third_arg_is_true(args);
                if !local_set_config {
                    return ControlFlow::Break(refused(&format!("{}()", name.name), *reason));
                }
            }
        }
        self.calls.insert(FunctionCall {
            name: name.clone(),
            args: arity,
        });
        self.functions.insert(name);
        ControlFlow::Continue(())
    }

    /// SELECT INTO and `TABLE name` in a query body (outside nested queries, which the
    /// visitor reaches on its own).
    fn scan_body(&mut self, set: &SetExpr) -> ControlFlow<ClassifyError> {
        match set {
            SetExpr::Select(select) if select.into.is_some() => {
                ControlFlow::Break(refused("SELECT INTO", Reason::SelectInto))
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.scan_body(left)?;
                self.scan_body(right)
            }
            SetExpr::Table(table) => {
                if let Some(table_name) = &table.table_name {
                    let name = Name {
                        schema: table.schema_name.as_ref().map(normalize_ident),
                        name: normalize_ident(table_name),
                    };
                    if !self.is_cte(&name) {
                        self.relations.insert(name);
                    }
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

fn third_arg_is_true(args: Option<&[FunctionArg]>) -> bool {
    let third = args.and_then(|a| a.get(2));
    matches!(
        third,
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))))
            if matches!(v.value, Value::Boolean(true))
    )
}

impl Visitor for Walker {
    type Break = ClassifyError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<ClassifyError> {
        let ptr = query as *const Query;
        if let Some(top) = self.frames.last_mut() {
            if let Some(i) = top.bodies.iter().position(|b| *b == ptr) {
                top.visible = if top.recursive { top.names.len() } else { i };
            }
        }
        if let Some(with) = &query.with {
            self.frames.push(Frame {
                query: ptr,
                names: with
                    .cte_tables
                    .iter()
                    .map(|c| normalize_ident(&c.alias.name))
                    .collect(),
                bodies: with
                    .cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
                recursive: with.recursive,
                visible: 0,
            });
        }
        if !query.locks.is_empty() {
            self.locking = true;
        }
        // The body sees every CTE of its own WITH.
        let saved = self.frames.last().map(|f| f.visible);
        if let Some(top) = self.frames.last_mut().filter(|f| f.query == ptr) {
            top.visible = top.names.len();
        }
        let scanned = self.scan_body(&query.body);
        if let (Some(top), Some(visible)) = (self.frames.last_mut(), saved) {
            top.visible = visible;
        }
        scanned
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<ClassifyError> {
        let ptr = query as *const Query;
        if self.frames.last().is_some_and(|f| f.query == ptr) {
            self.frames.pop();
        }
        // Past a CTE body: the next one resets this, the statement body sees them all.
        if let Some(top) = self.frames.last_mut() {
            if top.bodies.contains(&ptr) {
                top.visible = top.names.len();
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<ClassifyError> {
        match statement {
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    self.write_target(name);
                }
            }
            Statement::Update(update) => self.table_factor_target(&update.table.relation),
            Statement::Delete(delete) => {
                for name in &delete.tables {
                    self.write_target(name);
                }
                let from = match &delete.from {
                    sqlparser::ast::FromTable::WithFromKeyword(t)
                    | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
                };
                if delete.tables.is_empty() {
                    for table in from {
                        self.table_factor_target(&table.relation);
                    }
                }
            }
            Statement::Merge(merge) => self.table_factor_target(&merge.table),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<ClassifyError> {
        match factor {
            TableFactor::Table {
                name,
                args: None,
                sample,
                ..
            } => {
                // TABLESAMPLE picks different rows on every run.
                self.volatile |= sample.is_some();
                self.relation(name)
            }
            TableFactor::Derived {
                sample: Some(_), ..
            } => self.volatile = true,
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => return self.function(name, Some(&args.args), Some(args.args.len())),
            TableFactor::Function { name, args, .. } => {
                return self.function(name, Some(args), Some(args.len()))
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<ClassifyError> {
        match expr {
            Expr::Function(function) => {
                let (args, arity) = match &function.args {
                    // `count(*)` is pg_proc's count() with no argument.
                    FunctionArguments::List(list)
                        if matches!(
                            list.args.as_slice(),
                            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
                        ) =>
                    {
                        (Some(list.args.as_slice()), Some(0))
                    }
                    FunctionArguments::List(list) => {
                        (Some(list.args.as_slice()), Some(list.args.len()))
                    }
                    FunctionArguments::Subquery(_) => (None, Some(1)),
                    FunctionArguments::None => (None, None),
                };
                // Ordered-set aggregates count their WITHIN GROUP arguments too.
                let arity = arity.filter(|_| function.within_group.is_empty());
                self.function(&function.name, args, arity)
            }
            // sqlparser reads some SQL value functions as plain identifiers; unquoted, they are
            // never column names in PostgreSQL (reserved keywords).
            Expr::Identifier(ident)
                if ident.quote_style.is_none()
                    && SQL_VALUE_FUNCTIONS.contains(&ident.value.to_ascii_lowercase().as_str()) =>
            {
                self.volatile = true;
                let name = Name::unqualified(&ident.value.to_ascii_lowercase());
                self.calls.insert(FunctionCall::any_arity(name.clone()));
                self.functions.insert(name);
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// Folds unquoted identifiers for the normalized text (PostgreSQL does the same, so the
/// meaning is unchanged).
struct FoldIdents;

impl VisitorMut for FoldIdents {
    type Break = ();

    fn pre_visit_ident(&mut self, ident: &mut Ident) -> ControlFlow<()> {
        if ident.quote_style.is_none() {
            ident.value.make_ascii_lowercase();
        }
        ControlFlow::Continue(())
    }
}

/// The number of operator tokens in `sql` when it is more than `MAX_OPERATORS`.
fn too_many_operators(sql: &str) -> Option<usize> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let operators = tokens
        .iter()
        .filter(|t| match t {
            Token::Word(w) => {
                w.quote_style.is_none()
                    && ["AND", "OR", "NOT", "IS", "COLLATE", "AT"]
                        .iter()
                        .any(|k| w.value.eq_ignore_ascii_case(k))
            }
            Token::Whitespace(_)
            | Token::EOF
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_)
            | Token::Comma
            | Token::Period
            | Token::SemiColon
            | Token::LParen
            | Token::RParen => false,
            _ => true,
        })
        .count();
    (operators > MAX_OPERATORS).then_some(operators)
}

/// SQL sqlparser cannot read: refused when its tokens show a refused statement, `NOPERM` for a
/// non-admin's DDL, else a write (DDL for an admin) for the primary to judge.
fn unparsed(sql: &str, admin: bool, message: String) -> Result<Classified, ClassifyError> {
    let (words, tokenized) = match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() {
        Ok(tokens) => (significant(tokens), true),
        // Not even tokens (an unterminated quote): judge by the leading word alone.
        Err(_) => (
            leading_word(sql)
                .into_iter()
                .map(Significant::Word)
                .collect(),
            false,
        ),
    };
    let text = |i: usize| match words.get(i) {
        Some(Significant::Word(w)) => w.as_str(),
        _ => "",
    };
    let first = text(0);
    if words.is_empty() && tokenized {
        return Err(ClassifyError::Empty);
    }
    let statements = words
        .split(|t| *t == Significant::Semicolon)
        .filter(|s| !s.is_empty())
        .count();
    // `BEGIN ATOMIC ... END` function bodies hold semicolons of their own.
    if statements > 1 && !words.contains(&Significant::Word("ATOMIC".into())) {
        return Err(ClassifyError::Multiple);
    }
    if let Some((keyword, reason)) = REFUSED_KEYWORDS.iter().find(|(k, _)| *k == first) {
        let label = match *keyword {
            "START" | "RELEASE" => format!("{keyword} {}", text(1)),
            _ => keyword.to_string(),
        };
        return Err(refused(label.trim(), *reason));
    }
    let query_like =
        matches!(first, "SELECT" | "WITH") || words.first() == Some(&Significant::LParen);
    for (i, word) in words.iter().enumerate() {
        let Significant::Word(word) = word else {
            continue;
        };
        let previous = if i > 0 { text(i - 1) } else { "" };
        if matches!(word.as_str(), "TEMP" | "TEMPORARY")
            && matches!(previous, "CREATE" | "GLOBAL" | "LOCAL" | "REPLACE" | "INTO")
        {
            return Err(refused(&format!("{first} {word}"), Reason::Temporary));
        }
        if word == "INTO" && query_like && !matches!(previous, "INSERT" | "MERGE") {
            return Err(refused("SELECT INTO", Reason::SelectInto));
        }
        let called = words.get(i + 1) == Some(&Significant::LParen);
        let qualified = i > 0 && words[i - 1] == Significant::Period;
        let builtin = !qualified || (i > 1 && text(i - 2) == "PG_CATALOG");
        if called && builtin && !matches!(previous, "FUNCTION" | "PROCEDURE") {
            let lower = word.to_ascii_lowercase();
            if let Some((name, reason)) = SESSION_FUNCTIONS.iter().find(|(f, _)| *f == lower) {
                // set_config(..., true) is transaction-local, but only the parser could tell.
                return Err(refused(&format!("{name}()"), *reason));
            }
        }
    }
    let kind = if DDL_KEYWORDS.contains(&first) {
        if !admin {
            return Err(ClassifyError::NoPerm {
                statement: first.to_string(),
            });
        }
        Kind::Ddl
    } else {
        Kind::Write
    };
    Ok(Classified {
        kind,
        statement: first.to_string(),
        parsed: false,
        parse_error: Some(message),
        normalized: sql.trim().to_string(),
        relations: BTreeSet::new(),
        writes: BTreeSet::new(),
        functions: BTreeSet::new(),
        calls: BTreeSet::new(),
        locking: false,
        volatile: false,
    })
}

/// A token that matters for the unparsed-SQL checks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Significant {
    /// A word, upper-cased when unquoted (keywords), as written when quoted.
    Word(String),
    LParen,
    Semicolon,
    Period,
    Other,
}

fn significant(tokens: Vec<Token>) -> Vec<Significant> {
    tokens
        .into_iter()
        .filter_map(|t| match t {
            Token::Whitespace(_) | Token::EOF => None,
            Token::Word(w) if w.quote_style.is_none() => {
                Some(Significant::Word(w.value.to_ascii_uppercase()))
            }
            Token::Word(w) => Some(Significant::Word(format!("\"{}\"", w.value))),
            Token::LParen => Some(Significant::LParen),
            Token::SemiColon => Some(Significant::Semicolon),
            Token::Period => Some(Significant::Period),
            _ => Some(Significant::Other),
        })
        .collect()
}

/// The first word of `sql` after whitespace and comments, upper-cased (no tokenizer needed).
fn leading_word(sql: &str) -> Option<String> {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
        .collect();
    (!word.is_empty()).then(|| word.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A compact view of a classification: `Kind r=[..] w=[..] f=[..]` plus `lock`, `volatile`,
    /// `unparsed` when set.
    fn summary(c: &Classified) -> String {
        let list = |set: &BTreeSet<Name>| {
            set.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = format!(
            "{:?} r=[{}] w=[{}] f=[{}]",
            c.kind,
            list(&c.relations),
            list(&c.writes),
            list(&c.functions)
        );
        for (flag, text) in [
            (c.locking, " lock"),
            (c.volatile, " volatile"),
            (!c.parsed, " unparsed"),
        ] {
            if flag {
                out.push_str(text);
            }
        }
        out
    }

    fn outcome(sql: &str, admin: bool) -> String {
        match classify(sql, admin) {
            Ok(c) => summary(&c),
            Err(e) => e.to_string(),
        }
    }

    /// (SQL, admin, expected summary or error text).
    const CASES: &[(&str, bool, &str)] = &[
        // Plain reads, names as PostgreSQL reads them.
        ("SELECT * FROM t", false, "Read r=[t] w=[] f=[]"),
        ("select a from Public.T where b = $1", false, "Read r=[public.t] w=[] f=[]"),
        (
            r#"SELECT * FROM "MyTable" JOIN MyOther ON true"#,
            false,
            "Read r=[MyTable,myother] w=[] f=[]",
        ),
        (
            r#"SELECT * FROM "Ünïcödé" JOIN ÄBC ON true"#,
            false,
            "Read r=[Äbc,Ünïcödé] w=[] f=[]",
        ),
        (r#"SELECT * FROM "s.x"."t""y""#, false, r#"Read r=[s.x.t"y] w=[] f=[]"#),
        ("SELECT * FROM db.s.t", false, "Read r=[s.t] w=[] f=[]"),
        ("SELECT * FROM ONLY t", false, "Read r=[t] w=[] f=[]"),
        ("SELECT 1;", false, "Read r=[] w=[] f=[]"),
        ("VALUES (1), (2)", false, "Read r=[] w=[] f=[]"),
        ("SELECT * FROM (TABLE foo) x", false, "Read r=[foo] w=[] f=[]"),
        (
            "SELECT * FROM a JOIN (b JOIN c ON true) ON true WHERE EXISTS (SELECT 1 FROM d) \
             AND x IN (SELECT y FROM e UNION SELECT z FROM f)",
            false,
            "Read r=[a,b,c,d,e,f] w=[] f=[]",
        ),
        ("SHOW search_path", false, "Read r=[] w=[] f=[] volatile"),
        ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", false, "Read r=[t] w=[] f=[] volatile"),
        // Functions: in SELECT, WHERE, FROM (set-returning), qualified, keywords.
        (
            "SELECT now(), lower(name) FROM t WHERE created < now() - interval '1 day'",
            false,
            "Read r=[t] w=[] f=[lower,now]",
        ),
        (
            "SELECT * FROM generate_series(1, 10) g",
            false,
            "Read r=[] w=[] f=[generate_series]",
        ),
        (
            "SELECT * FROM t, LATERAL jsonb_each(t.doc) j",
            false,
            "Read r=[t] w=[] f=[jsonb_each]",
        ),
        ("SELECT pg_catalog.now(), S.F(1)", false, "Read r=[] w=[] f=[pg_catalog.now,s.f]"),
        ("SELECT count(*) FROM t", false, "Read r=[t] w=[] f=[count]"),
        (
            "SELECT current_user, CURRENT_TIMESTAMP, current_date",
            false,
            "Read r=[] w=[] f=[current_date,current_timestamp,current_user] volatile",
        ),
        (
            "SELECT current_schema, current_role, session_user, user",
            false,
            "Read r=[] w=[] f=[current_role,current_schema,session_user,user] volatile",
        ),
        (
            "SELECT set_config('app.x', 'y', true)",
            false,
            "Read r=[] w=[] f=[set_config]",
        ),
        (
            "SELECT pg_advisory_xact_lock(1)",
            false,
            "Read r=[] w=[] f=[pg_advisory_xact_lock]",
        ),
        // Built-in functions that write make a write.
        ("SELECT nextval('s')", false, "Write r=[] w=[] f=[nextval]"),
        ("SELECT id, setval('s', 5) FROM t", false, "Write r=[t] w=[] f=[setval]"),
        // Locking clauses anywhere.
        ("SELECT * FROM t FOR UPDATE", false, "Write r=[t] w=[] f=[] lock"),
        (
            "SELECT * FROM t WHERE id IN (SELECT id FROM u FOR SHARE)",
            false,
            "Write r=[t,u] w=[] f=[] lock",
        ),
        (
            "WITH c AS (SELECT * FROM t FOR SHARE OF t NOWAIT) SELECT * FROM c",
            false,
            "Write r=[t] w=[] f=[] lock",
        ),
        // sqlparser 0.64 does not read NO KEY UPDATE / KEY SHARE: unparsed, hence a write.
        (
            "WITH c AS (SELECT * FROM t FOR NO KEY UPDATE) SELECT * FROM c",
            false,
            "Write r=[] w=[] f=[] unparsed",
        ),
        (
            "SELECT * FROM (SELECT * FROM t FOR KEY SHARE) s",
            false,
            "Write r=[] w=[] f=[] unparsed",
        ),
        (
            "SELECT (SELECT max(a) FROM (SELECT a FROM t FOR UPDATE SKIP LOCKED) x)",
            false,
            "Write r=[t] w=[] f=[max] lock",
        ),
        // Data-modifying CTEs.
        (
            "WITH ins AS (INSERT INTO log(x) VALUES (1) RETURNING *) SELECT * FROM ins",
            false,
            "Write r=[log] w=[log] f=[]",
        ),
        (
            "WITH d AS (DELETE FROM q WHERE id = $1 RETURNING id) SELECT * FROM d JOIN t USING (id)",
            false,
            "Write r=[q,t] w=[q] f=[]",
        ),
        (
            "WITH u AS (UPDATE acc SET n = n + 1 RETURNING *) INSERT INTO audit.trail SELECT * FROM u",
            false,
            "Write r=[acc,audit.trail] w=[acc,audit.trail] f=[]",
        ),
        (
            "WITH a AS (SELECT 1), b AS (SELECT * FROM a), c AS (DELETE FROM x RETURNING 1) SELECT * FROM b",
            false,
            "Write r=[x] w=[x] f=[]",
        ),
        // CTE names are not relations, within their scope.
        ("WITH c AS (SELECT * FROM t) SELECT * FROM c", false, "Read r=[t] w=[] f=[]"),
        ("WITH t AS (SELECT * FROM t) SELECT * FROM t", false, "Read r=[t] w=[] f=[]"),
        ("WITH t AS (SELECT 1) SELECT * FROM t", false, "Read r=[] w=[] f=[]"),
        (r#"WITH "T" AS (SELECT 1) SELECT * FROM t"#, false, "Read r=[t] w=[] f=[]"),
        (r#"WITH T AS (SELECT 1) SELECT * FROM "t""#, false, "Read r=[] w=[] f=[]"),
        (
            "SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) x, t",
            false,
            "Read r=[t] w=[] f=[]",
        ),
        (
            "SELECT (WITH t AS (SELECT 1) SELECT count(*) FROM t) FROM t",
            false,
            "Read r=[t] w=[] f=[count]",
        ),
        (
            "WITH t AS (SELECT 1) SELECT * FROM public.t, t",
            false,
            "Read r=[public.t] w=[] f=[]",
        ),
        (
            "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b",
            false,
            "Read r=[b] w=[] f=[]",
        ),
        (
            "WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b",
            false,
            "Read r=[] w=[] f=[]",
        ),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
            false,
            "Read r=[] w=[] f=[]",
        ),
        (
            "WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
            false,
            "Read r=[] w=[] f=[]",
        ),
        (
            "WITH a AS (WITH b AS (SELECT * FROM a) SELECT * FROM b) SELECT * FROM a",
            false,
            "Read r=[a] w=[] f=[]",
        ),
        (
            "WITH a AS (SELECT 1) SELECT * FROM (WITH b AS (SELECT * FROM a) SELECT * FROM b, c) x",
            false,
            "Read r=[c] w=[] f=[]",
        ),
        (
            "WITH c AS (SELECT 1 AS id) UPDATE t SET a = 1 FROM c WHERE t.id = c.id",
            false,
            "Write r=[t] w=[t] f=[]",
        ),
        (
            "INSERT INTO t WITH c AS (SELECT * FROM u) SELECT * FROM c",
            false,
            "Write r=[t,u] w=[t] f=[]",
        ),
        // A write target is a table even where a CTE has its name.
        ("WITH t AS (SELECT 1 AS id) DELETE FROM t", false, "Write r=[t] w=[t] f=[]"),
        // Writes.
        ("INSERT INTO t (a) VALUES ($1)", false, "Write r=[t] w=[t] f=[]"),
        (
            "INSERT INTO s.t SELECT * FROM u ON CONFLICT (id) DO UPDATE SET a = excluded.a",
            false,
            // Unqualified names sort first.
            "Write r=[u,s.t] w=[s.t] f=[]",
        ),
        (
            "UPDATE t SET a = 1 FROM u WHERE t.id = u.id RETURNING t.*",
            false,
            "Write r=[t,u] w=[t] f=[]",
        ),
        ("UPDATE t SET a = (SELECT max(a) FROM t)", false, "Write r=[t] w=[t] f=[max]"),
        (
            "DELETE FROM ONLY t USING u WHERE t.id = u.id",
            false,
            "Write r=[t,u] w=[t] f=[]",
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a \
             WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, s.a)",
            false,
            "Write r=[s,t] w=[t] f=[]",
        ),
        // EXPLAIN: a read unless it runs a write.
        ("EXPLAIN SELECT * FROM t", false, "Read r=[t] w=[] f=[] volatile"),
        ("EXPLAIN INSERT INTO t VALUES (1)", false, "Read r=[t] w=[] f=[] volatile"),
        ("EXPLAIN SELECT * FROM t FOR UPDATE", false, "Read r=[t] w=[] f=[] volatile"),
        (
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
            false,
            "Write r=[t] w=[t] f=[] volatile",
        ),
        (
            "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t",
            false,
            "Write r=[t] w=[t] f=[] volatile",
        ),
        (
            "EXPLAIN (ANALYZE true) SELECT * FROM t FOR UPDATE",
            false,
            "Write r=[t] w=[] f=[] lock volatile",
        ),
        ("EXPLAIN (ANALYZE off) DELETE FROM t", false, "Read r=[t] w=[] f=[] volatile"),
        ("EXPLAIN ANALYZE SELECT 1", false, "Read r=[] w=[] f=[] volatile"),
        (
            "EXPLAIN CREATE TABLE x AS SELECT 1",
            false,
            "NOPERM this user has no permissions to run CREATE TABLE (DDL) through QUERY",
        ),
        (
            "EXPLAIN EXECUTE p",
            true,
            "ERR QUERY does not run EXECUTE: prepared statements are session state (QUERY prepares statements itself)",
        ),
        // DDL: admins only.
        ("CREATE TABLE s.t (a int)", true, "Ddl r=[s.t] w=[s.t] f=[]"),
        (
            "CREATE TABLE t (a int)",
            false,
            "NOPERM this user has no permissions to run CREATE TABLE (DDL) through QUERY",
        ),
        ("CREATE UNLOGGED TABLE t (a int)", true, "Ddl r=[t] w=[t] f=[]"),
        ("CREATE TABLE t AS SELECT * FROM u", true, "Ddl r=[t,u] w=[t] f=[]"),
        ("DROP TABLE a, b", true, "Ddl r=[a,b] w=[a,b] f=[]"),
        (
            "DROP TABLE a",
            false,
            "NOPERM this user has no permissions to run DROP (DDL) through QUERY",
        ),
        ("TRUNCATE t", true, "Ddl r=[t] w=[t] f=[]"),
        (
            "TRUNCATE t",
            false,
            "NOPERM this user has no permissions to run TRUNCATE (DDL) through QUERY",
        ),
        ("ALTER TABLE t ADD COLUMN b int", true, "Ddl r=[t] w=[t] f=[]"),
        ("CREATE INDEX ON t (a)", true, "Ddl r=[t] w=[t] f=[]"),
        ("COMMENT ON TABLE t IS 'x'", true, "Ddl r=[] w=[] f=[]"),
        ("GRANT SELECT ON t TO bob", true, "Ddl r=[] w=[] f=[]"),
        (
            "REVOKE SELECT ON t FROM bob",
            false,
            "NOPERM this user has no permissions to run REVOKE (DDL) through QUERY",
        ),
        ("CREATE VIEW v AS SELECT * FROM t", true, "Ddl r=[t,v] w=[v] f=[]"),
        ("REFRESH MATERIALIZED VIEW m", true, "Ddl r=[m] w=[m] f=[]"),
        ("CREATE SEQUENCE s", true, "Ddl r=[] w=[] f=[]"),
        ("CREATE SCHEMA app", true, "Ddl r=[] w=[] f=[]"),
        // DDL the parser cannot read: an admin's goes to the primary.
        ("DROP OWNED BY bob", true, "Ddl r=[] w=[] f=[] unparsed"),
        (
            "DROP OWNED BY bob",
            false,
            "NOPERM this user has no permissions to run DROP (DDL) through QUERY",
        ),
        // Refused for everyone (admin here).
        (
            "BEGIN",
            true,
            "ERR QUERY does not run BEGIN: transaction control would leak through pooled connections (each QUERY is its own transaction)",
        ),
        ("START TRANSACTION", true, "ERR QUERY does not run START TRANSACTION: transaction"),
        ("COMMIT", true, "ERR QUERY does not run COMMIT: transaction"),
        ("END", true, "ERR QUERY does not run END: transaction"),
        ("ROLLBACK", true, "ERR QUERY does not run ROLLBACK: transaction"),
        ("ABORT", true, "ERR QUERY does not run ROLLBACK: transaction"),
        ("SAVEPOINT a", true, "ERR QUERY does not run SAVEPOINT: transaction"),
        (
            "RELEASE SAVEPOINT a",
            true,
            "ERR QUERY does not run RELEASE SAVEPOINT: transaction",
        ),
        (
            "ROLLBACK TO SAVEPOINT a",
            true,
            "ERR QUERY does not run ROLLBACK TO SAVEPOINT: transaction",
        ),
        ("PREPARE TRANSACTION 'x'", true, "ERR QUERY does not run PREPARE: prepared"),
        ("COMMIT PREPARED 'x'", true, "ERR QUERY does not run COMMIT: transaction"),
        (
            "SET search_path = x",
            true,
            "ERR QUERY does not run SET: session state would leak through pooled connections",
        ),
        ("SET LOCAL work_mem = '1MB'", true, "ERR QUERY does not run SET: session state"),
        ("SET TIME ZONE 'UTC'", true, "ERR QUERY does not run SET: session state"),
        ("SET ROLE bob", true, "ERR QUERY does not run SET ROLE: session state"),
        (
            "SET SESSION AUTHORIZATION bob",
            true,
            "ERR QUERY does not run SET SESSION AUTHORIZATION: session state",
        ),
        (
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            true,
            "ERR QUERY does not run SET TRANSACTION: transaction",
        ),
        ("RESET ALL", true, "ERR QUERY does not run RESET: session state"),
        ("RESET search_path", true, "ERR QUERY does not run RESET: session state"),
        ("DISCARD ALL", true, "ERR QUERY does not run DISCARD: session state"),
        ("LOAD 'auto_explain'", true, "ERR QUERY does not run LOAD: session state"),
        (
            "SELECT set_config('search_path', 'x', false)",
            true,
            "ERR QUERY does not run set_config(): session state",
        ),
        (
            "SELECT * FROM t WHERE pg_try_advisory_lock(id)",
            true,
            "ERR QUERY does not run pg_try_advisory_lock(): session state",
        ),
        (
            "LISTEN ch",
            true,
            "ERR QUERY does not run LISTEN: notifications need a connection of their own",
        ),
        ("NOTIFY ch, 'x'", true, "ERR QUERY does not run NOTIFY: notifications"),
        ("UNLISTEN *", true, "ERR QUERY does not run UNLISTEN: notifications"),
        ("SELECT pg_notify('ch', 'x')", true, "ERR QUERY does not run pg_notify(): notifications"),
        ("PREPARE p AS SELECT 1", true, "ERR QUERY does not run PREPARE: prepared"),
        ("EXECUTE p", true, "ERR QUERY does not run EXECUTE: prepared"),
        ("DEALLOCATE p", true, "ERR QUERY does not run DEALLOCATE: prepared"),
        ("DECLARE c CURSOR FOR SELECT 1", true, "ERR QUERY does not run DECLARE: cursors"),
        ("FETCH c", true, "ERR QUERY does not run FETCH: cursors"),
        ("CLOSE c", true, "ERR QUERY does not run CLOSE: cursors"),
        ("COPY t FROM STDIN", true, "ERR QUERY does not run COPY: COPY streams"),
        ("COPY (SELECT 1) TO STDOUT", true, "ERR QUERY does not run COPY: COPY streams"),
        (
            "DO $$ BEGIN PERFORM 1; END $$",
            true,
            "ERR QUERY does not run DO: procedures and code blocks",
        ),
        ("CALL p()", true, "ERR QUERY does not run CALL: procedures and code blocks"),
        (
            "LOCK TABLE t",
            true,
            "ERR QUERY does not run LOCK: explicit locks are transaction state",
        ),
        ("VACUUM t", true, "ERR QUERY does not run VACUUM: maintenance"),
        ("ANALYZE t", true, "ERR QUERY does not run ANALYZE: maintenance"),
        ("CHECKPOINT", true, "ERR QUERY does not run CHECKPOINT: maintenance"),
        ("REINDEX TABLE t", true, "ERR QUERY does not run REINDEX: maintenance"),
        (
            "CREATE TEMP TABLE t (a int)",
            true,
            "ERR QUERY does not run CREATE TEMPORARY TABLE: temporary objects are session state",
        ),
        (
            "CREATE TEMPORARY TABLE t AS SELECT 1",
            true,
            "ERR QUERY does not run CREATE TEMPORARY TABLE: temporary",
        ),
        (
            "CREATE GLOBAL TEMPORARY TABLE t (a int) ON COMMIT DELETE ROWS",
            true,
            "ERR QUERY does not run CREATE TEMPORARY TABLE: temporary",
        ),
        (
            "CREATE TEMP VIEW v AS SELECT 1",
            true,
            "ERR QUERY does not run CREATE TEMPORARY VIEW: temporary",
        ),
        (
            "CREATE TEMP SEQUENCE s",
            true,
            "ERR QUERY does not run CREATE TEMPORARY SEQUENCE: temporary",
        ),
        (
            "SELECT * INTO t FROM u",
            true,
            "ERR QUERY does not run SELECT INTO: it creates a table (use CREATE TABLE ... AS as an admin)",
        ),
        ("SELECT * INTO TEMP t FROM u", true, "ERR QUERY does not run SELECT INTO: it creates"),
        (
            "SELECT a INTO t FROM u UNION SELECT b FROM v",
            true,
            "ERR QUERY does not run SELECT INTO: it creates",
        ),
        ("USE db", true, "ERR QUERY does not run USE db: QUERY runs SELECT"),
        // Statement count.
        ("", false, "ERR QUERY needs an SQL statement"),
        (" \n\t ", false, "ERR QUERY needs an SQL statement"),
        ("-- just a comment", false, "ERR QUERY needs an SQL statement"),
        ("/* a /* nested */ comment */", false, "ERR QUERY needs an SQL statement"),
        ("SELECT 1; SELECT 2", false, "ERR QUERY takes exactly one SQL statement"),
        ("SELECT 1; COMMIT", true, "ERR QUERY takes exactly one SQL statement"),
        ("SELECT 1; garbage here", false, "ERR QUERY takes exactly one SQL statement"),
        // Unparsed: a write for the primary to judge, unless its tokens show a refused kind.
        ("SELEKT 1", false, "Write r=[] w=[] f=[] unparsed"),
        ("SELECT * FROM t WHERE", false, "Write r=[] w=[] f=[] unparsed"),
        ("SELECT 'unterminated", false, "Write r=[] w=[] f=[] unparsed"),
        ("'unterminated", false, "Write r=[] w=[] f=[] unparsed"),
        ("BEGIN; 'unterminated", false, "ERR QUERY does not run BEGIN: transaction"),
        ("TABLE foo", false, "Write r=[] w=[] f=[] unparsed"),
        ("SELECT g(VARIADIC ARRAY[1])", false, "Write r=[] w=[] f=[] unparsed"),
        ("SELECT * FROM ROWS FROM (f(1))", false, "Write r=[] w=[] f=[] unparsed"),
        (
            "SELECT a, pg_advisory_lock(1) FROM ROWS FROM (f(1))",
            false,
            "ERR QUERY does not run pg_advisory_lock(): session state",
        ),
        (
            "SELECT a INTO TEMPORARY x FROM ROWS FROM (f(1))",
            false,
            "ERR QUERY does not run SELECT INTO: it creates",
        ),
        (
            "CREATE LOCAL TEMP TABLE x (LIKE y INCLUDING ALL) PARTITION OF z",
            true,
            "ERR QUERY does not run CREATE TEMP: temporary",
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
            true,
            "Ddl r=[] w=[] f=[]",
        ),
    ];

    #[test]
    fn classification_table() {
        let mut failures = Vec::new();
        for (sql, admin, want) in CASES {
            let got = outcome(sql, *admin);
            if !got.starts_with(want) {
                failures.push(format!(
                    "{sql:?} (admin {admin})\n    want {want}\n    got  {got}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases differ:\n{}",
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn every_refused_statement_is_refused_for_admins_and_users() {
        for (sql, _, want) in CASES
            .iter()
            .filter(|(_, _, w)| w.starts_with("ERR QUERY does not run"))
        {
            for admin in [false, true] {
                let got = outcome(sql, admin);
                assert!(got.starts_with(want), "{sql:?} admin {admin}: {got}");
            }
        }
    }

    #[test]
    fn unparsed_sql_carries_the_parser_message() {
        let c = classify("SELEKT 1", false).expect("a write, not an error");
        assert_eq!((c.kind, c.parsed), (Kind::Write, false));
        assert_eq!(c.normalized, "SELEKT 1");
        let message = c.parse_error.clone().expect("parse error");
        assert!(message.contains("SELEKT"), "{message}");
        let error = c.syntax_error().expect("syntax error").to_string();
        assert!(error.starts_with("ERR SQL syntax error: "), "{error}");
        assert!(error.contains(&message), "{error}");
        assert!(classify("SELECT 1", false)
            .expect("read")
            .syntax_error()
            .is_none());
    }

    #[test]
    fn normalized_text_ignores_layout_comments_and_case() {
        let key = |sql: &str| classify(sql, false).expect("classifies").normalized;
        let canonical = key("SELECT * FROM t WHERE a = $1");
        assert_eq!(canonical, "SELECT * FROM t WHERE a = $1");
        for variant in [
            "select  *\n from T where A = $1",
            "SELECT /* hint */ * FROM t -- trailing\n WHERE a=$1",
            "\tSeLeCt * FrOm t WhErE a = $1;",
            "SELECT * FROM t WHERE (a = $1)",
        ] {
            let got = key(variant);
            if variant.contains('(') {
                // Parentheses are kept as written: a different key, never a wrong one.
                assert_ne!(got, canonical, "{variant}");
            } else {
                assert_eq!(got, canonical, "{variant}");
            }
        }
        // What changes the meaning changes the key.
        for different in [
            "SELECT * FROM t WHERE a = $2",
            r#"SELECT * FROM "T" WHERE a = $1"#,
            "SELECT * FROM t WHERE a = 'x'",
            "SELECT * FROM t WHERE a = $1 LIMIT 1",
            "SELECT * FROM s.t WHERE a = $1",
        ] {
            assert_ne!(key(different), canonical, "{different}");
        }
        assert_ne!(key("SELECT 'A'"), key("SELECT 'a'"));
        assert_ne!(key(r#"SELECT "A" FROM t"#), key("SELECT A FROM t"));
        assert_eq!(key(r#"SELECT "a" FROM t"#), r#"SELECT "a" FROM t"#);
    }

    #[test]
    fn long_identifiers_are_cut_like_postgresql() {
        let long = "x".repeat(70);
        let c = classify(&format!("SELECT * FROM {long}"), false).expect("read");
        let name = &c.relations.iter().next().expect("one relation").name;
        assert_eq!(name.len(), MAX_IDENTIFIER_BYTES);
        // A multi-byte character is not split.
        let wide = "é".repeat(40);
        let c = classify(&format!("SELECT * FROM \"{wide}\""), false).expect("read");
        let name = &c.relations.iter().next().expect("one relation").name;
        assert_eq!(name, &"é".repeat(31));
    }

    #[test]
    fn names_quote_for_sql() {
        assert_eq!(Name::qualified("s", "t").to_sql(), r#""s"."t""#);
        assert_eq!(Name::unqualified(r#"we"ird"#).to_sql(), r#""we""ird""#);
        assert_eq!(Name::qualified("s", "t").to_string(), "s.t");
    }

    #[test]
    fn calls_carry_their_argument_counts() {
        let c = classify(
            "SELECT count(*), count(a), f(), f(1, 2), g(h => 1), now, CURRENT_DATE, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY a), x((SELECT 1)) \
             FROM t, generate_series(1, 3)",
            false,
        )
        .expect("read");
        let calls: Vec<String> = c
            .calls
            .iter()
            .map(|f| {
                format!(
                    "{}/{}",
                    f.name,
                    f.args.map_or("*".into(), |n| n.to_string())
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                "count/0",
                "count/1",
                "current_date/*",
                "f/0",
                "f/2",
                "g/1",
                "generate_series/2",
                "percentile_cont/*",
                "x/1",
            ]
        );
        // `now` without parentheses is a column, not a call.
        assert!(!c.functions.contains(&Name::unqualified("now")));
    }

    #[test]
    fn read_only_relations_exclude_written_ones() {
        let c = classify("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", false).expect("write");
        let read: Vec<String> = c.read_only_relations().map(|n| n.to_string()).collect();
        assert_eq!(read, ["u"]);
        assert!(!c.calls_functions());
    }

    #[test]
    fn deep_sql_is_bounded() {
        // Nesting: the parser's recursion limit; chains: MAX_OPERATORS. Unparsed SQL (a write),
        // never a stack overflow, even on a 1 MiB stack.
        let run = |sql: String| {
            std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || classify(&sql, false).map(|c| (c.kind, c.parsed)))
                .expect("thread")
                .join()
                .expect("no overflow")
        };
        let long = 200_000;
        for sql in [
            format!("SELECT {}1{}", "(".repeat(long), ")".repeat(long)),
            format!("SELECT {}1", "1 + ".repeat(long)),
            format!("SELECT * FROM t WHERE {}true", "a = 1 OR ".repeat(long)),
            format!("SELECT 1{}", "::int".repeat(long)),
            format!("SELECT a{}", "[1]".repeat(long)),
            format!("SELECT {}true", "NOT ".repeat(long)),
        ] {
            assert_eq!(run(sql), Ok((Kind::Write, false)));
        }
        // Below the bound, long chains are read as usual.
        let sql = format!("SELECT * FROM t WHERE {}true", "a = 1 OR ".repeat(1000));
        assert_eq!(run(sql), Ok((Kind::Read, true)));
        let sql = format!("SELECT {}1", "1 + ".repeat(MAX_OPERATORS));
        assert_eq!(run(sql), Ok((Kind::Read, true)));
        let sql = format!("SELECT 1{}", "::int".repeat(MAX_OPERATORS / 2));
        assert_eq!(run(sql), Ok((Kind::Read, true)));
    }

    /// A keyword in random case.
    fn keyword(word: &'static str) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
            word.chars()
                .zip(upper)
                .map(|(c, u)| {
                    if u {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        })
    }

    /// Whitespace and comments between tokens.
    fn gap() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(" ".to_string()),
                Just("\t".to_string()),
                Just("\n".to_string()),
                Just("  ".to_string()),
                Just(" /* c; */ ".to_string()),
                Just(" -- c;\n".to_string()),
            ],
            1..3,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A table name that is never a keyword: unquoted in random case, or quoted.
    #[derive(Debug, Clone)]
    struct Table {
        schema: Option<String>,
        name: String,
        quoted: bool,
    }

    impl Table {
        fn written(&self, case: &[bool]) -> String {
            let spell = |s: &str| -> String {
                if self.quoted {
                    return quote_ident(s);
                }
                s.chars()
                    .zip(case.iter().cycle())
                    .map(|(c, u)| if *u { c.to_ascii_uppercase() } else { c })
                    .collect()
            };
            match &self.schema {
                Some(schema) => format!("{}.{}", spell(schema), spell(&self.name)),
                None => spell(&self.name),
            }
        }

        fn name(&self) -> Name {
            Name {
                schema: self.schema.clone(),
                name: self.name.clone(),
            }
        }
    }

    fn table() -> impl Strategy<Value = Table> {
        (
            proptest::option::of("s_[a-z0-9]{1,6}"),
            "t_[a-z0-9_]{1,8}",
            any::<bool>(),
        )
            .prop_map(|(schema, name, quoted)| Table {
                schema,
                name,
                quoted,
            })
    }

    fn spelled(words: &[String], gaps: &[String]) -> String {
        let mut sql = String::new();
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                sql.push_str(&gaps[(i - 1) % gaps.len()]);
            }
            sql.push_str(w);
        }
        sql
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn layout_and_keyword_case_do_not_change_key_or_relations(
            first in table(),
            second in proptest::option::of(table()),
            limit in proptest::option::of(1u32..1000),
            kw in (keyword("select"), keyword("from"), keyword("join"), keyword("on"),
                   keyword("where"), keyword("and"), keyword("order"), keyword("by"),
                   keyword("limit"), keyword("true")),
            case in proptest::collection::vec(any::<bool>(), 1..8),
            gaps in proptest::collection::vec(gap(), 1..12),
        ) {
            let (select, from, join, on, where_, and, order, by, limit_kw, true_) = kw;
            let build = |kw: [&str; 10], case: &[bool], gaps: &[String]| {
                let mut words: Vec<String> = vec![
                    kw[0].into(), "a".into(), ",".into(), "b".into(), kw[1].into(),
                    first.written(case), "x".into(),
                ];
                if let Some(second) = &second {
                    words.extend([kw[2].into(), second.written(case), "y".into(), kw[3].into(), kw[9].into()]);
                }
                words.extend([kw[4].into(), "a".into(), "=".into(), "$1".into(), kw[5].into(),
                              "b".into(), "<>".into(), "$2".into()]);
                words.extend([kw[6].into(), kw[7].into(), "a".into()]);
                if let Some(n) = limit {
                    words.extend([kw[8].into(), n.to_string()]);
                }
                spelled(&words, gaps)
            };
            let canonical = build(
                ["SELECT", "FROM", "JOIN", "ON", "WHERE", "AND", "ORDER", "BY", "LIMIT", "true"],
                &[false],
                &[" ".to_string()],
            );
            let variant = build(
                [&select, &from, &join, &on, &where_, &and, &order, &by, &limit_kw, &true_],
                &case,
                &gaps,
            );
            let want = classify(&canonical, false).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = classify(&variant, false).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(got.parsed, "{variant}");
            prop_assert_eq!(&got.normalized, &want.normalized, "{}", variant);
            prop_assert_eq!(got.kind, Kind::Read);
            let mut expected: BTreeSet<Name> = BTreeSet::from([first.name()]);
            if let Some(second) = &second {
                expected.insert(second.name());
            }
            prop_assert_eq!(&got.relations, &expected, "{}", variant);
            prop_assert_eq!(&want.relations, &expected);
            prop_assert!(got.writes.is_empty() && got.functions.is_empty());
        }
    }
}
