//! QUERY value conversion (src/db/value.rs) against a real PostgreSQL 15: for every supported
//! type, values are selected both as the typed column (binary, converted by Strata) and as
//! `::text` (PostgreSQL's own output function), and the two must agree exactly — edge cases as
//! SQL literals, plus property tests with random values for numeric, float4/float8, int8,
//! date, timestamptz, interval, unicode text, bytea and arrays. Arrays must also keep their
//! shape (nested arrays per dimension) and each element's own conversion. Types Strata cannot
//! render give an error naming the column, and whole rows go through the RESP2, RESP3 and JSON
//! writers.
//!
//! Each test opens its own connection (a current-thread runtime) to the shared cluster's
//! primary, with the session settings Strata's connections use: TimeZone UTC, DateStyle ISO,
//! IntervalStyle postgres, extra_float_digits 1.
mod support;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::error::Error;
use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::Instant;
use strata::db::value::{column_names, row_values, text_form, to_json, write_resp, PgValue};
use strata::server::reply::Reply;
use support::pg::{unique_name, PgCluster};
use tokio::runtime::Runtime;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Row, SimpleQueryMessage};

/// A column's bytes as received.
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Raw, Box<dyn Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Raw, Box<dyn Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A parameter sent in binary exactly as given (timestamps and intervals without a date crate).
#[derive(Debug)]
struct Bin(Vec<u8>);

impl ToSql for Bin {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// The schema holding this binary's user types (enum, composite, domain, range), created once.
fn schema() -> &'static str {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let c = PgCluster::shared();
        let s = unique_name("dbv");
        c.exec(
            "p0",
            &format!(
                "CREATE EXTENSION IF NOT EXISTS citext; \
                 CREATE EXTENSION IF NOT EXISTS hstore; \
                 CREATE SCHEMA {s}; \
                 CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'very happy', 'quo\"te'); \
                 CREATE TYPE {s}.pair AS (a int, b text, m {s}.mood, n numeric[]); \
                 CREATE DOMAIN {s}.posint AS int CHECK (VALUE > 0); \
                 CREATE TYPE {s}.floatrange AS RANGE (subtype = float8)"
            ),
        );
        s
    })
}

struct Pg {
    rt: Runtime,
    client: Client,
}

