//! Values of QUERY results: a column value as PostgreSQL sends it to tokio-postgres (always in
//! the binary format) becomes a `PgValue`, and rows of them become the QUERY reply — RESP2,
//! RESP3 (`write_resp`) or FORMAT JSON (`to_json`) — as DESIGN.md's "QUERY: database
//! read-through" lays out. Integers, floats, booleans, bytea, json/jsonb and arrays keep their
//! shape; every other type becomes exactly the text PostgreSQL's own output function prints,
//! decoded here from the binary form (numeric digit by digit, dates through the proleptic
//! Gregorian calendar, intervals in the default `postgres` IntervalStyle, ...).
//!
//! The text forms assume the session settings Strata's connections run with, PostgreSQL's
//! defaults: DateStyle ISO, IntervalStyle postgres, extra_float_digits 1 (shortest round-trip
//! floats) and bytea_output hex; timestamptz is always printed in UTC (`+00`), as DESIGN asks.
//!
//! Deliberately not done: types whose text form is not in the value itself — `money` (the
//! server's lc_monetary decides it) and the `reg*` OID aliases (a catalog lookup) — and binary
//! formats Strata does not know (tsquery, extension types other than citext and hstore, user
//! multiranges). Those give a `ValueError` asking for a cast to text; a malformed binary value
//! gives one too. Nothing here panics on what the server sends, and nesting (records inside
//! arrays inside records) is bounded.

use crate::server::reply::Reply;
use std::borrow::Cow;
use std::error::Error;
use std::fmt::{self, Write as _};
use tokio_postgres::types::{Field, FromSql, Kind, Type};
use tokio_postgres::{Column, Row};

/// One value of a result row, in the shape the reply needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PgValue {
    /// SQL NULL.
    Null,
    /// int2, int4, int8 and oid.
    Int(i64),
    /// float8.
    Float(f64),
    /// float4, kept apart from float8: PostgreSQL prints it with the shortest digits that
    /// identify the *float4* and switches to exponent form sooner (`1e+06`, where a float8 prints
    /// `1000000`).
    Float4(f32),
    Bool(bool),
    /// bytea, the raw bytes.
    Bytes(Vec<u8>),
    /// json and jsonb, as PostgreSQL prints them.
    Json(String),
    /// An array of any element type; a multi-dimensional array is an array of arrays. Lower
    /// bounds other than 1 are not kept (`text_form` has them).
    Array(Vec<PgValue>),
    /// Any other type, in PostgreSQL's text output form.
    Text(String),
}

impl PgValue {
    /// Converts one value from its binary form; `None` is NULL.
    pub fn decode(ty: &Type, raw: Option<&[u8]>) -> Result<PgValue, ValueError> {
        match raw {
            None => Ok(PgValue::Null),
            Some(raw) => value(ty, raw, 0),
        }
    }

    /// PostgreSQL's text form of a scalar value (what `::text` prints); `None` for NULL and for
    /// arrays, whose literal needs the element type and lower bounds (see `text_form`).
    pub fn scalar_text(&self) -> Option<Cow<'_, str>> {
        match self {
            PgValue::Null | PgValue::Array(_) => None,
            PgValue::Int(n) => Some(Cow::Owned(n.to_string())),
            PgValue::Float(v) => Some(Cow::Owned(float8_text(*v))),
            PgValue::Float4(v) => Some(Cow::Owned(float4_text(*v))),
            PgValue::Bool(b) => Some(Cow::Borrowed(if *b { "t" } else { "f" })),
            PgValue::Bytes(b) => {
                let mut s = String::with_capacity(2 + 2 * b.len());
                s.push_str("\\x");
                push_hex(&mut s, b);
                Some(Cow::Owned(s))
            }
            PgValue::Json(s) | PgValue::Text(s) => Some(Cow::Borrowed(s)),
        }
    }
}

/// Lets a caller read a column straight into a `PgValue` (`row.try_get::<_, PgValue>(i)`);
/// every type is accepted, unknown ones fail in `from_sql` with a `ValueError`.
impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<PgValue, Box<dyn Error + Sync + Send>> {
        Ok(value(ty, raw, 0)?)
    }

    fn from_sql_null(_: &Type) -> Result<PgValue, Box<dyn Error + Sync + Send>> {
        Ok(PgValue::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A value Strata cannot convert: a malformed binary value, or a type without a conversion
/// (the message says to cast it to text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(String);

impl ValueError {
    fn malformed(what: &str, detail: impl fmt::Display) -> ValueError {
        ValueError(format!("malformed {what} value from PostgreSQL: {detail}"))
    }

    fn unsupported(ty: &Type, why: &str) -> ValueError {
        ValueError(format!(
            "cannot return a value of type {}.{} (oid {}): {why}; cast it to text in the query \
             (e.g. col::text)",
            ty.schema(),
            ty.name(),
            ty.oid()
        ))
    }

    fn in_column(self, name: &str) -> ValueError {
        ValueError(format!("column \"{name}\": {}", self.0))
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for ValueError {}

/// A column's bytes as received, without any conversion.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Raw<'a>, Box<dyn Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Raw<'a>, Box<dyn Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The column names of a result, in order.
pub fn column_names(columns: &[Column]) -> Vec<String> {
    columns.iter().map(|c| c.name().to_string()).collect()
}

/// Converts every value of a row; the error names the column that failed.
pub fn row_values(row: &Row) -> Result<Vec<PgValue>, ValueError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let raw: Raw<'_> = row
            .try_get(i)
            .map_err(|e| ValueError(e.to_string()).in_column(col.name()))?;
        let v = PgValue::decode(col.type_(), raw.0).map_err(|e| e.in_column(col.name()))?;
        out.push(v);
    }
    Ok(out)
}

/// PostgreSQL's text output of one non-NULL value of type `ty` — what `value::text` prints,
/// arrays (with their lower bounds), ranges and records included.
pub fn text_form(ty: &Type, raw: &[u8]) -> Result<String, ValueError> {
    let mut out = String::new();
    write_text(&mut out, ty, raw, 0)?;
    Ok(out)
}

/// The QUERY reply: an array whose first element is the array of column names and each next
/// element a row. int → integer, float → double (RESP3) or bulk string of PostgreSQL's text
/// (RESP2), bool → boolean (RESP3) or 0/1 (RESP2), NULL → null, bytea → the raw bytes, arrays
/// → arrays, everything else → a bulk string of its text.
pub fn write_resp(out: &mut Reply, columns: &[String], rows: &[Vec<PgValue>]) {
    out.array(rows.len() + 1);
    out.array(columns.len());
    for c in columns {
        out.bulk(c.as_bytes());
    }
    for row in rows {
        out.array(row.len());
        for v in row {
            write_value(out, v);
        }
    }
}

/// One value of a QUERY reply (see `write_resp`).
pub fn write_value(out: &mut Reply, v: &PgValue) {
    match v {
        PgValue::Null => out.null(),
        PgValue::Int(n) => out.int(*n),
        PgValue::Float(f) => out.double_text(*f, &float8_text(*f)),
        PgValue::Float4(f) => out.double_text(f64::from(*f), &float4_text(*f)),
        PgValue::Bool(b) => out.boolean(*b),
        PgValue::Bytes(b) => out.bulk(b),
        PgValue::Json(s) | PgValue::Text(s) => out.bulk(s.as_bytes()),
        PgValue::Array(items) => {
            out.array(items.len());
            for item in items {
                write_value(out, item);
            }
        }
    }
}

/// The FORMAT JSON reply: `{"columns":[...],"rows":[[...]],"source":"..."}`. Integers and
/// finite floats are JSON numbers (floats in PostgreSQL's shortest text), NaN and ±Infinity
/// the strings PostgreSQL prints, bool true/false, NULL null, json/jsonb embedded as JSON
/// (verbatim, so big numbers and key order survive), arrays arrays, bytea `"\\x<hex>"`, and
/// everything else (numeric included, to keep its precision) a JSON string of its text.
pub fn to_json(columns: &[String], rows: &[Vec<PgValue>], source: &str) -> String {
    let mut out = String::from("{\"columns\":[");
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, c);
    }
    out.push_str("],\"rows\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            push_json_value(&mut out, v);
        }
        out.push(']');
    }
    out.push_str("],\"source\":");
    push_json_str(&mut out, source);
    out.push('}');
    out
}

fn push_json_value(out: &mut String, v: &PgValue) {
    match v {
        PgValue::Null => out.push_str("null"),
        PgValue::Int(n) => {
            let _ = write!(out, "{n}");
        }
        PgValue::Float(f) if f.is_finite() => push_float8(out, *f),
        PgValue::Float4(f) if f.is_finite() => push_float4(out, *f),
        PgValue::Float(f) => push_json_str(out, &float8_text(*f)),
        PgValue::Float4(f) => push_json_str(out, &float4_text(*f)),
        PgValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        PgValue::Bytes(b) => {
            out.push_str("\"\\\\x");
            push_hex(out, b);
            out.push('"');
        }
        PgValue::Json(s) => {
            let t = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
            // PostgreSQL only ever sends valid JSON here; checking keeps a bad value (or one
            // nested deeper than serde_json's 128 levels) from breaking the whole document: it
            // is then sent as a string.
            if serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok() {
                out.push_str(t);
            } else {
                push_json_str(out, s);
            }
        }
        PgValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_value(out, item);
            }
            out.push(']');
        }
        PgValue::Text(s) => push_json_str(out, s),
    }
}

/// A JSON string literal (RFC 8259 escaping; non-ASCII text stays UTF-8).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// Built-in type OIDs (fixed in PostgreSQL's catalog, the same in every version).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT2VECTOR: u32 = 22;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const TID: u32 = 27;
    pub const XID: u32 = 28;
    pub const CID: u32 = 29;
    pub const OIDVECTOR: u32 = 30;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const PG_NODE_TREE: u32 = 194;
    pub const POINT: u32 = 600;
    pub const LSEG: u32 = 601;
    pub const PATH: u32 = 602;
    pub const BOX: u32 = 603;
    pub const POLYGON: u32 = 604;
    pub const LINE: u32 = 628;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const CIRCLE: u32 = 718;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const REFCURSOR: u32 = 1790;
    pub const REGPROC: u32 = 24;
    pub const REGPROCEDURE: u32 = 2202;
    pub const REGOPER: u32 = 2203;
    pub const REGOPERATOR: u32 = 2204;
    pub const REGCLASS: u32 = 2205;
    pub const REGTYPE: u32 = 2206;
    pub const RECORD: u32 = 2249;
    pub const RECORD_ARRAY: u32 = 2287;
    pub const ANYARRAY: u32 = 2277;
    pub const CSTRING: u32 = 2275;
    pub const VOID: u32 = 2278;
    pub const UUID: u32 = 2950;
    pub const TXID_SNAPSHOT: u32 = 2970;
    pub const PG_LSN: u32 = 3220;
    pub const TSVECTOR: u32 = 3614;
    pub const REGCONFIG: u32 = 3734;
    pub const REGDICTIONARY: u32 = 3769;
    pub const JSONB: u32 = 3802;
    pub const JSONPATH: u32 = 4072;
    pub const REGNAMESPACE: u32 = 4089;
    pub const REGROLE: u32 = 4096;
    pub const REGCOLLATION: u32 = 4191;
    pub const PG_SNAPSHOT: u32 = 5038;
    pub const XID8: u32 = 5069;
}

/// How deep records, arrays and ranges may nest inside one value: PostgreSQL's own nesting is
/// far shallower in practice, and the bound keeps a hostile server from exhausting the stack.
const MAX_DEPTH: usize = 64;

fn deeper(depth: usize) -> Result<usize, ValueError> {
    if depth >= MAX_DEPTH {
        Err(ValueError::malformed(
            "nested",
            format!("more than {MAX_DEPTH} levels of nesting"),
        ))
    } else {
        Ok(depth + 1)
    }
}

fn value(ty: &Type, raw: &[u8], depth: usize) -> Result<PgValue, ValueError> {
    let depth = deeper(depth)?;
    Ok(match ty.oid() {
        oid::BOOL => PgValue::Bool(bool_of(raw)?),
        oid::INT2 => PgValue::Int(i64::from(i16::from_be_bytes(fixed(raw, "int2")?))),
        oid::INT4 => PgValue::Int(i64::from(i32::from_be_bytes(fixed(raw, "int4")?))),
        oid::INT8 => PgValue::Int(i64::from_be_bytes(fixed(raw, "int8")?)),
        oid::OID => PgValue::Int(i64::from(u32::from_be_bytes(fixed(raw, "oid")?))),
        oid::FLOAT4 => PgValue::Float4(f32::from_be_bytes(fixed(raw, "float4")?)),
        oid::FLOAT8 => PgValue::Float(f64::from_be_bytes(fixed(raw, "float8")?)),
        oid::BYTEA => PgValue::Bytes(raw.to_vec()),
        oid::JSON => PgValue::Json(utf8(raw, "json")?.to_string()),
        oid::JSONB => PgValue::Json(versioned_text(raw, "jsonb")?.to_string()),
        // Arrays underneath, but a single space-separated list in their text form.
        oid::INT2VECTOR | oid::OIDVECTOR => PgValue::Text(text_form_at(ty, raw, depth)?),
        oid::RECORD_ARRAY => array_value(&Type::RECORD, raw, depth)?,
        oid::ANYARRAY => array_value(&anyarray_elem(raw)?, raw, depth)?,
        _ => match ty.kind() {
            Kind::Array(elem) => array_value(elem, raw, depth)?,
            Kind::Domain(base) => value(base, raw, depth)?,
            _ => PgValue::Text(text_form_at(ty, raw, depth)?),
        },
    })
}

fn text_form_at(ty: &Type, raw: &[u8], depth: usize) -> Result<String, ValueError> {
    // Most text forms are about as long as the binary value (text types exactly).
    let mut out = String::with_capacity(raw.len());
    write_text(&mut out, ty, raw, depth)?;
    Ok(out)
}

/// Appends PostgreSQL's text output of one non-NULL value.
fn write_text(out: &mut String, ty: &Type, raw: &[u8], depth: usize) -> Result<(), ValueError> {
    let depth = deeper(depth)?;
    match ty.oid() {
        oid::BOOL => out.push(if bool_of(raw)? { 't' } else { 'f' }),
        oid::INT2 => push_display(out, i16::from_be_bytes(fixed(raw, "int2")?)),
        oid::INT4 => push_display(out, i32::from_be_bytes(fixed(raw, "int4")?)),
        oid::INT8 => push_display(out, i64::from_be_bytes(fixed(raw, "int8")?)),
        oid::OID | oid::XID | oid::CID => push_display(out, u32::from_be_bytes(fixed(raw, "oid")?)),
        oid::XID8 => push_display(out, u64::from_be_bytes(fixed(raw, "xid8")?)),
        oid::FLOAT4 => push_float4(out, f32::from_be_bytes(fixed(raw, "float4")?)),
        oid::FLOAT8 => push_float8(out, f64::from_be_bytes(fixed(raw, "float8")?)),
        oid::BYTEA => {
            out.push_str("\\x");
            push_hex(out, raw);
        }
        oid::CHAR => char_text(out, raw)?,
        oid::NAME
        | oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::UNKNOWN
        | oid::JSON
        | oid::XML
        | oid::PG_NODE_TREE
        | oid::REFCURSOR
        | oid::CSTRING => out.push_str(utf8(raw, ty.name())?),
        oid::VOID => {
            if !raw.is_empty() {
                return Err(ValueError::malformed("void", "not empty"));
            }
        }
        oid::JSONB => out.push_str(versioned_text(raw, "jsonb")?),
        oid::JSONPATH => out.push_str(versioned_text(raw, "jsonpath")?),
        oid::NUMERIC => numeric_text(out, raw)?,
        oid::DATE => date_text(out, i32::from_be_bytes(fixed(raw, "date")?)),
        oid::TIME => time_text(out, raw)?,
        oid::TIMETZ => timetz_text(out, raw)?,
        oid::TIMESTAMP => timestamp_text(out, i64::from_be_bytes(fixed(raw, "timestamp")?), false),
        oid::TIMESTAMPTZ => {
            timestamp_text(out, i64::from_be_bytes(fixed(raw, "timestamptz")?), true)
        }
        oid::INTERVAL => interval_text(out, raw)?,
        oid::UUID => uuid_text(out, raw)?,
        oid::INET => inet_text(out, raw, false)?,
        oid::CIDR => inet_text(out, raw, true)?,
        oid::MACADDR => mac_text(out, &fixed::<6>(raw, "macaddr")?),
        oid::MACADDR8 => mac_text(out, &fixed::<8>(raw, "macaddr8")?),
        oid::BIT | oid::VARBIT => bit_text(out, raw)?,
        oid::TID => tid_text(out, raw)?,
        oid::PG_LSN => {
            let lsn = u64::from_be_bytes(fixed(raw, "pg_lsn")?);
            let _ = write!(out, "{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF);
        }
        oid::TXID_SNAPSHOT | oid::PG_SNAPSHOT => snapshot_text(out, raw)?,
        oid::POINT | oid::LSEG | oid::PATH | oid::BOX | oid::POLYGON | oid::LINE | oid::CIRCLE => {
            geometric_text(out, ty.oid(), raw)?
        }
        oid::TSVECTOR => tsvector_text(out, raw)?,
        oid::INT2VECTOR | oid::OIDVECTOR => vector_text(out, ty, raw, depth)?,
        oid::RECORD => record_text(out, None, raw, depth)?,
        oid::RECORD_ARRAY => array_text(out, &Type::RECORD, raw, depth)?,
        oid::ANYARRAY => array_text(out, &anyarray_elem(raw)?, raw, depth)?,
        oid::MONEY => {
            return Err(ValueError::unsupported(
                ty,
                "its text form depends on the server's lc_monetary",
            ))
        }
        oid::REGPROC
        | oid::REGPROCEDURE
        | oid::REGOPER
        | oid::REGOPERATOR
        | oid::REGCLASS
        | oid::REGTYPE
        | oid::REGCONFIG
        | oid::REGDICTIONARY
        | oid::REGNAMESPACE
        | oid::REGROLE
        | oid::REGCOLLATION => {
            return Err(ValueError::unsupported(
                ty,
                "its text form is a catalog lookup",
            ))
        }
        _ => match ty.kind() {
            Kind::Array(elem) => array_text(out, elem, raw, depth)?,
            Kind::Domain(base) => write_text(out, base, raw, depth)?,
            Kind::Enum(_) => out.push_str(utf8(raw, ty.name())?),
            Kind::Range(sub) => range_text(out, sub, raw, depth)?,
            Kind::Multirange(sub) => multirange_text(out, sub, raw, depth)?,
            Kind::Composite(fields) => record_text(out, Some(fields), raw, depth)?,
            // Extension types, known by name: citext sends its text; hstore its pairs.
            Kind::Simple if ty.name() == "citext" => out.push_str(utf8(raw, "citext")?),
            Kind::Simple if ty.name() == "hstore" => hstore_text(out, raw)?,
            _ => {
                return Err(ValueError::unsupported(
                    ty,
                    "Strata does not know its binary format",
                ))
            }
        },
    }
    Ok(())
}

fn push_display(out: &mut String, v: impl fmt::Display) {
    let _ = write!(out, "{v}");
}

/// A fixed-size value's bytes.
fn fixed<const N: usize>(raw: &[u8], what: &str) -> Result<[u8; N], ValueError> {
    raw.try_into()
        .map_err(|_| ValueError::malformed(what, format!("{} bytes, expected {N}", raw.len())))
}

fn bool_of(raw: &[u8]) -> Result<bool, ValueError> {
    match raw {
        [b] => Ok(*b != 0),
        _ => Err(ValueError::malformed("bool", "not one byte")),
    }
}

fn utf8<'a>(raw: &'a [u8], what: &str) -> Result<&'a str, ValueError> {
    std::str::from_utf8(raw).map_err(|e| ValueError::malformed(what, e))
}