impl Pg {
    fn connect() -> Pg {
        let schema = schema();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = PgCluster::shared().primary().url();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!(
                    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; \
                     SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; \
                     SET bytea_output = 'hex'; SET search_path = {schema}, public"
                ))
                .await
                .unwrap();
            client
        });
        Pg { rt, client }
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<Row> {
        self.rt
            .block_on(self.client.query(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// Runs `sql`, whose columns come in pairs (a value, then PostgreSQL's `::text` of it),
    /// and asserts that Strata's text form of every value is PostgreSQL's, and that scalar
    /// values render the same text. Returns the converted values of the first column.
    fn check(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<PgValue> {
        let rows = self.query(sql, params);
        let mut firsts = Vec::new();
        for row in &rows {
            let values = row_values(row).unwrap_or_else(|e| panic!("{sql}: {e}"));
            for pair in 0..row.len() / 2 {
                let ty = row.columns()[2 * pair].type_();
                let Raw(raw) = row.get(2 * pair);
                let pg_text: Option<String> = row.get(2 * pair + 1);
                let value = PgValue::decode(ty, raw.as_deref())
                    .unwrap_or_else(|e| panic!("{sql}: {ty}: {e}"));
                assert_eq!(format!("{value:?}"), format!("{:?}", values[2 * pair]));
                match (&raw, &pg_text) {
                    (None, None) => assert_eq!(value, PgValue::Null),
                    (Some(raw), Some(want)) => {
                        let ours = text_form(ty, raw).unwrap_or_else(|e| panic!("{ty}: {e}"));
                        assert_eq!(&ours, want, "{ty} in {sql}");
                        if let Some(text) = value.scalar_text() {
                            assert_eq!(&*text, want, "{ty} value {value:?}");
                        }
                    }
                    _ => panic!("NULL mismatch in {sql}"),
                }
                if pair == 0 {
                    firsts.push(value);
                }
            }
        }
        firsts
    }

    /// Runs `sql` through the simple query protocol, where PostgreSQL formats every value with
    /// its type's output function: the text form a client of PostgreSQL itself sees.
    fn simple(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let messages = self
            .rt
            .block_on(self.client.simple_query(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// Runs `sql` in binary (as Strata does) and in text, and asserts that every converted
    /// value has exactly PostgreSQL's text form. Returns the converted rows.
    fn compare(&self, sql: &str) -> Vec<Vec<PgValue>> {
        let rows = self.query(sql, &[]);
        let texts = self.simple(sql);
        assert_eq!(rows.len(), texts.len(), "{sql}");
        let mut out = Vec::new();
        for (row, text) in rows.iter().zip(&texts) {
            let values = row_values(row).unwrap_or_else(|e| panic!("{sql}: {e}"));
            for (i, want) in text.iter().enumerate() {
                let ty = row.columns()[i].type_();
                let Raw(raw) = row.get(i);
                match (&raw, want) {
                    (None, None) => assert_eq!(values[i], PgValue::Null),
                    (Some(raw), Some(want)) => {
                        let ours = text_form(ty, raw).unwrap_or_else(|e| panic!("{ty}: {e}"));
                        assert_eq!(&ours, want, "{ty} in {sql}");
                        if let Some(text) = values[i].scalar_text() {
                            assert_eq!(&*text, want, "{ty} value {:?}", values[i]);
                        }
                    }
                    _ => panic!("NULL mismatch in {sql}"),
                }
            }
            out.push(values);
        }
        out
    }

    /// `compare` over SQL expressions of one type, as rows of a VALUES list; returns the
    /// converted values.
    fn exprs(&self, ty: &str, exprs: &[&str]) -> Vec<PgValue> {
        let values: Vec<String> = exprs.iter().map(|e| format!("(({e})::{ty})")).collect();
        let sql = format!("SELECT v FROM (VALUES {}) AS x(v)", values.join(", "));
        let got: Vec<PgValue> = self.compare(&sql).into_iter().flatten().collect();
        assert_eq!(got.len(), exprs.len());
        got
    }

    /// Arrays given as SQL expressions: text form as `compare`, plus the shape (one nested
    /// array per dimension, `array_dims`) and each element's own conversion (`unnest`).
    fn arrays(&self, ty: &str, exprs: &[&str]) {
        let values: Vec<String> = exprs.iter().map(|e| format!("(({e})::{ty})")).collect();
        let sql = format!(
            "SELECT v, array_dims(v) FROM (VALUES {}) AS x(v)",
            values.join(", ")
        );
        let rows = self.compare(&sql);
        let numbered: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("({i}, {v})"))
            .collect();
        let elements = self.simple(&format!(
            "SELECT n, unnest(v) FROM (VALUES {}) AS x(n, v)",
            numbered.join(", ")
        ));
        for (i, row) in rows.iter().enumerate() {
            let want: Vec<Option<String>> = elements
                .iter()
                .filter(|e| e[0].as_deref() == Some(i.to_string().as_str()))
                .map(|e| e[1].clone())
                .collect();
            let dims = match &row[1] {
                PgValue::Text(d) => Some(d.clone()),
                _ => None,
            };
            check_shape(&row[0], dims.as_deref(), &want);
        }
    }

    /// A row of `v, v::text, array_dims(v), ARRAY(SELECT unnest(v)::text)`.
    fn check_array_row(&self, row: &Row, sql: &str) {
        let ty = row.columns()[0].type_();
        let Raw(raw) = row.get(0);
        let pg_text: Option<String> = row.get(1);
        let dims: Option<String> = row.get(2);
        let elems: Vec<Option<String>> = row.get(3);
        let (Some(raw), Some(pg_text)) = (raw, pg_text) else {
            panic!("NULL array in {sql}");
        };
        assert_eq!(text_form(ty, &raw).unwrap(), pg_text, "{sql}");
        let value = PgValue::decode(ty, Some(&raw)).unwrap();
        check_shape(&value, dims.as_deref(), &elems);
    }
}

/// Asserts that an array value nests as `array_dims` says and that its elements, in order,
/// have the given text forms (`None` = NULL).
fn check_shape(value: &PgValue, dims: Option<&str>, elems: &[Option<String>]) {
    let lens: Vec<usize> = dims
        .unwrap_or("")
        .split(']')
        .filter(|d| !d.is_empty())
        .map(|d| {
            let (lo, hi) = d.trim_start_matches('[').split_once(':').unwrap();
            (hi.parse::<i64>().unwrap() - lo.parse::<i64>().unwrap() + 1) as usize
        })
        .collect();
    assert!(has_shape(value, &lens), "{value:?} is not shaped {dims:?}");
    let mut flat = Vec::new();
    flatten(value, &mut flat);
    let ours: Vec<Option<String>> = flat
        .iter()
        .map(|v| v.scalar_text().map(|t| t.into_owned()))
        .collect();
    assert_eq!(ours, elems, "elements of {value:?}");
}

/// True when `v` nests as the dimension lengths say (an empty array has no dimensions).
fn has_shape(v: &PgValue, lens: &[usize]) -> bool {
    match (v, lens.split_first()) {
        (PgValue::Array(items), None) => items.is_empty(),
        (PgValue::Array(items), Some((&n, inner))) => {
            items.len() == n
                && items.iter().all(|i| {
                    if inner.is_empty() {
                        !matches!(i, PgValue::Array(_))
                    } else {
                        has_shape(i, inner)
                    }
                })
        }
        _ => false,
    }
}

fn flatten<'a>(v: &'a PgValue, out: &mut Vec<&'a PgValue>) {
    match v {
        PgValue::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Runs a property over `cases` random inputs with proptest's runner (shrinking included), so
/// the connection and runtime are shared by every case.
fn property<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S::Value: Debug,
{
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |v| {
        test(v);
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

const CASES: u32 = 1000;

#[test]
fn integers_and_oids() {
    let pg = Pg::connect();
    let got = pg.exprs("int2", &["0", "-32768", "32767", "-1", "NULL"]);
    assert_eq!(got[1], PgValue::Int(-32768));
    assert_eq!(got[4], PgValue::Null);
    pg.exprs("int4", &["0", "-2147483648", "2147483647", "42"]);
    let got = pg.exprs(
        "int8",
        &["0", "-9223372036854775808", "9223372036854775807", "-1"],
    );
    assert_eq!(got[1], PgValue::Int(i64::MIN));
    let got = pg.exprs("oid", &["0", "4294967295", "'pg_class'::regclass::oid"]);
    assert_eq!(got[1], PgValue::Int(4_294_967_295));
    assert_eq!(got[2], PgValue::Int(1259));
    pg.exprs("xid", &["'0'", "'4294967295'", "'12345'"]);
    pg.exprs("cid", &["'0'", "'4294967295'"]);
    pg.exprs("xid8", &["'0'", "'18446744073709551615'"]);
    let t0 = Instant::now();
    property(CASES, any::<i64>(), |n| {
        let got = pg.check("SELECT $1::int8, $1::int8::text", &[&n]);
        assert_eq!(got, vec![PgValue::Int(n)]);
    });
    eprintln!("int8: {CASES} cases in {:?}", t0.elapsed());
}

#[test]
fn numeric_edge_cases() {
    let pg = Pg::connect();
    let got = pg.exprs(
        "numeric",
        &[
            "0",
            "'0.000'",
            "'-0.0'",
            "1",
            "'-1'",
            "'1.50'",
            "'1.000'",
            "'0.1'",
            "'0.0001'",
            "'0.00001'",
            "'0.000000001'",
            "'12345678901234567890.12345678901234567890'",
            "'-98765432109876543210987654321'",
            "'10000'",
            "'100000000'",
            "'9999.9999'",
            "'1e20'",
            "'1e-20'",
            "'1.5e-300'",
            "'1e1000'",
            "'1e-1000'",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "12345::numeric(5,-2)",
            "'0.5'::numeric(10,5)",
            "'123.456'::numeric(5,1)",
            "'99999'::numeric(5,0)",
            "1::numeric / 3",
            "2::numeric / 3",
            "sqrt(2::numeric)",
            "exp(1::numeric)",
            "ln(10::numeric)",
            "factorial(40)",
            "10::numeric ^ 300",
            "round(2::numeric / 7, 50)",
            "'0.00010000'",
            "0.1 + 0.2",
            "NULL",
        ],
    );
    assert_eq!(got[5], PgValue::Text("1.50".into()));
    assert_eq!(got[24], PgValue::Text("12300".into()), "negative scale");
    assert_eq!(got[21], PgValue::Text("NaN".into()));
    // A very long one: 100 001 digits.
    pg.exprs("numeric", &["'1e100000'", "'-1e-16383'"]);
}

/// A decimal literal: plain, with leading/trailing zeros, or in exponent form.
fn numeric_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ("-?", "[0-9]{1,30}", proptest::option::of("[0-9]{0,30}")).prop_map(
            |(sign, int, frac)| match frac {
                Some(f) => format!("{sign}{int}.{f}"),
                None => format!("{sign}{int}"),
            }
        ),
        2 => ("-?", "[1-9]", "[0-9]{0,25}", -300i32..300)
            .prop_map(|(sign, a, b, e)| format!("{sign}{a}.{b}e{e}")),
        1 => (0u32..4).prop_map(|i| ["NaN", "Infinity", "-Infinity", "0"][i as usize].to_string()),
    ]
}

#[test]
fn numeric_matches_postgresql_for_random_values() {
    let pg = Pg::connect();
    let t0 = Instant::now();
    property(CASES, (numeric_literal(), 0i32..40), |(lit, scale)| {
        let got = pg.check(
            "SELECT $1::text::numeric, $1::text::numeric::text, \
                    round($1::text::numeric, $2), round($1::text::numeric, $2)::text, \
                    $1::text::numeric / 7, ($1::text::numeric / 7)::text, \
                    $1::text::numeric * 0.001, ($1::text::numeric * 0.001)::text",
            &[&lit, &scale],
        );
        assert!(matches!(got[0], PgValue::Text(_)), "{got:?}");
    });
    eprintln!("numeric: {CASES} cases in {:?}", t0.elapsed());
}

#[test]
fn float_edge_cases() {
    let pg = Pg::connect();
    let float8 = [
        "'0'",
        "'-0'",
        "'NaN'",
        "'Infinity'",
        "'-Infinity'",
        "'0.1'",
        "'1e15'",
        "'1e14'",
        "'123456789012345678'",
        "'1e-5'",
        "'0.0001'",
        "'1.7976931348623157e308'",
        "'2.2250738585072014e-308'",
        "'5e-324'",
        "'1e-310'",
        "'3.141592653589793'",
        "'100'",
        "'-1.5e-7'",
        "0.1::float8 + 0.2::float8",
        "1::float8 / 3",
    ];
    let got = pg.exprs("float8", &float8);
    assert_eq!(got[5], PgValue::Float(0.1));
    assert_eq!(got[1].scalar_text().as_deref(), Some("-0"));
    let float4 = [
        "'0'",
        "'-0'",
        "'NaN'",
        "'Infinity'",
        "'-Infinity'",
        "'1.1'",
        "'1e6'",
        "'123456'",
        "'1234567'",
        "'0.0001'",
        "'1e-5'",
        "'3.4028235e38'",
        "'1.17549435e-38'",
        "'1e-45'",
        "'16777217'",
        "1::float4 / 3",
    ];
    let got = pg.exprs("float4", &float4);
    assert_eq!(got[5], PgValue::Float4(1.1));
    assert_eq!(got[6].scalar_text().as_deref(), Some("1e+06"));
}

#[test]
fn floats_match_postgresql_for_random_values() {
    let pg = Pg::connect();
    let t0 = Instant::now();
    property(CASES, any::<f64>(), |v| {
        let got = pg.check("SELECT $1::float8, $1::float8::text", &[&v]);
        match got[0] {
            PgValue::Float(f) => assert!(f.to_bits() == v.to_bits() || (f.is_nan() && v.is_nan())),
            ref other => panic!("{other:?}"),
        }
    });
    // Values near powers of ten, where the fixed/exponent switch and rounding live.
    property(CASES, (-330i32..310, 1u64..10_000), |(e, m)| {
        let v = m as f64 * 10f64.powi(e);
        pg.check("SELECT $1::float8, $1::float8::text", &[&v]);
    });
    property(CASES, any::<f32>(), |v| {
        let got = pg.check("SELECT $1::float4, $1::float4::text", &[&v]);
        match got[0] {
            PgValue::Float4(f) => {
                assert!(f.to_bits() == v.to_bits() || (f.is_nan() && v.is_nan()))
            }
            ref other => panic!("{other:?}"),
        }
    });
    eprintln!("float8/float4: {} cases in {:?}", 3 * CASES, t0.elapsed());
}

#[test]
fn floats_in_bulk_match_postgresql() {
    use rand::{Rng, SeedableRng};
    let pg = Pg::connect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5747_4154);
    let t0 = Instant::now();
    // Random bit patterns (every exponent), integers (where rounding boundaries are short
    // decimals) and short decimals.
    let mut f4: Vec<f32> = (0..20_000).map(|_| f32::from_bits(rng.random())).collect();
    f4.extend((0..20_000).map(|_| rng.random_range(-1e10f64..1e10).round() as f32));
    f4.extend((0..10_000).map(|_| rng.random_range(0..1_000_000) as f32 / 1000.0));
    let mut f8: Vec<f64> = (0..20_000).map(|_| f64::from_bits(rng.random())).collect();
    f8.extend((0..20_000).map(|_| rng.random_range(-1e19f64..1e19).round()));
    f8.extend((0..10_000).map(|_| rng.random_range(0..1_000_000_000u64) as f64 / 1e4));
    let n4 = pg
        .check("SELECT x, x::text FROM unnest($1::float4[]) AS x", &[&f4])
        .len();
    let n8 = pg
        .check("SELECT x, x::text FROM unnest($1::float8[]) AS x", &[&f8])
        .len();
    assert_eq!((n4, n8), (f4.len(), f8.len()));
    eprintln!(
        "{} float4 and {} float8 values in {:?}",
        n4,
        n8,
        t0.elapsed()
    );
}

#[test]
fn text_types() {
    let pg = Pg::connect();
    let got = pg.exprs(
        "text",
        &[
            "''",
            "'plain'",
            "'with \"quotes\", commas {}'",
            "'é日本語🎉'",
            "E'tab\\tnl\\n'",
        ],
    );
    assert_eq!(got[3], PgValue::Text("é日本語🎉".into()));
    pg.exprs("varchar(5)", &["'abcdefg'", "'ab'"]);
    let got = pg.exprs("char(5)", &["'ab'", "''", "'abcde'"]);
    assert_eq!(
        got[0],
        PgValue::Text("ab   ".into()),
        "bpchar keeps its padding"
    );
    pg.exprs("name", &["'relname'", "repeat('x', 100)"]);
    pg.exprs(
        "\"char\"",
        &[
            "'a'",
            "''",
            "(-56)::int4",
            "(-1)::int4",
            "127::int4",
            "'\\'",
            "' '",
        ],
    );
    pg.exprs("citext", &["'MiXeD Case'"]);
    pg.exprs(
        "xml",
        &[
            "'<a b=\"1\">x &amp; y</a>'",
            "'text only'",
            "xmlelement(name x, 'é')",
        ],
    );
    let got = pg.exprs("mood", &["'sad'", "'very happy'", "'quo\"te'"]);
    assert_eq!(got[1], PgValue::Text("very happy".into()));
    pg.exprs("posint", &["1", "2147483647"]);
    pg.exprs("refcursor", &["'cur'"]);
    let got = pg.exprs(
        "json",
        &[
            "'{\"b\": 1, \"a\": [1.50, null, \"x\"]}'",
            "'  [1e400, 12345678901234567890123]  '",
            "'\"\\u00e9\"'",
        ],
    );
    assert_eq!(
        got[0],
        PgValue::Json("{\"b\": 1, \"a\": [1.50, null, \"x\"]}".into())
    );
    let got = pg.exprs(
        "jsonb",
        &[
            "'{\"b\": 1, \"a\": [1.50, null, \"x\"]}'",
            "'12345678901234567890.5'",
            "'\"é\"'",
            "'[]'",
        ],
    );
    assert_eq!(
        got[0],
        PgValue::Json("{\"a\": [1.50, null, \"x\"], \"b\": 1}".into())
    );
    pg.exprs("jsonpath", &["'$.a[*] ? (@ > 1)'", "'strict $.\"x y\"'"]);
    // Functions returning void (pg_sleep) and unknown-typed literals.
    pg.compare("SELECT pg_sleep(0), 'unknown literal', ev_action FROM pg_rewrite LIMIT 1");
    let t0 = Instant::now();
    let text = any::<String>().prop_map(|s| s.replace('\0', ""));
    property(CASES, text, |s| {
        let got = pg.check("SELECT $1::text, $1::text::text", &[&s]);
        assert_eq!(got, vec![PgValue::Text(s)]);
    });
    eprintln!("text: {CASES} cases in {:?}", t0.elapsed());
}

#[test]
fn bytea_is_raw_bytes() {
    let pg = Pg::connect();
    let got = pg.exprs(
        "bytea",
        &["''", "'\\x00ff10'", "'abc'", "decode('deadbeef', 'hex')"],
    );
    assert_eq!(got[1], PgValue::Bytes(vec![0, 0xff, 0x10]));
    assert_eq!(got[0], PgValue::Bytes(vec![]));
    let t0 = Instant::now();
    property(
        CASES,
        proptest::collection::vec(any::<u8>(), 0..300),
        |bytes| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let rows = pg.query(
                "SELECT $1::bytea, $1::bytea::text, decode($2::text, 'hex')",
                &[&bytes, &hex],
            );
            let values = row_values(&rows[0]).unwrap();
            let Raw(pg_bytes) = rows[0].get(2);
            assert_eq!(values[0], PgValue::Bytes(bytes.clone()));
            assert_eq!(values[2], PgValue::Bytes(pg_bytes.unwrap()));
            let pg_text: String = rows[0].get(1);
            assert_eq!(values[0].scalar_text().unwrap(), pg_text);
        },
    );
    eprintln!("bytea: {CASES} cases in {:?}", t0.elapsed());
}

#[test]
fn dates_and_times() {
    let pg = Pg::connect();
    pg.exprs(
        "date",
        &[
            "'2000-01-01'",
            "'1999-12-31'",
            "'2024-02-29'",
            "'0001-01-01'",
            "'0001-12-31 BC'",
            "'0044-03-15 BC'",
            "'4713-01-01 BC'",
            "'4714-11-24 BC'",
            "'5874897-12-31'",
            "'10000-01-01'",
            "'1900-02-28'",
            "'infinity'",
            "'-infinity'",
        ],
    );
    pg.exprs(
        "time",
        &[
            "'00:00'",
            "'23:59:59.999999'",
            "'24:00:00'",
            "'12:34:56.5'",
            "'01:02:03.000010'",
            "'12:00:00.123'::time(2)",
        ],
    );
    pg.exprs(
        "timetz",
        &[
            "'12:00+05:30'",
            "'12:00-03'",
            "'00:00:00+15:59'",
            "'23:59:59.999999-15:59:59'",
            "'12:00:00+01:02:03'",
            "'12:00:00.5+00'",
            "'24:00:00-01'",
        ],
    );
    let ts = [
        "'2000-01-01 00:00:00'",
        "'1970-01-01 00:00:00'",
        "'2024-02-29 12:34:56.000001'",
        "'2024-01-02 03:04:05.123456'",
        "'1999-12-31 23:59:59.999999'",
        "'0001-01-01 00:00:00'",
        "'0001-12-31 23:59:59.5 BC'",
        "'4713-01-01 00:00:00 BC'",
        "'4714-11-24 00:00:00 BC'",
        "'294276-12-31 23:59:59.999999'",
        "'infinity'",
        "'-infinity'",
    ];
    pg.exprs("timestamp", &ts);
    let got = pg.exprs("timestamptz", &ts);
    assert_eq!(
        got[3],
        PgValue::Text("2024-01-02 03:04:05.123456+00".into())
    );
    let got = pg.exprs(
        "timestamptz",
        &[
            "'2024-01-02 03:04:05.123456+02'",
            "'2024-06-30 23:30:00-07:30'",
        ],
    );
    assert_eq!(
        got[0],
        PgValue::Text("2024-01-02 01:04:05.123456+00".into())
    );
    pg.exprs("timestamp(0)", &["'2024-01-02 03:04:05.9'"]);
    // timestamptz is rendered in UTC whatever the session's TimeZone.
    pg.rt
        .block_on(pg.client.batch_execute("SET TimeZone = 'America/New_York'"))
        .unwrap();
    let rows = pg.query("SELECT '2024-01-02 03:04:05.123456+02'::timestamptz", &[]);
    assert_eq!(
        row_values(&rows[0]).unwrap(),
        vec![PgValue::Text("2024-01-02 01:04:05.123456+00".into())]
    );
}

/// timestamp's range: 4714-11-24 00:00 BC up to (not including) 294277-01-01.
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

#[test]
fn timestamps_and_dates_match_postgresql_for_random_values() {
    let pg = Pg::connect();
    let t0 = Instant::now();
    let usecs = prop_oneof![
        MIN_TIMESTAMP..END_TIMESTAMP,
        -100_000_000_000_000i64..100_000_000_000_000,
        // Around 1 BC / 1 AD.
        -63_200_000_000_000_000i64..-62_900_000_000_000_000,
    ];
    property(CASES, usecs, |us| {
        let b = Bin(us.to_be_bytes().to_vec());
        pg.check(
            "SELECT $1::timestamptz, $1::timestamptz::text, \
                    $1::timestamptz::timestamp, $1::timestamptz::timestamp::text, \
                    $1::timestamptz::time, $1::timestamptz::time::text",
            &[&b],
        );
    });
    property(CASES, -2_451_545i32..2_145_031_949, |days| {
        let b = Bin(days.to_be_bytes().to_vec());
        pg.check("SELECT $1::date, $1::date::text", &[&b]);
    });
    eprintln!(
        "timestamptz/timestamp/time/date: {} cases in {:?}",
        2 * CASES,
        t0.elapsed()
    );
}

#[test]
fn intervals() {
    let pg = Pg::connect();
    pg.exprs(
        "interval",
        &[
            "'0'",
            "'1 year 2 mons 3 days 04:05:06.789'",
            "'-1 day +02:00:00'",
            "'1 day -02:00:00'",
            "'-1 year -1 mon'",
            "'1 mon -5 days'",
            "'-00:00:00.000001'",
            "'1 year'",
            "'-1 years'",
            "'1 day'",
            "'25 hours'",
            "'-1 hours -2 minutes'",
            "'178000000 years'",
            "'-178000000 years'",
            "'2562047788:00:54.775807'",
            "'-2562047788:00:54.775807'",
            "'1 day 00:00:00.5'",
            "'1.5 months'",
            "'0.000001 seconds'",
            "'00:00:59.999999'",
            "make_interval(0, 0, 0, 0, 0, 0, 0)",
        ],
    );
    let t0 = Instant::now();
    property(
        CASES,
        (any::<i64>(), any::<i32>(), any::<i32>()),
        |(time, days, months)| {
            let mut b = time.to_be_bytes().to_vec();
            b.extend_from_slice(&days.to_be_bytes());
            b.extend_from_slice(&months.to_be_bytes());
            pg.check("SELECT $1::interval, $1::interval::text", &[&Bin(b)]);
        },
    );
    // Small values, where the signs and zero parts interact.
    property(
        CASES,
        (-90_000_000_000i64..90_000_000_000, -3i32..3, -14i32..14),
        |(time, days, months)| {
            let mut b = time.to_be_bytes().to_vec();
            b.extend_from_slice(&days.to_be_bytes());
            b.extend_from_slice(&months.to_be_bytes());
            pg.check("SELECT $1::interval, $1::interval::text", &[&Bin(b)]);
        },
    );
    eprintln!("interval: {} cases in {:?}", 2 * CASES, t0.elapsed());
}

#[test]
fn network_uuid_bits_and_system_types() {
    let pg = Pg::connect();
    let addrs = [
        "'10.0.0.1'",
        "'10.1.2.3/8'",
        "'0.0.0.0/0'",
        "'255.255.255.255'",
        "'::'",
        "'::1'",
        "'::2'",
        "'::ff'",
        "'1::'",
        "'::1.2.3.4'",
        "'::ffff:1.2.3.4'",
        "'::ffff:0:1.2.3.4'",
        "'1:0:0:1::'",
        "'1:0:0:2:0:0:0:3'",
        "'1:0:0:2:0:0:3:4'",
        "'1:0:2:3:4:5:6:7'",
        "'fe80::1:2/64'",
        "'2001:db8:85a3::8a2e:370:7334'",
        "'0:0:0:0:0:1:0:0'",
        "'::ffff'",
        "'0:0:0:0:0:ffff:0:0'",
    ];
    pg.exprs("inet", &addrs);
    pg.exprs(
        "cidr",
        &[
            "'10.0.0.0/8'",
            "'10.1.2.3'",
            "'192.168.0.0/16'",
            "'2001:db8::/32'",
            "'::/0'",
            "'::1'",
        ],
    );
    pg.exprs("macaddr", &["'08:00:2b:01:02:03'", "'FF-FF-FF-00-00-00'"]);
    pg.exprs(
        "macaddr8",
        &["'08:00:2b:01:02:03:04:05'", "'08:00:2b:01:02:03'"],
    );
    pg.exprs(
        "uuid",
        &[
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "md5('x')::uuid",
            "'00000000-0000-0000-0000-000000000000'",
        ],
    );
    pg.exprs("bit(10)", &["B'1010110011'", "B'0000000000'"]);
    pg.exprs(
        "varbit",
        &["B''", "B'1'", "B'101011001110101'", "B'11111111'"],
    );
    pg.exprs("tid", &["'(0,1)'", "'(4294967295,65535)'"]);
    pg.exprs("pg_lsn", &["'0/0'", "'16/B374D848'", "'FFFFFFFF/FFFFFFFF'"]);
    pg.exprs(
        "pg_snapshot",
        &["'10:20:10,14,15'", "'10:10:'", "pg_current_snapshot()"],
    );
    pg.exprs("txid_snapshot", &["'10:20:10,14,15'"]);
    pg.exprs("int2vector", &["'1 2 3'", "''", "'-5'"]);
    pg.exprs("oidvector", &["'1 4294967295'", "''"]);
    pg.exprs(
        "tsvector",
        &[
            "'a fat cat sat on a mat'",
            "'a:1A fat:2B,4C cat:5D'",
            "$$'it''s' 'back\\\\slash' 'sp ace'$$",
            "to_tsvector('english', 'The quick brown foxes jumped')",
            "''",
        ],
    );
    pg.exprs("bool", &["true", "false"]);
}

#[test]
fn geometric_types() {
    let pg = Pg::connect();
    pg.exprs("point", &["'(1,2)'", "'(0.1,-1e20)'", "'(NaN,Infinity)'"]);
    pg.exprs("lseg", &["'[(1,2),(3.5,4)]'"]);
    pg.exprs("box", &["'(1,2),(3,4)'", "'((0.1,0.2),(-1,-2))'"]);
    pg.exprs("path", &["'[(1,2),(3,4),(5,6)]'", "'((1,2),(3,4))'"]);
    pg.exprs("polygon", &["'((0,0),(1,0),(1,1.5))'"]);
    pg.exprs("line", &["'{1,-1,0}'", "'[(0,0),(1,2)]'"]);
    pg.exprs("circle", &["'<(1,2),3>'", "'((0.5,0.5),1e-5)'"]);
}

#[test]
fn ranges_multiranges_records_and_hstore() {
    let pg = Pg::connect();
    pg.exprs(
        "int4range",
        &["'[1,5)'", "'empty'", "'(,5]'", "'[3,)'", "'(,)'", "'[1,1]'"],
    );
    pg.exprs("int8range", &["'[-9223372036854775808,0)'"]);
    pg.exprs("numrange", &["'[1.50,2.000]'", "'(NaN,NaN)'"]);
    pg.exprs("daterange", &["'[2024-01-01,2024-02-01)'", "'[,infinity)'"]);
    pg.exprs(
        "tsrange",
        &[
            "'[2024-01-01 10:00,2024-01-01 11:00)'",
            "'[2000-01-01 00:00:00 BC,)'",
        ],
    );
    pg.exprs("tstzrange", &["'[2024-01-01 10:00+02,infinity]'"]);
    pg.exprs("floatrange", &["'[1.5,1e20]'", "'(-Infinity,0)'"]);
    pg.exprs(
        "int4multirange",
        &["'{}'", "'{[1,3),[5,7)}'", "'{(,5),[10,)}'"],
    );
    pg.exprs("tsmultirange", &["'{[2024-01-01 10:00,2024-01-01 11:00)}'"]);
    pg.exprs(
        "pair",
        &[
            "row(1, 'a', 'sad', '{1.5,NULL}')",
            "row(NULL, '', 'very happy', '{}')",
            "row(-1, 'with \"quote\" and \\\\ backslash, comma (paren)', 'quo\"te', NULL)",
            "row(NULL, NULL, NULL, NULL)",
            "row(2, ' space', 'ok', '{{1,2},{3,4}}')",
        ],
    );
    // Anonymous records: field types come from their OIDs.
    pg.compare(
        "SELECT row(1, 'a b', NULL, '', ARRAY[1,2], 1.5::float8, row(true, 'x'), \
                '10.0.0.1'::inet, 'ab'::char(4), '{\"k\": 1}'::jsonb)",
    );
    pg.exprs(
        "hstore",
        &[
            "'a=>1, b=>NULL'",
            "''",
            "'\"k ey\"=>\"va\\\"lue\", x=>\"\"'",
            "'é=>日本'",
        ],
    );
}

#[test]
fn arrays_of_every_kind() {
    let pg = Pg::connect();
    pg.arrays(
        "int4[]",
        &[
            "'{}'",
            "'{1,2,3}'",
            "'{1,NULL,3}'",
            "'{NULL}'",
            "'{{1,2},{3,4}}'",
            "'{{{1,2},{3,4}},{{5,6},{7,NULL}}}'",
            "'[0:2]={1,2,3}'",
            "'[-5:-4][3:4]={{1,2},{3,4}}'",
            "'{{1},{2},{3}}'",
        ],
    );
    pg.arrays(
        "text[]",
        &[
            "ARRAY['a', 'with space', 'comma,here', 'quote\"d', 'back\\slash', '{brace}', \
             '', 'NULL', 'null', NULL, 'é日本', E'tab\\there', 'x;y']",
            "ARRAY[ARRAY['a','b'],ARRAY['c',NULL]]",
            "'{}'",
        ],
    );
    pg.arrays(
        "numeric[]",
        &[
            "ARRAY[1.50, NULL, 'NaN', 'Infinity', -0.001, 1e30]::numeric[]",
            "'{{1.0,2.00},{3,4e-5}}'",
        ],
    );
    pg.arrays("float8[]", &["ARRAY[0.1, 'NaN', '-Infinity', 1e300, -0.0]"]);
    pg.arrays("float4[]", &["ARRAY[1.1, 1e6, NULL]::float4[]"]);
    pg.arrays("bool[]", &["'{t,f,NULL}'"]);
    pg.arrays("int8[]", &["ARRAY[9223372036854775807, -1]"]);
    pg.arrays("int2[]", &["'{-32768,32767}'"]);
    pg.arrays(
        "json[]",
        &["ARRAY['{\"a\": 1}', '[1, 2]', 'null', NULL]::json[]"],
    );
    pg.arrays("jsonb[]", &["ARRAY['{\"b\":1,\"a\":2}', '\"x\"']::jsonb[]"]);
    pg.arrays(
        "timestamptz[]",
        &["ARRAY['2024-01-02 03:04:05+00', 'infinity', NULL]::timestamptz[]"],
    );
    pg.arrays("date[]", &["'{2024-01-01,0044-03-15 BC}'"]);
    pg.arrays(
        "interval[]",
        &["ARRAY['1 day', '-1 mon 02:00']::interval[]"],
    );
    pg.arrays("uuid[]", &["ARRAY[md5('y')::uuid, NULL]"]);
    pg.arrays("inet[]", &["'{10.0.0.1/8,::1}'"]);
    pg.arrays("box[]", &["ARRAY['(1,2),(3,4)', '(0,0),(1,1)']::box[]"]);
    pg.arrays("point[]", &["ARRAY['(1,2)', '(3.5,4)']::point[]"]);
    pg.arrays("mood[]", &["'{sad,\"very happy\"}'"]);
    pg.arrays("posint[]", &["'{1,2,NULL}'"]);
    pg.arrays("int4range[]", &["ARRAY['[1,5)', 'empty']::int4range[]"]);
    pg.arrays(
        "pair[]",
        &["ARRAY[row(1, 'a b', 'ok', '{1}')::pair, NULL, row(NULL, '', 'sad', NULL)::pair]"],
    );
    pg.arrays("varchar[]", &["ARRAY['a', 'b c']::varchar[]"]);
    pg.arrays("char(3)[]", &["ARRAY['a', 'b c']::char(3)[]"]);
    pg.arrays("\"char\"[]", &["ARRAY['a', '\"']::\"char\"[]"]);
    pg.arrays("bytea[]", &["ARRAY['\\x00ff'::bytea, NULL, '']"]);
    pg.arrays("tsvector[]", &["ARRAY['a:1 b'::tsvector]"]);
    pg.arrays("hstore[]", &["ARRAY['a=>1'::hstore, 'b=>NULL']"]);
    pg.arrays("xml[]", &["ARRAY['<a/>'::xml]"]);
    pg.arrays("record[]", &["ARRAY[row(1, 'x'), row(2, NULL)]"]);
    // anyarray columns (pg_stats) carry their element type in the value.
    let table = unique_name("stats");
    pg.rt
        .block_on(pg.client.batch_execute(&format!(
            "CREATE TABLE {table} AS SELECT (g % 3)::numeric * 1.5 AS n, \
             (ARRAY['x y', NULL])[1 + g % 2] AS t FROM generate_series(1, 100) g; ANALYZE {table}"
        )))
        .unwrap();
    let stats = pg.compare(&format!(
        "SELECT most_common_vals, histogram_bounds FROM pg_stats \
         WHERE tablename = '{table}' ORDER BY attname"
    ));
    assert_eq!(stats.len(), 2);
    assert!(
        matches!(&stats[0][0], PgValue::Array(v) if v.len() == 3),
        "{stats:?}"
    );
    // Arrays come back as nested arrays of individually converted elements.
    let rows = pg.query(
        "SELECT '{{1.50,NULL},{\"NaN\",2}}'::numeric[], ARRAY[1, NULL]::int[], '{}'::int[]",
        &[],
    );
    let t = |s: &str| PgValue::Text(s.into());
    assert_eq!(
        row_values(&rows[0]).unwrap(),
        vec![
            PgValue::Array(vec![
                PgValue::Array(vec![t("1.50"), PgValue::Null]),
                PgValue::Array(vec![t("NaN"), t("2")]),
            ]),
            PgValue::Array(vec![PgValue::Int(1), PgValue::Null]),
            PgValue::Array(vec![]),
        ]
    );
}

/// Array element strings that exercise quoting: specials, spaces, unicode.
fn array_text_elem() -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(
        0.85,
        prop_oneof![
            "[a-z{}\",\\\\ ;()\\[\\]=\t]{0,8}",
            Just("NULL".to_string()),
            Just("null".to_string()),
            any::<String>().prop_map(|s| s.replace('\0', "")),
        ],
    )
}

#[test]
fn arrays_match_postgresql_for_random_values() {
    let pg = Pg::connect();
    let t0 = Instant::now();
    let arrays_sql = |ty: &str| {
        format!(
            "SELECT $1::{ty}, $1::{ty}::text, array_dims($1::{ty}), \
             ARRAY(SELECT unnest($1::{ty})::text)"
        )
    };
    let int8_sql = arrays_sql("int8[]");
    property(
        CASES,
        proptest::collection::vec(proptest::option::of(any::<i64>()), 0..20),
        |v| {
            let rows = pg.query(&int8_sql, &[&v]);
            pg.check_array_row(&rows[0], &int8_sql);
            let want: Vec<PgValue> = v
                .iter()
                .map(|e| e.map_or(PgValue::Null, PgValue::Int))
                .collect();
            assert_eq!(row_values(&rows[0]).unwrap()[0], PgValue::Array(want));
        },
    );
    let text_sql = arrays_sql("text[]");
    property(
        CASES,
        proptest::collection::vec(array_text_elem(), 0..12),
        |v| {
            let rows = pg.query(&text_sql, &[&v]);
            pg.check_array_row(&rows[0], &text_sql);
            let want: Vec<PgValue> = v
                .iter()
                .map(|e| e.clone().map_or(PgValue::Null, PgValue::Text))
                .collect();
            assert_eq!(row_values(&rows[0]).unwrap()[0], PgValue::Array(want));
        },
    );
    // Two-dimensional numeric arrays, sent as literals.
    let numeric_sql = arrays_sql("numeric[]").replace("$1", "$1::text");
    let matrix = (1usize..4, 1usize..4).prop_flat_map(|(r, c)| {
        proptest::collection::vec(
            proptest::collection::vec(proptest::option::of(numeric_literal()), c..=c),
            r..=r,
        )
    });
    property(CASES, matrix, |m| {
        let literal = format!(
            "{{{}}}",
            m.iter()
                .map(|row| format!(
                    "{{{}}}",
                    row.iter()
                        .map(|e| e.clone().unwrap_or_else(|| "NULL".into()))
                        .collect::<Vec<_>>()
                        .join(",")
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let rows = pg.query(&numeric_sql, &[&literal]);
        pg.check_array_row(&rows[0], &numeric_sql);
    });
    eprintln!("arrays: {} cases in {:?}", 3 * CASES, t0.elapsed());
}

#[test]
fn types_without_a_text_form_are_errors_naming_the_column() {
    let pg = Pg::connect();
    for (sql, what) in [
        ("SELECT 1.5::money AS m", "money"),
        ("SELECT 'pg_class'::regclass AS m", "regclass"),
        ("SELECT 'a & b'::tsquery AS m", "tsquery"),
        ("SELECT '{[1,2]}'::floatmultirange AS m", "floatmultirange"),
    ] {
        let rows = pg.query(sql, &[]);
        let err = row_values(&rows[0]).unwrap_err();
        assert!(
            err.message().starts_with("column \"m\": ")
                && err.message().contains(what)
                && err.message().contains("cast it to text"),
            "{err}"
        );
        // Cast as the message says, it works.
        let cast = sql.replace(" AS m", "::text AS m");
        let rows = pg.query(&cast, &[]);
        assert!(matches!(row_values(&rows[0]).unwrap()[0], PgValue::Text(_)));
    }
}

#[test]
fn rows_through_the_resp_and_json_writers() {
    let pg = Pg::connect();
    let rows = pg.query(
        "SELECT 1::int4 AS i, 2.5::float8 AS f, true AS b, NULL::text AS n, \
                '\\x00ff'::bytea AS raw, ARRAY[1, NULL]::int[] AS a, \
                '{\"k\": [1, 2.50]}'::jsonb AS j, 1.50::numeric AS num, \
                '2024-01-02 03:04:05.123456+00'::timestamptz AS ts, 'NaN'::float8 AS nan \
         UNION ALL \
         SELECT 2, 0.1, false, 'é', '', '{}', 'null', 'NaN', 'infinity', '-Infinity'",
        &[],
    );
    let columns = column_names(rows[0].columns());
    let values: Vec<Vec<PgValue>> = rows.iter().map(|r| row_values(r).unwrap()).collect();

    let mut resp2 = Reply::new(false);
    write_resp(&mut resp2, &columns, &values);
    let want2: &[u8] = b"*3\r\n*10\r\n$1\r\ni\r\n$1\r\nf\r\n$1\r\nb\r\n$1\r\nn\r\n$3\r\nraw\r\n\
        $1\r\na\r\n$1\r\nj\r\n$3\r\nnum\r\n$2\r\nts\r\n$3\r\nnan\r\n\
        *10\r\n:1\r\n$3\r\n2.5\r\n:1\r\n$-1\r\n$2\r\n\x00\xff\r\n*2\r\n:1\r\n$-1\r\n\
        $16\r\n{\"k\": [1, 2.50]}\r\n$4\r\n1.50\r\n$29\r\n2024-01-02 03:04:05.123456+00\r\n\
        $3\r\nNaN\r\n\
        *10\r\n:2\r\n$3\r\n0.1\r\n:0\r\n$2\r\n\xc3\xa9\r\n$0\r\n\r\n*0\r\n$4\r\nnull\r\n\
        $3\r\nNaN\r\n$8\r\ninfinity\r\n$9\r\n-Infinity\r\n";
    assert_eq!(resp2.buf, want2, "{}", String::from_utf8_lossy(&resp2.buf));

    let mut resp3 = Reply::new(true);
    write_resp(&mut resp3, &columns, &values);
    let want3: &[u8] = b"*3\r\n*10\r\n$1\r\ni\r\n$1\r\nf\r\n$1\r\nb\r\n$1\r\nn\r\n$3\r\nraw\r\n\
        $1\r\na\r\n$1\r\nj\r\n$3\r\nnum\r\n$2\r\nts\r\n$3\r\nnan\r\n\
        *10\r\n:1\r\n,2.5\r\n#t\r\n_\r\n$2\r\n\x00\xff\r\n*2\r\n:1\r\n_\r\n\
        $16\r\n{\"k\": [1, 2.50]}\r\n$4\r\n1.50\r\n$29\r\n2024-01-02 03:04:05.123456+00\r\n\
        ,nan\r\n\
        *10\r\n:2\r\n,0.1\r\n#f\r\n$2\r\n\xc3\xa9\r\n$0\r\n\r\n*0\r\n$4\r\nnull\r\n\
        $3\r\nNaN\r\n$8\r\ninfinity\r\n,-inf\r\n";
    assert_eq!(resp3.buf, want3, "{}", String::from_utf8_lossy(&resp3.buf));

    let json = to_json(&columns, &values, "primary");
    assert_eq!(
        json,
        r#"{"columns":["i","f","b","n","raw","a","j","num","ts","nan"],"rows":[[1,2.5,true,null,"\\x00ff",[1,null],{"k": [1, 2.50]},"1.50","2024-01-02 03:04:05.123456+00","NaN"],[2,0.1,false,"é","\\x",[],null,"NaN","infinity","-Infinity"]],"source":"primary"}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["rows"][0][6]["k"][1], 2.5);
    assert_eq!(parsed["rows"][0][4], "\\x00ff");
}