/// jsonb and jsonpath: a format version byte (1) and the text.
fn versioned_text<'a>(raw: &'a [u8], what: &str) -> Result<&'a str, ValueError> {
    match raw.split_first() {
        Some((1, text)) => utf8(text, what),
        Some((v, _)) => Err(ValueError::malformed(what, format!("format version {v}"))),
        None => Err(ValueError::malformed(what, "empty")),
    }
}

/// A reader over a binary value; every read checks the length, so a short or garbled value is
/// an error rather than a panic.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Cursor<'a> {
        Cursor { buf, what }
    }

    fn err(&self, detail: impl fmt::Display) -> ValueError {
        ValueError::malformed(self.what, detail)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        if self.buf.len() < n {
            return Err(self.err("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ValueError> {
        let b = self.take(N)?;
        b.try_into().map_err(|_| self.err("truncated"))
    }

    fn u8(&mut self) -> Result<u8, ValueError> {
        Ok(self.bytes::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, ValueError> {
        Ok(i16::from_be_bytes(self.bytes()?))
    }

    fn u16(&mut self) -> Result<u16, ValueError> {
        Ok(u16::from_be_bytes(self.bytes()?))
    }

    fn i32(&mut self) -> Result<i32, ValueError> {
        Ok(i32::from_be_bytes(self.bytes()?))
    }

    fn u32(&mut self) -> Result<u32, ValueError> {
        Ok(u32::from_be_bytes(self.bytes()?))
    }

    fn i64(&mut self) -> Result<i64, ValueError> {
        Ok(i64::from_be_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, ValueError> {
        Ok(u64::from_be_bytes(self.bytes()?))
    }

    fn f64(&mut self) -> Result<f64, ValueError> {
        Ok(f64::from_be_bytes(self.bytes()?))
    }

    /// A non-negative int32 count.
    fn count(&mut self) -> Result<usize, ValueError> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| self.err(format!("negative count {n}")))
    }

    /// An int32 length and that many bytes; length -1 is NULL.
    fn field(&mut self) -> Result<Option<&'a [u8]>, ValueError> {
        match self.i32()? {
            -1 => Ok(None),
            n => match usize::try_from(n) {
                Ok(n) => self.take(n).map(Some),
                Err(_) => Err(self.err(format!("negative length {n}"))),
            },
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn finish(&self) -> Result<(), ValueError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

// ---- numbers ----

/// numeric's binary form: ndigits, weight (of the first digit, in base-10000 places), sign,
/// dscale (digits shown after the point), then the base-10000 digits. The text is built as
/// PostgreSQL's `get_str_from_var` builds it.
fn numeric_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    const POS: u16 = 0x0000;
    const NEG: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const PINF: u16 = 0xD000;
    const NINF: u16 = 0xF000;
    let mut c = Cursor::new(raw, "numeric");
    let ndigits = c.i16()?;
    let weight = i32::from(c.i16()?);
    let sign = c.u16()?;
    let dscale = c.u16()?;
    let ndigits = usize::try_from(ndigits).map_err(|_| c.err("negative digit count"))?;
    if dscale & !0x3FFF != 0 {
        return Err(c.err(format!("display scale {dscale:#x}")));
    }
    let mut digits = Vec::with_capacity(ndigits.min(c.remaining() / 2));
    for _ in 0..ndigits {
        let d = c.i16()?;
        if !(0..10000).contains(&d) {
            return Err(c.err(format!("digit {d} out of range")));
        }
        digits.push(d);
    }
    c.finish()?;
    match sign {
        NAN => {
            out.push_str("NaN");
            return Ok(());
        }
        PINF => {
            out.push_str("Infinity");
            return Ok(());
        }
        NINF => {
            out.push_str("-Infinity");
            return Ok(());
        }
        NEG => out.push('-'),
        POS => {}
        other => return Err(c.err(format!("sign {other:#x}"))),
    }
    let digit = |d: i32| -> i16 {
        usize::try_from(d)
            .ok()
            .and_then(|d| digits.get(d).copied())
            .unwrap_or(0)
    };
    let mut d;
    if weight < 0 {
        out.push('0');
        d = weight + 1;
    } else {
        for i in 0..=weight {
            if i == 0 {
                push_display(out, digit(i));
            } else {
                let _ = write!(out, "{:04}", digit(i));
            }
        }
        d = weight + 1;
    }
    if dscale > 0 {
        out.push('.');
        let end = out.len() + usize::from(dscale);
        let mut shown = 0;
        while shown < dscale {
            let _ = write!(out, "{:04}", digit(d));
            d += 1;
            shown += 4;
        }
        out.truncate(end);
    }
    Ok(())
}

/// PostgreSQL's float8 text output (extra_float_digits ≥ 1, the default since PostgreSQL 12):
/// the shortest digits that read back as the same double, in fixed notation for decimal
/// exponents -4..14 and as `d.ddde±XX` otherwise; `NaN`, `Infinity`, `-Infinity`, `-0`.
pub fn float8_text(v: f64) -> String {
    let mut s = String::new();
    push_float8(&mut s, v);
    s
}

/// PostgreSQL's float4 text output: shortest digits for the float4, fixed notation for decimal
/// exponents -4..5.
pub fn float4_text(v: f32) -> String {
    let mut s = String::new();
    push_float4(&mut s, v);
    s
}

fn push_float8(out: &mut String, v: f64) {
    let bits = v.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let parts = FloatParts {
        mant: if exp_bits == 0 { frac } else { frac | 1 << 52 },
        exp2: if exp_bits == 0 {
            -1074
        } else {
            exp_bits - 1075
        },
        narrow_below: frac == 0 && exp_bits > 1,
    };
    push_float(
        out,
        v,
        &format!("{v:e}"),
        15,
        &parts,
        &|digits| format!("{v:.digits$e}"),
        &|s| s.parse::<f64>().is_ok_and(|p| p == v),
    );
}

fn push_float4(out: &mut String, v: f32) {
    let bits = v.to_bits();
    let exp_bits = ((bits >> 23) & 0xff) as i32;
    let frac = u64::from(bits & ((1 << 23) - 1));
    let parts = FloatParts {
        mant: if exp_bits == 0 { frac } else { frac | 1 << 23 },
        exp2: if exp_bits == 0 { -149 } else { exp_bits - 150 },
        narrow_below: frac == 0 && exp_bits > 1,
    };
    push_float(
        out,
        f64::from(v),
        &format!("{v:e}"),
        6,
        &parts,
        &|digits| format!("{v:.digits$e}"),
        &|s| s.parse::<f32>().is_ok_and(|p| p == v),
    );
}

/// A finite float's magnitude as `mant × 2^exp2`; `narrow_below` when the next float down is
/// half as far as the next one up (a power of two).
struct FloatParts {
    mant: u64,
    exp2: i32,
    narrow_below: bool,
}

impl FloatParts {
    /// The two rounding boundaries, halfway to each neighbour, as (odd-or-not) `m × 2^e`.
    fn bounds(&self) -> [(u128, i32); 2] {
        let m = u128::from(self.mant);
        let below = if self.narrow_below {
            ((4 * m).saturating_sub(1), self.exp2 - 2)
        } else {
            ((2 * m).saturating_sub(1), self.exp2 - 1)
        };
        [(2 * m + 1, self.exp2 - 1), below]
    }

    /// True when the decimal `d × 10^k` lies exactly on a rounding boundary.
    fn on_bound(&self, d: u128, k: i32) -> bool {
        self.bounds()
            .iter()
            .any(|&(m, e)| decimal_equals_dyadic(d, k, m, e))
    }
}

/// Exactly `d × 10^k == m × 2^e` (d, m > 0), in integers: both sides split into a power of two
/// times an odd rational, which must match separately.
fn decimal_equals_dyadic(d: u128, k: i32, m: u128, e: i32) -> bool {
    if d == 0 || m == 0 {
        return d == m;
    }
    let d_tz = d.trailing_zeros();
    let m_tz = m.trailing_zeros();
    let (d_odd, m_odd) = (d >> d_tz, m >> m_tz);
    if i64::from(d_tz) + i64::from(k) != i64::from(m_tz) + i64::from(e) {
        return false;
    }
    // d_odd × 5^k == m_odd; a product that overflows is larger than any u128.
    let five = |n: i32, times: u128| {
        5u128
            .checked_pow(n.unsigned_abs())
            .and_then(|p| p.checked_mul(times))
    };
    if k >= 0 {
        five(k, d_odd) == Some(m_odd)
    } else {
        five(k, m_odd) == Some(d_odd)
    }
}

/// Lays out shortest digits the way PostgreSQL's `d2s.c`/`f2s.c` do: fixed notation when
/// -4 ≤ exponent < `fixed_below`, else `d.ddde±XX`. `sci` is Rust's shortest `{:e}` form;
/// `exact(n)` formats the value correctly rounded to n digits after the first (`{:.n$e}`) and
/// `round_trips(s)` says whether `s` reads back as the same value.
///
/// Rust's shortest digits and PostgreSQL's differ in two rare cases: PostgreSQL builds Ryū
/// without `STRICTLY_SHORTEST`, so it never prints a decimal lying exactly on the boundary
/// halfway to the neighbouring float (Rust accepts it when the mantissa is even), and it
/// breaks an exact tie between two candidates towards the even digit (Rust rounds up). Both
/// are detected exactly and then the digits are searched as PostgreSQL's Ryū would choose them.
fn push_float(
    out: &mut String,
    v: f64,
    sci: &str,
    fixed_below: i32,
    parts: &FloatParts,
    exact: &dyn Fn(usize) -> String,
    round_trips: &dyn Fn(&str) -> bool,
) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let (neg, body) = match sci.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, sci),
    };
    let (mantissa, exp) = body.split_once('e').unwrap_or((body, "0"));
    let mut exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    if v != 0.0 && !ryu_agrees(&digits, exp, parts) {
        if let Some((d, e)) = ryu_search(neg, parts, exact, round_trips) {
            digits = d;
            exp = e;
        }
    }
    let n = digits.len();
    if neg {
        out.push('-');
    }
    let push_digits = |out: &mut String, d: &[u8]| d.iter().for_each(|&b| out.push(b as char));
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            (1..-exp).for_each(|_| out.push('0'));
            push_digits(out, &digits);
        } else {
            let int_len = exp as usize + 1;
            if n <= int_len {
                push_digits(out, &digits);
                (n..int_len).for_each(|_| out.push('0'));
            } else {
                push_digits(out, &digits[..int_len]);
                out.push('.');
                push_digits(out, &digits[int_len..]);
            }
        }
    } else {
        push_digits(out, &digits[..n.min(1)]);
        if n > 1 {
            out.push('.');
            push_digits(out, &digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
}

/// ASCII digits as an integer (at most 38 of them).
fn digits_value(digits: &[u8]) -> Option<u128> {
    if digits.is_empty() || digits.len() > 38 {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u128, |acc, &b| acc * 10 + u128::from(b - b'0')),
    )
}

/// True when Rust's shortest digits (`d.ddd × 10^exp`) are also what PostgreSQL prints: not on
/// a rounding boundary, and not the upper candidate of an exact tie whose lower one is even.
fn ryu_agrees(digits: &[u8], exp: i32, parts: &FloatParts) -> bool {
    let Some(d) = digits_value(digits) else {
        return false;
    };
    let k = exp - (digits.len() as i32 - 1);
    if parts.on_bound(d, k) {
        return false;
    }
    let m = u128::from(parts.mant);
    // An odd last digit with the value exactly halfway to a neighbour candidate.
    !(d % 2 == 1
        && (decimal_equals_dyadic((2 * d - 1) * 5, k - 1, m, parts.exp2)
            || decimal_equals_dyadic((2 * d + 1) * 5, k - 1, m, parts.exp2)))
}

/// PostgreSQL's Ryū choice, found from the exact expansion: the fewest digits with a candidate
/// strictly inside the rounding interval; of the two candidates around the value, the nearer
/// (ties to even). Returns (digits, decimal exponent of the first digit).
fn ryu_search(
    neg: bool,
    parts: &FloatParts,
    exact: &dyn Fn(usize) -> String,
    round_trips: &dyn Fn(&str) -> bool,
) -> Option<(Vec<u8>, i32)> {
    // A double's exact expansion has at most 767 significant digits.
    let full = exact(800);
    let body = full.strip_prefix('-').unwrap_or(&full);
    let (mantissa, e) = body.split_once('e')?;
    let e: i32 = e.parse().ok()?;
    let mut all: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while all.len() > 1 && all.last() == Some(&b'0') {
        all.pop();
    }
    let sign = if neg { "-" } else { "" };
    for len in 1..=all.len().min(20) {
        let t = digits_value(&all[..len])?;
        let rest = &all[len..];
        let k = e - (len as i32 - 1);
        // How the dropped digits compare with one half.
        let above = match rest.split_first() {
            None => std::cmp::Ordering::Less,
            Some((&b'5', tail)) if tail.iter().all(|&b| b == b'0') => std::cmp::Ordering::Equal,
            Some((&b'5', _)) => std::cmp::Ordering::Greater,
            Some((&r, _)) => r.cmp(&b'5'),
        };
        let round_up_first = match above {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => t % 2 == 1,
        };
        let candidates = if rest.is_empty() {
            vec![t]
        } else if round_up_first {
            vec![t + 1, t]
        } else {
            vec![t, t + 1]
        };
        for c in candidates {
            if round_trips(&format!("{sign}{c}e{k}")) && !parts.on_bound(c, k) {
                let mut digits = c.to_string().into_bytes();
                let first_exp = k + digits.len() as i32 - 1;
                while digits.len() > 1 && digits.last() == Some(&b'0') {
                    digits.pop();
                }
                return Some((digits, first_exp));
            }
        }
    }
    None
}

// ---- characters ----

/// `"char"`: one byte; PostgreSQL 15 prints a byte with the high bit set as `\ooo`.
fn char_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    match raw {
        [] | [0] => {}
        [b] if *b >= 0x80 => {
            let _ = write!(out, "\\{:03o}", b);
        }
        [b] => out.push(*b as char),
        _ => return Err(ValueError::malformed("\"char\"", "more than one byte")),
    }
    Ok(())
}

fn uuid_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let b = fixed::<16>(raw, "uuid")?;
    for (i, chunk) in [&b[0..4], &b[4..6], &b[6..8], &b[8..10], &b[10..16]]
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push('-');
        }
        push_hex(out, chunk);
    }
    Ok(())
}

// ---- dates and times ----

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;
/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// Proleptic Gregorian (year, month, day) of a day count from 1970-01-01; year 0 is 1 BC
/// (Howard Hinnant's `civil_from_days`, exact for any i64 input PostgreSQL can send).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD` of a day count from 2000-01-01; returns true for a BC date (the caller adds
/// ` BC` where PostgreSQL puts it, after the time and zone).
fn push_date(out: &mut String, days: i64) -> bool {
    let (year, month, day) = civil_from_days(days + PG_EPOCH_DAYS);
    let (shown, bc) = if year > 0 {
        (year, false)
    } else {
        (1 - year, true)
    };
    let _ = write!(out, "{shown:04}-{month:02}-{day:02}");
    bc
}

/// `SS[.ffffff]`, trailing zeros of the fraction dropped (PostgreSQL's `AppendSeconds`).
fn push_seconds(out: &mut String, sec: u64, fsec: u64) {
    let _ = write!(out, "{sec:02}");
    if fsec != 0 {
        let frac = format!("{fsec:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
}

/// `HH:MM:SS[.ffffff]` of microseconds within a day (24:00:00 included).
fn push_time(out: &mut String, usecs: i64) {
    let hour = usecs / USECS_PER_HOUR;
    let min = usecs % USECS_PER_HOUR / USECS_PER_MINUTE;
    let sec = usecs % USECS_PER_MINUTE / USECS_PER_SEC;
    let fsec = usecs % USECS_PER_SEC;
    let _ = write!(out, "{:02}:{:02}:", hour.unsigned_abs(), min.unsigned_abs());
    push_seconds(out, sec.unsigned_abs(), fsec.unsigned_abs());
}

fn date_text(out: &mut String, days: i32) {
    match days {
        i32::MIN => out.push_str("-infinity"),
        i32::MAX => out.push_str("infinity"),
        _ => {
            if push_date(out, i64::from(days)) {
                out.push_str(" BC");
            }
        }
    }
}

fn timestamp_text(out: &mut String, usecs: i64, utc: bool) {
    match usecs {
        i64::MIN => out.push_str("-infinity"),
        i64::MAX => out.push_str("infinity"),
        _ => {
            let bc = push_date(out, usecs.div_euclid(USECS_PER_DAY));
            out.push(' ');
            push_time(out, usecs.rem_euclid(USECS_PER_DAY));
            if utc {
                out.push_str("+00");
            }
            if bc {
                out.push_str(" BC");
            }
        }
    }
}

fn checked_time(c: &Cursor<'_>, usecs: i64) -> Result<i64, ValueError> {
    if (0..=USECS_PER_DAY).contains(&usecs) {
        Ok(usecs)
    } else {
        Err(c.err(format!("time {usecs} out of range")))
    }
}

fn time_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "time");
    let usecs = c.i64()?;
    let usecs = checked_time(&c, usecs)?;
    c.finish()?;
    push_time(out, usecs);
    Ok(())
}

/// timetz: microseconds and the zone in seconds *west* of UTC (PostgreSQL's sign convention).
fn timetz_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "timetz");
    let usecs = c.i64()?;
    let usecs = checked_time(&c, usecs)?;
    let zone = c.i32()?;
    c.finish()?;
    if zone.unsigned_abs() >= 16 * 3600 {
        return Err(c.err(format!("zone {zone} out of range")));
    }
    push_time(out, usecs);
    let secs = zone.unsigned_abs();
    let (hour, min, sec) = (secs / 3600, secs % 3600 / 60, secs % 60);
    out.push(if zone <= 0 { '+' } else { '-' });
    let _ = if sec != 0 {
        write!(out, "{hour:02}:{min:02}:{sec:02}")
    } else if min != 0 {
        write!(out, "{hour:02}:{min:02}")
    } else {
        write!(out, "{hour:02}")
    };
    Ok(())
}

/// interval: microseconds, days, months; printed in IntervalStyle `postgres` (PostgreSQL's
/// `EncodeInterval`): `1 year 2 mons 3 days 04:05:06.789`, `-1 days +02:00:00`, `00:00:00`.
fn interval_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "interval");
    let time = c.i64()?;
    let days = c.i32()?;
    let months = c.i32()?;
    c.finish()?;
    // PostgreSQL 17's infinite intervals (every field at its extreme).
    if time == i64::MAX && days == i32::MAX && months == i32::MAX {
        out.push_str("infinity");
        return Ok(());
    }
    if time == i64::MIN && days == i32::MIN && months == i32::MIN {
        out.push_str("-infinity");
        return Ok(());
    }
    let (year, mon) = (months / 12, months % 12);
    let hour = time / USECS_PER_HOUR;
    let min = time % USECS_PER_HOUR / USECS_PER_MINUTE;
    let sec = time % USECS_PER_MINUTE / USECS_PER_SEC;
    let fsec = time % USECS_PER_SEC;
    let mut is_zero = true;
    let mut is_before = false;
    for (n, unit) in [
        (i64::from(year), "year"),
        (i64::from(mon), "mon"),
        (i64::from(days), "day"),
    ] {
        if n == 0 {
            continue;
        }
        let _ = write!(
            out,
            "{}{}{n} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && n > 0 { "+" } else { "" },
            if n != 1 { "s" } else { "" }
        );
        // Each nonzero part decides the sign shown on the next one, as in PostgreSQL.
        is_before = n < 0;
        is_zero = false;
    }
    if is_zero || time != 0 {
        let minus = hour < 0 || min < 0 || sec < 0 || fsec < 0;
        let _ = write!(
            out,
            "{}{}{:02}:{:02}:",
            if is_zero { "" } else { " " },
            if minus {
                "-"
            } else if is_before {
                "+"
            } else {
                ""
            },
            hour.unsigned_abs(),
            min.unsigned_abs()
        );
        push_seconds(out, sec.unsigned_abs(), fsec.unsigned_abs());
    }
    Ok(())
}

// ---- network, bits, system types ----

/// inet/cidr: family (2 = IPv4, 3 = IPv6), mask bits, is_cidr, address length, address.
/// Printed as PostgreSQL's `inet_net_ntop` prints them; cidr always shows its mask.
fn inet_text(out: &mut String, raw: &[u8], cidr: bool) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, if cidr { "cidr" } else { "inet" });
    let family = c.u8()?;
    let bits = c.u8()?;
    let _is_cidr = c.u8()?;
    let len = c.u8()?;
    let addr = c.take(usize::from(len))?;
    c.finish()?;
    let max_bits = match (family, addr.len()) {
        (2, 4) => {
            let _ = write!(out, "{}.{}.{}.{}", addr[0], addr[1], addr[2], addr[3]);
            32
        }
        (3, 16) => {
            push_ipv6(out, addr);
            128
        }
        _ => return Err(c.err(format!("family {family} with {len} address bytes"))),
    };
    if bits > max_bits {
        return Err(c.err(format!("{bits} mask bits")));
    }
    if bits != max_bits || cidr {
        let _ = write!(out, "/{bits}");
    }
    Ok(())
}

/// An IPv6 address as PostgreSQL's `inet_net_ntop_ipv6` prints it: the longest run (≥ 2) of
/// zero groups as `::`, and the IPv4-compatible and IPv4-mapped forms in dotted decimal.
fn push_ipv6(out: &mut String, a: &[u8]) {
    let mut words = [0u16; 8];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u16::from(a[2 * i]) << 8 | u16::from(a[2 * i + 1]);
    }
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            cur = Some(match cur {
                Some((base, len)) => (base, len + 1),
                None => (i, 1),
            });
        } else if let Some(run) = cur.take() {
            if best.is_none_or(|b| run.1 > b.1) {
                best = Some(run);
            }
        }
    }
    if let Some(run) = cur {
        if best.is_none_or(|b| run.1 > b.1) {
            best = Some(run);
        }
    }
    let best = best.filter(|b| b.1 >= 2);
    for (i, &w) in words.iter().enumerate() {
        if let Some((base, len)) = best {
            if i >= base && i < base + len {
                if i == base {
                    out.push(':');
                }
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && best.is_some_and(|(base, len)| {
                base == 0
                    && (len == 6 || (len == 7 && words[7] != 1) || (len == 5 && words[5] == 0xffff))
            })
        {
            let _ = write!(out, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            return;
        }
        let _ = write!(out, "{w:x}");
    }
    if best.is_some_and(|(base, len)| base + len == 8) {
        out.push(':');
    }
}

fn mac_text(out: &mut String, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        push_hex(out, &[*b]);
    }
}

/// bit/varbit: the bit count, then the bits, most significant first, padded to whole bytes.
fn bit_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "bit");
    let nbits = c.count()?;
    let bytes = c.take(nbits.div_ceil(8))?;
    c.finish()?;
    for i in 0..nbits {
        out.push(if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
            '1'
        } else {
            '0'
        });
    }
    Ok(())
}

fn tid_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "tid");
    let block = c.u32()?;
    let offset = c.u16()?;
    c.finish()?;
    let _ = write!(out, "({block},{offset})");
    Ok(())
}

/// txid_snapshot / pg_snapshot: `xmin:xmax:xip,xip,...`.
fn snapshot_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "snapshot");
    let nxip = c.count()?;
    let xmin = c.u64()?;
    let xmax = c.u64()?;
    let _ = write!(out, "{xmin}:{xmax}:");
    for i in 0..nxip {
        if i > 0 {
            out.push(',');
        }
        push_display(out, c.u64()?);
    }
    c.finish()
}

/// The geometric types, their coordinates printed as float8s.
fn geometric_text(out: &mut String, ty: u32, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "geometric");
    let point = |out: &mut String, c: &mut Cursor<'_>| -> Result<(), ValueError> {
        let x = c.f64()?;
        let y = c.f64()?;
        out.push('(');
        push_float8(out, x);
        out.push(',');
        push_float8(out, y);
        out.push(')');
        Ok(())
    };
    let points = |out: &mut String, c: &mut Cursor<'_>, n: usize| -> Result<(), ValueError> {
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            point(out, c)?;
        }
        Ok(())
    };
    match ty {
        oid::POINT => point(out, &mut c)?,
        oid::LSEG => {
            out.push('[');
            points(out, &mut c, 2)?;
            out.push(']');
        }
        oid::BOX => points(out, &mut c, 2)?,
        oid::PATH => {
            let closed = c.u8()? != 0;
            let n = c.count()?;
            out.push(if closed { '(' } else { '[' });
            points(out, &mut c, n)?;
            out.push(if closed { ')' } else { ']' });
        }
        oid::POLYGON => {
            let n = c.count()?;
            out.push('(');
            points(out, &mut c, n)?;
            out.push(')');
        }
        oid::LINE => {
            out.push('{');
            for i in 0..3 {
                if i > 0 {
                    out.push(',');
                }
                push_float8(out, c.f64()?);
            }
            out.push('}');
        }
        _ => {
            // circle
            out.push('<');
            point(out, &mut c)?;
            out.push(',');
            push_float8(out, c.f64()?);
            out.push('>');
        }
    }
    c.finish()
}

/// tsvector: lexemes (NUL-terminated) each with its positions (14 bits) and weights (2 bits).
fn tsvector_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "tsvector");
    let n = c.count()?;
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        let end = c
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| c.err("unterminated lexeme"))?;
        let lexeme = utf8(c.take(end)?, "tsvector")?;
        c.take(1)?;
        out.push('\'');
        for ch in lexeme.chars() {
            if ch == '\'' || ch == '\\' {
                out.push(ch);
            }
            out.push(ch);
        }
        out.push('\'');
        let npos = c.u16()?;
        for j in 0..npos {
            out.push(if j == 0 { ':' } else { ',' });
            let pos = c.u16()?;
            push_display(out, pos & 0x3fff);
            match pos >> 14 {
                3 => out.push('A'),
                2 => out.push('B'),
                1 => out.push('C'),
                _ => {}
            }
        }
    }
    c.finish()
}

/// hstore (contrib): pairs of key and value (NULL allowed), printed `"k"=>"v", "k2"=>NULL`.
fn hstore_text(out: &mut String, raw: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "hstore");
    let n = c.count()?;
    let quoted = |out: &mut String, s: &str| {
        out.push('"');
        for ch in s.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    };
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        let key = c.field()?.ok_or_else(|| c.err("NULL key"))?;
        quoted(out, utf8(key, "hstore")?);
        out.push_str("=>");
        match c.field()? {
            None => out.push_str("NULL"),
            Some(v) => quoted(out, utf8(v, "hstore")?),
        }
    }
    c.finish()
}

// ---- arrays, ranges, records ----

/// The most dimensions PostgreSQL allows an array (MAXDIM).
const MAX_DIMS: usize = 6;

/// An array's binary form taken apart: (length, lower bound) per dimension, the elements in
/// storage order (the last dimension varies fastest).
struct ArrayData<'a> {
    dims: Vec<(usize, i32)>,
    elems: Vec<Option<&'a [u8]>>,
}

fn parse_array<'a>(elem: &Type, raw: &'a [u8]) -> Result<ArrayData<'a>, ValueError> {
    let mut c = Cursor::new(raw, "array");
    let ndim = c.count()?;
    if ndim > MAX_DIMS {
        return Err(c.err(format!("{ndim} dimensions")));
    }
    let _has_nulls = c.i32()?;
    let elem_oid = c.u32()?;
    if elem_oid != elem.oid() {
        return Err(c.err(format!(
            "element type oid {elem_oid}, expected {}",
            elem.oid()
        )));
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut total: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        let len = c.count()?;
        let lower = c.i32()?;
        total = total
            .checked_mul(len)
            .ok_or_else(|| c.err("too many elements"))?;
        dims.push((len, lower));
    }
    // Each element takes at least its 4-byte length: a bogus count cannot reserve much.
    let mut elems = Vec::with_capacity(total.min(c.remaining() / 4));
    for _ in 0..total {
        elems.push(c.field()?);
    }
    c.finish()?;
    Ok(ArrayData { dims, elems })
}

fn array_value(elem: &Type, raw: &[u8], depth: usize) -> Result<PgValue, ValueError> {
    let data = parse_array(elem, raw)?;
    let mut flat = Vec::with_capacity(data.elems.len());
    for e in &data.elems {
        flat.push(match e {
            None => PgValue::Null,
            Some(b) => value(elem, b, depth)?,
        });
    }
    if flat.is_empty() {
        return Ok(PgValue::Array(flat));
    }
    // Group the flat list from the innermost dimension outwards.
    for &(len, _) in data.dims.iter().skip(1).rev() {
        let mut grouped = Vec::with_capacity(flat.len() / len.max(1));
        let mut it = flat.into_iter();
        loop {
            let group: Vec<PgValue> = it.by_ref().take(len).collect();
            if group.is_empty() {
                break;
            }
            grouped.push(PgValue::Array(group));
        }
        flat = grouped;
    }
    Ok(PgValue::Array(flat))
}

/// The element type of an `anyarray` value (pg_stats.most_common_vals, ...): the one its
/// binary form names, when it is a built-in type.
fn anyarray_elem(raw: &[u8]) -> Result<Type, ValueError> {
    let mut c = Cursor::new(raw, "anyarray");
    c.take(8)?;
    let elem = c.u32()?;
    Type::from_oid(elem).ok_or_else(|| {
        ValueError(format!(
            "cannot return an anyarray of element type oid {elem}: Strata does not know that \
             type; cast it to text in the query (e.g. col::text)"
        ))
    })
}

/// An array literal as PostgreSQL's `array_out` prints it: `[lo:hi]=` dimensions when a lower
/// bound is not 1, braces per dimension, elements quoted when they need it.
fn array_text(out: &mut String, elem: &Type, raw: &[u8], depth: usize) -> Result<(), ValueError> {
    let data = parse_array(elem, raw)?;
    if data.elems.is_empty() {
        out.push_str("{}");
        return Ok(());
    }
    if data.dims.iter().any(|&(_, lower)| lower != 1) {
        for &(len, lower) in &data.dims {
            let upper = i64::from(lower) + len as i64 - 1;
            let _ = write!(out, "[{lower}:{upper}]");
        }
        out.push('=');
    }
    let delim = if elem.oid() == oid::BOX { ';' } else { ',' };
    let mut next = data.elems.iter();
    write_dim(out, elem, &data.dims, &mut next, delim, depth)
}

fn write_dim<'a>(
    out: &mut String,
    elem: &Type,
    dims: &[(usize, i32)],
    next: &mut impl Iterator<Item = &'a Option<&'a [u8]>>,
    delim: char,
    depth: usize,
) -> Result<(), ValueError> {
    let Some((&(len, _), inner)) = dims.split_first() else {
        return Ok(());
    };
    out.push('{');
    for i in 0..len {
        if i > 0 {
            out.push(delim);
        }
        if !inner.is_empty() {
            write_dim(out, elem, inner, next, delim, depth)?;
            continue;
        }
        match next.next() {
            Some(Some(b)) => {
                let text = text_form_at(elem, b, depth)?;
                push_array_elem(out, &text, delim);
            }
            Some(None) => out.push_str("NULL"),
            None => return Err(ValueError::malformed("array", "too few elements")),
        }
    }
    out.push('}');
    Ok(())
}

/// `array_out`'s quoting: empty, `NULL`, or containing braces, the delimiter, quotes,
/// backslashes or white space → double quotes, with `"` and `\` backslash-escaped.
fn push_array_elem(out: &mut String, s: &str, delim: char) {
    let quote = s.is_empty()
        || s.eq_ignore_ascii_case("null")
        || s.chars()
            .any(|c| matches!(c, '{' | '}' | '"' | '\\') || c == delim || is_c_space(c));
    if !quote {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

/// Quoting inside ranges and records: empty or containing quotes, backslashes, parentheses,
/// commas, white space (and brackets, for ranges) → double quotes, `"` and `\` doubled.
fn push_bound(out: &mut String, s: &str, brackets: bool) {
    let quote = s.is_empty()
        || s.chars().any(|c| {
            matches!(c, '"' | '\\' | '(' | ')' | ',')
                || (brackets && matches!(c, '[' | ']'))
                || is_c_space(c)
        });
    if !quote {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('"');
}

/// A range: flags, then the bounds present (each length-prefixed); `empty`, `[lo,hi)`, `(,hi]`.
fn range_text(out: &mut String, sub: &Type, raw: &[u8], depth: usize) -> Result<(), ValueError> {
    const EMPTY: u8 = 0x01;
    const LB_INC: u8 = 0x02;
    const UB_INC: u8 = 0x04;
    const LB_INF: u8 = 0x08;
    const UB_INF: u8 = 0x10;
    const LB_NULL: u8 = 0x20;
    const UB_NULL: u8 = 0x40;
    let mut c = Cursor::new(raw, "range");
    let flags = c.u8()?;
    if flags & EMPTY != 0 {
        c.finish()?;
        out.push_str("empty");
        return Ok(());
    }
    let lower = if flags & (LB_INF | LB_NULL) == 0 {
        Some(c.field()?.ok_or_else(|| c.err("NULL bound"))?)
    } else {
        None
    };
    let upper = if flags & (UB_INF | UB_NULL) == 0 {
        Some(c.field()?.ok_or_else(|| c.err("NULL bound"))?)
    } else {
        None
    };
    c.finish()?;
    out.push(if flags & LB_INC != 0 { '[' } else { '(' });
    if let Some(b) = lower {
        push_bound(out, &text_form_at(sub, b, depth)?, true);
    }
    out.push(',');
    if let Some(b) = upper {
        push_bound(out, &text_form_at(sub, b, depth)?, true);
    }
    out.push(if flags & UB_INC != 0 { ']' } else { ')' });
    Ok(())
}

/// A multirange: a count of length-prefixed ranges, printed `{[1,3),[5,7)}`.
fn multirange_text(
    out: &mut String,
    sub: &Type,
    raw: &[u8],
    depth: usize,
) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "multirange");
    let n = c.count()?;
    out.push('{');
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let range = c.field()?.ok_or_else(|| c.err("NULL range"))?;
        range_text(out, sub, range, depth)?;
    }
    out.push('}');
    c.finish()
}

/// A record (a composite type's or an anonymous `row(...)`): the field count, then each
/// field's type OID and length-prefixed value; printed `(1,"a b",)` as `record_out` does.
fn record_text(
    out: &mut String,
    fields: Option<&[Field]>,
    raw: &[u8],
    depth: usize,
) -> Result<(), ValueError> {
    let mut c = Cursor::new(raw, "record");
    let n = c.count()?;
    out.push('(');
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let field_oid = c.u32()?;
        let Some(bytes) = c.field()? else {
            continue;
        };
        // A composite's fields may be user types (enums, domains, ...) that only the column's
        // type description knows; an anonymous record's fields are looked up by OID.
        let known = fields
            .and_then(|f| f.get(i))
            .map(Field::type_)
            .filter(|t| t.oid() == field_oid);
        let looked_up;
        let ty = match known {
            Some(t) => t,
            None => {
                looked_up = Type::from_oid(field_oid).ok_or_else(|| {
                    ValueError(format!(
                        "cannot return a record field of type oid {field_oid}: Strata does not \
                         know that type; cast the field or the record to text in the query"
                    ))
                })?;
                &looked_up
            }
        };
        push_bound(out, &text_form_at(ty, bytes, depth)?, false);
    }
    out.push(')');
    c.finish()
}

/// int2vector / oidvector: array-shaped, printed as a space-separated list.
fn vector_text(out: &mut String, ty: &Type, raw: &[u8], depth: usize) -> Result<(), ValueError> {
    let elem = if ty.oid() == oid::INT2VECTOR {
        Type::INT2
    } else {
        Type::OID
    };
    let data = parse_array(&elem, raw)?;
    for (i, e) in data.elems.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let b = e.ok_or_else(|| ValueError::malformed(ty.name(), "NULL element"))?;
        write_text(out, &elem, b, depth)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// numeric's binary form from its parts.
    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        b.extend_from_slice(&weight.to_be_bytes());
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    fn text(ty: &Type, raw: &[u8]) -> String {
        match text_form(ty, raw) {
            Ok(s) => s,
            Err(e) => panic!("{ty}: {e}"),
        }
    }

    #[test]
    fn numeric_text_as_postgresql_prints_it() {
        let n = &Type::NUMERIC;
        assert_eq!(text(n, &numeric(0, 0, 0, &[])), "0");
        assert_eq!(text(n, &numeric(0, 0, 2, &[])), "0.00");
        assert_eq!(text(n, &numeric(0, 0, 2, &[1, 5000])), "1.50");
        assert_eq!(text(n, &numeric(1, 0x4000, 0, &[12, 3456])), "-123456");
        assert_eq!(text(n, &numeric(2, 0, 0, &[1])), "100000000");
        assert_eq!(text(n, &numeric(-2, 0, 9, &[1200])), "0.000012000");
        assert_eq!(text(n, &numeric(-3, 0, 9, &[1000])), "0.000000001");
        assert_eq!(text(n, &numeric(-1, 0, 3, &[1230])), "0.123");
        assert_eq!(
            text(n, &numeric(0, 0, 6, &[3, 1415, 9265])),
            "3.141592",
            "digits beyond dscale are cut"
        );
        assert_eq!(text(n, &numeric(0, 0xC000, 0, &[])), "NaN");
        assert_eq!(text(n, &numeric(0, 0xD000, 0, &[])), "Infinity");
        assert_eq!(text(n, &numeric(0, 0xF000, 0, &[])), "-Infinity");
    }

    #[test]
    fn malformed_numeric_is_an_error_not_a_panic() {
        let n = &Type::NUMERIC;
        let good = numeric(0, 0, 2, &[1, 5000]);
        for cut in 0..good.len() {
            let err = text_form(n, &good[..cut]).unwrap_err();
            assert!(err.message().contains("numeric"), "{err}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(text_form(n, &long).is_err(), "trailing bytes");
        assert!(text_form(n, &numeric(0, 0, 0, &[10000])).is_err(), "digit");
        assert!(text_form(n, &numeric(0, 0, 0, &[-1])).is_err(), "digit");
        assert!(text_form(n, &numeric(0, 0x1234, 0, &[1])).is_err(), "sign");
        assert!(
            text_form(n, &numeric(0, 0, 0x4000, &[1])).is_err(),
            "dscale"
        );
        let mut neg = numeric(0, 0, 0, &[]);
        neg[..2].copy_from_slice(&(-1i16).to_be_bytes());
        assert!(text_form(n, &neg).is_err(), "negative ndigits");
        assert!(PgValue::decode(n, Some(b"garbage")).is_err());
    }

    #[test]
    fn float_text_as_postgresql_prints_it() {
        for (v, want) in [
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5, "-2.5"),
            (0.0, "0"),
            (-0.0, "-0"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(float8_text(v), want, "{v:e}");
        }
        for (v, want) in [
            (1.1f32, "1.1"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (0.0001, "0.0001"),
            (3.4028235e38, "3.4028235e+38"),
            // Exactly halfway between 523918.12 and 523918.13: Ryū takes the even digit.
            (523_918.0 + 0.125, "523918.12"),
            (523_918.0 + 0.375, "523918.38"),
            // 42229650 is exactly halfway to the next float4: PostgreSQL's Ryū never prints
            // a bound.
            (-42229648.0, "-4.2229648e+07"),
            (-7522656256.0, "-7.5226563e+09"),
            (f32::NAN, "NaN"),
        ] {
            assert_eq!(float4_text(v), want, "{v:e}");
        }
    }

    fn interval(time: i64, days: i32, months: i32) -> String {
        let mut b = time.to_be_bytes().to_vec();
        b.extend_from_slice(&days.to_be_bytes());
        b.extend_from_slice(&months.to_be_bytes());
        text(&Type::INTERVAL, &b)
    }

    #[test]
    fn interval_text_in_postgres_style() {
        let h = USECS_PER_HOUR;
        assert_eq!(interval(0, 0, 0), "00:00:00");
        assert_eq!(
            interval(4 * h + 5 * USECS_PER_MINUTE + 6_789_000, 3, 14),
            "1 year 2 mons 3 days 04:05:06.789"
        );
        assert_eq!(interval(2 * h, -1, 0), "-1 days +02:00:00");
        assert_eq!(interval(-2 * h, 1, 0), "1 day -02:00:00");
        assert_eq!(interval(0, 0, -13), "-1 years -1 mons");
        assert_eq!(interval(0, 5, -1), "-1 mons +5 days");
        assert_eq!(interval(-1, 0, 0), "-00:00:00.000001");
        assert_eq!(interval(i64::MAX, i32::MAX, i32::MAX), "infinity");
    }

    #[test]
    fn timestamps_dates_and_times() {
        let ts = |us: i64| text(&Type::TIMESTAMPTZ, &us.to_be_bytes());
        assert_eq!(ts(0), "2000-01-01 00:00:00+00");
        assert_eq!(ts(-1), "1999-12-31 23:59:59.999999+00");
        assert_eq!(ts(i64::MAX), "infinity");
        assert_eq!(ts(i64::MIN), "-infinity");
        let d = |days: i32| text(&Type::DATE, &days.to_be_bytes());
        assert_eq!(d(0), "2000-01-01");
        assert_eq!(d(-730_119), "0001-01-01");
        assert_eq!(d(-730_120), "0001-12-31 BC");
        assert_eq!(d(i32::MAX), "infinity");
        let t = |us: i64| text(&Type::TIME, &us.to_be_bytes());
        assert_eq!(t(USECS_PER_DAY), "24:00:00");
        assert_eq!(t(3_723_400_000), "01:02:03.4");
        assert!(text_form(&Type::TIME, &(-1i64).to_be_bytes()).is_err());
        let mut tz = 0i64.to_be_bytes().to_vec();
        tz.extend_from_slice(&(-19_800i32).to_be_bytes());
        assert_eq!(text(&Type::TIMETZ, &tz), "00:00:00+05:30");
    }

    #[test]
    fn network_addresses() {
        let inet = |fam: u8, bits: u8, addr: &[u8]| {
            let mut b = vec![fam, bits, 0, addr.len() as u8];
            b.extend_from_slice(addr);
            b
        };
        assert_eq!(text(&Type::INET, &inet(2, 32, &[10, 0, 0, 1])), "10.0.0.1");
        assert_eq!(
            text(&Type::CIDR, &inet(2, 32, &[10, 0, 0, 1])),
            "10.0.0.1/32"
        );
        assert_eq!(text(&Type::INET, &inet(2, 8, &[10, 0, 0, 0])), "10.0.0.0/8");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(text(&Type::INET, &inet(3, 128, &v6)), "::1");
        v6[0] = 0x20;
        v6[1] = 0x01;
        assert_eq!(text(&Type::INET, &inet(3, 64, &v6)), "2001::1/64");
        assert!(text_form(&Type::INET, &inet(2, 33, &[1, 2, 3, 4])).is_err());
        assert!(text_form(&Type::INET, &inet(3, 1, &[1, 2, 3, 4])).is_err());
    }

    #[test]
    fn arrays_nest_and_keep_nulls() {
        // int4[2][2] = {{1,NULL},{3,4}} with lower bounds 1.
        let mut b = Vec::new();
        for v in [2i32, 1, 23, 2, 1, 2, 1] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for e in [Some(1i32), None, Some(3), Some(4)] {
            match e {
                Some(v) => {
                    b.extend_from_slice(&4i32.to_be_bytes());
                    b.extend_from_slice(&v.to_be_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let v = PgValue::decode(&Type::INT4_ARRAY, Some(&b)).unwrap();
        assert_eq!(
            v,
            PgValue::Array(vec![
                PgValue::Array(vec![PgValue::Int(1), PgValue::Null]),
                PgValue::Array(vec![PgValue::Int(3), PgValue::Int(4)]),
            ])
        );
        assert_eq!(text(&Type::INT4_ARRAY, &b), "{{1,NULL},{3,4}}");
        assert!(PgValue::decode(&Type::INT4_ARRAY, Some(&b[..b.len() - 1])).is_err());
        assert!(
            PgValue::decode(&Type::TEXT_ARRAY, Some(&b)).is_err(),
            "element oid"
        );
    }

    #[test]
    fn unsupported_types_ask_for_a_cast() {
        let err = text_form(&Type::MONEY, &100i64.to_be_bytes()).unwrap_err();
        assert!(err.message().contains("cast it to text"), "{err}");
        let err = PgValue::decode(&Type::REGCLASS, Some(&1u32.to_be_bytes())).unwrap_err();
        assert!(err.message().contains("pg_catalog.regclass"), "{err}");
        let err = text_form(&Type::TSQUERY, b"\0").unwrap_err();
        assert!(err.message().contains("binary format"), "{err}");
    }

    fn sample_rows() -> (Vec<String>, Vec<Vec<PgValue>>) {
        let columns = vec!["id".to_string(), "v".to_string()];
        let rows = vec![
            vec![PgValue::Int(1), PgValue::Float(0.1)],
            vec![PgValue::Bool(true), PgValue::Null],
            vec![PgValue::Bytes(vec![0, 0xff]), PgValue::Text("1.50".into())],
            vec![
                PgValue::Array(vec![PgValue::Int(-2), PgValue::Null]),
                PgValue::Float(f64::NEG_INFINITY),
            ],
            vec![
                PgValue::Json(r#"{"a": [1, 2.50]}"#.into()),
                PgValue::Float4(1e6),
            ],
        ];
        (columns, rows)
    }

    #[test]
    fn resp2_reply_bytes() {
        let (columns, rows) = sample_rows();
        let mut r = Reply::new(false);
        write_resp(&mut r, &columns, &rows);
        let want: &[u8] = b"*6\r\n*2\r\n$2\r\nid\r\n$1\r\nv\r\n\
                    *2\r\n:1\r\n$3\r\n0.1\r\n\
                    *2\r\n:1\r\n$-1\r\n\
                    *2\r\n$2\r\n\x00\xff\r\n$4\r\n1.50\r\n\
                    *2\r\n*2\r\n:-2\r\n$-1\r\n$9\r\n-Infinity\r\n\
                    *2\r\n$16\r\n{\"a\": [1, 2.50]}\r\n$5\r\n1e+06\r\n";
        assert_eq!(r.buf, want, "{}", String::from_utf8_lossy(&r.buf));
    }

    #[test]
    fn resp3_reply_bytes() {
        let (columns, rows) = sample_rows();
        let mut r = Reply::new(true);
        write_resp(&mut r, &columns, &rows);
        let want: &[u8] = b"*6\r\n*2\r\n$2\r\nid\r\n$1\r\nv\r\n\
                    *2\r\n:1\r\n,0.1\r\n\
                    *2\r\n#t\r\n_\r\n\
                    *2\r\n$2\r\n\x00\xff\r\n$4\r\n1.50\r\n\
                    *2\r\n*2\r\n:-2\r\n_\r\n,-inf\r\n\
                    *2\r\n$16\r\n{\"a\": [1, 2.50]}\r\n,1e+06\r\n";
        assert_eq!(r.buf, want, "{}", String::from_utf8_lossy(&r.buf));
    }

    #[test]
    fn json_reply() {
        let (columns, rows) = sample_rows();
        let json = to_json(&columns, &rows, "replica:r1");
        assert_eq!(
            json,
            r#"{"columns":["id","v"],"rows":[[1,0.1],[true,null],["\\x00ff","1.50"],[[-2,null],"-Infinity"],[{"a": [1, 2.50]},1e+06]],"source":"replica:r1"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["rows"][2][0], "\\x00ff");
        assert_eq!(parsed["rows"][4][0]["a"][1], 2.5);
        assert_eq!(parsed["rows"][4][1], 1e6);
        let nan = to_json(&[], &[vec![PgValue::Float(f64::NAN)]], "l1");
        assert_eq!(nan, r#"{"columns":[],"rows":[["NaN"]],"source":"l1"}"#);
        // Text needing escapes, and a json value that is not JSON, stay valid JSON.
        let odd = to_json(
            &["q\"\n".into()],
            &[vec![
                PgValue::Text("a\\b\u{1}é".into()),
                PgValue::Json("{not json".into()),
            ]],
            "primary",
        );
        let parsed: serde_json::Value = serde_json::from_str(&odd).unwrap();
        assert_eq!(parsed["columns"][0], "q\"\n");
        assert_eq!(parsed["rows"][0][0], "a\\b\u{1}é");
        assert_eq!(parsed["rows"][0][1], "{not json");
    }

    /// Every type the decoder knows, plus nested shapes.
    fn types() -> Vec<Type> {
        vec![
            Type::BOOL,
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::NUMERIC,
            Type::TEXT,
            Type::CHAR,
            Type::JSONB,
            Type::DATE,
            Type::TIME,
            Type::TIMETZ,
            Type::TIMESTAMPTZ,
            Type::INTERVAL,
            Type::UUID,
            Type::INET,
            Type::CIDR,
            Type::MACADDR,
            Type::BIT,
            Type::TID,
            Type::PG_LSN,
            Type::PG_SNAPSHOT,
            Type::POINT,
            Type::PATH,
            Type::POLYGON,
            Type::CIRCLE,
            Type::TS_VECTOR,
            Type::INT2_VECTOR,
            Type::RECORD,
            Type::INT4_RANGE,
            Type::NUMMULTI_RANGE,
            Type::NUMERIC_ARRAY,
            Type::RECORD_ARRAY,
            Type::TSTZ_RANGE_ARRAY,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever bytes arrive, decoding returns a value or an error; it never panics.
        #[test]
        fn garbage_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64), i in 0usize..35) {
            let types = types();
            let ty = &types[i % types.len()];
            let _ = PgValue::decode(ty, Some(&raw));
            let _ = text_form(ty, &raw);
        }

        /// Structured garbage: a plausible header followed by random bytes.
        #[test]
        fn truncated_structures_are_errors(
            n in -2i32..4,
            rest in proptest::collection::vec(any::<u8>(), 0..48),
            i in 0usize..35,
        ) {
            let types = types();
            let ty = &types[i % types.len()];
            let mut raw = n.to_be_bytes().to_vec();
            raw.extend_from_slice(&rest);
            let _ = PgValue::decode(ty, Some(&raw));
            let _ = text_form(ty, &raw);
        }

        #[test]
        fn json_output_always_parses(s in "\\PC*", b in proptest::collection::vec(any::<u8>(), 0..16)) {
            let rows = vec![vec![PgValue::Text(s.clone()), PgValue::Json(s.clone()), PgValue::Bytes(b)]];
            let json = to_json(std::slice::from_ref(&s), &rows, "l2");
            let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(parsed["columns"][0].as_str(), Some(s.as_str()));
            prop_assert_eq!(parsed["rows"][0][0].as_str(), Some(s.as_str()));
        }
    }

    #[test]
    fn nesting_is_bounded() {
        // record(record(record(...))) far deeper than MAX_DEPTH.
        let mut raw: Vec<u8> = 0i32.to_be_bytes().to_vec();
        for _ in 0..200 {
            let mut outer = 1i32.to_be_bytes().to_vec();
            outer.extend_from_slice(&oid::RECORD.to_be_bytes());
            outer.extend_from_slice(&(raw.len() as i32).to_be_bytes());
            outer.extend_from_slice(&raw);
            raw = outer;
        }
        let err = text_form(&Type::RECORD, &raw).unwrap_err();
        assert!(err.message().contains("nesting"), "{err}");
    }
}
