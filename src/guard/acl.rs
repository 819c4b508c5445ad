//! ACL users (`[[users]]`): the rules in Redis's ACL syntax compiled once, at start, into a
//! per-command bitmap over the command table and a list of key patterns, so that the check
//! `guard::admit` runs before every command is a bit test plus one glob per key.
//!
//! What it understands: `+@cat` / `-@cat` (the table's ACL categories plus the ones Redis
//! derives from flags: `@read`, `@write`, `@admin`, `@dangerous`, `@fast`, `@slow`, `@pubsub`,
//! `@blocking`), `+cmd` / `-cmd` (with its subcommands), `+cmd|sub` / `-cmd|sub`,
//! `allcommands` / `+@all`, `nocommands` / `-@all`, and for keys `~pattern`, `allkeys` / `~*`
//! and `resetkeys`. Rules apply in order, as Redis applies them. It deliberately does not do
//! what static configuration has no use for: ACL SETUSER/DELUSER/LOAD/SAVE, selectors,
//! `%R~`/`%W~` key permissions, pub/sub channel rules (channels are unrestricted) or ACL LOG.
//!
//! Passwords are kept only as SHA-256 digests and compared digest to digest with
//! `constant_time_eq_32`: the time a comparison takes does not depend on where two passwords
//! first differ, nor on their lengths (the digests always have 32 bytes).

use crate::cache::glob::glob_match;
use crate::command::error::CmdError;
use crate::command::table::{
    Command, ADMIN, BLOCKING, FAST, NO_AUTH, PUBSUB, READONLY, REGISTRY, WRITE,
};
use crate::config::UserConfig;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The commands a `[[users]]` entry without `commands` may not run unless `admin = true`.
pub const ADMIN_ONLY: &[&str] = &[
    "db.failover",
    "db.track",
    "config|set",
    "flushall",
    "script|flush",
    "shutdown",
];

/// The SHA-256 digest of a password.
pub fn digest(password: &[u8]) -> [u8; 32] {
    let d = Sha256::digest(password);
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    out
}

/// Whether `given` is the password whose digest is `stored`: digests compared in constant time.
pub fn password_matches(given: &[u8], stored: &[u8; 32]) -> bool {
    constant_time_eq::constant_time_eq_32(&digest(given), stored)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A 64-digit hex SHA-256 digest.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(s[2 * i])? << 4) | nibble(s[2 * i + 1])?;
    }
    Some(out)
}

/// How a user proves who it is.
#[derive(Debug, Clone)]
enum Password {
    Sha256([u8; 32]),
    /// The default user's password is `server.requirepass`, read when AUTH runs (CONFIG SET
    /// may change it); while it is empty, any password (Redis's `nopass`).
    RequirePass,
}

#[derive(Debug, Clone)]
enum Keys {
    All,
    Patterns(Vec<Vec<u8>>),
}

/// One user, compiled.
#[derive(Debug)]
pub struct User {
    pub name: String,
    password: Password,
    /// Bypasses the QUERY limits, may run DDL through QUERY, and (without `commands`) the
    /// admin-only commands.
    pub admin: bool,
    /// May run DDL through QUERY: admins, and the built-in default user (who may run
    /// everything).
    pub ddl: bool,
    /// Indexed by the registry's command index.
    allowed: Vec<bool>,
    keys: Keys,
    /// The PostgreSQL role this user's QUERYs run under.
    pub db_role: Option<Arc<str>>,
    /// Only read QUERYs (they also run in a READ ONLY transaction).
    pub query_readonly: bool,
    /// The rules as ACL LIST shows them (after the password).
    rules: String,
}

/// A rule that cannot be compiled: the message, without the config key.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleError(pub String);

/// The ACL categories of a command: the table's plus those Redis derives from its flags.
pub fn categories(c: &Command) -> Vec<&'static str> {
    let mut cats: Vec<&'static str> = c.acl.to_vec();
    let mut add = |cat: &'static str| {
        if !cats.contains(&cat) {
            cats.push(cat);
        }
    };
    if c.flag(WRITE) {
        add("write");
    }
    if c.flag(READONLY) && !c.acl.contains(&"scripting") {
        add("read");
    }
    if c.flag(ADMIN) {
        add("admin");
        add("dangerous");
    }
    if c.flag(PUBSUB) {
        add("pubsub");
    }
    if c.flag(BLOCKING) {
        add("blocking");
    }
    if c.flag(FAST) {
        add("fast");
    } else if !c.acl.contains(&"fast") {
        add("slow");
    }
    // In Redis's order of the categories (COMMAND INFO lists them so).
    cats.sort_by_key(|cat| CATEGORY_ORDER.iter().position(|o| o == cat));
    cats
}

/// Redis's ACL categories, in the order of its table (acl.c).
const CATEGORY_ORDER: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Every category some command has, sorted (ACL CAT).
pub fn all_categories() -> Vec<&'static str> {
    let mut cats: Vec<&'static str> = REGISTRY.all.iter().flat_map(|c| categories(c)).collect();
    cats.sort_unstable();
    cats.dedup();
    cats
}

/// Applies command rules, in order, to `allowed`.
fn apply_command_rules(allowed: &mut [bool], rules: &str) -> Result<(), RuleError> {
    let reg = &*REGISTRY;
    for rule in rules.split_whitespace() {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "allcommands" | "+@all" => allowed.iter_mut().for_each(|a| *a = true),
            "nocommands" | "-@all" => allowed.iter_mut().for_each(|a| *a = false),
            _ => {
                let (on, what) = match lower.split_at(1) {
                    ("+", w) => (true, w),
                    ("-", w) => (false, w),
                    _ => {
                        return Err(RuleError(format!(
                            "Syntax error in ACL rule '{rule}' (commands start with + or -, keys belong in `keys`)"
                        )))
                    }
                };
                if let Some(cat) = what.strip_prefix('@') {
                    let mut found = false;
                    for (i, c) in reg.all.iter().enumerate() {
                        if categories(c).contains(&cat) {
                            allowed[i] = on;
                            found = true;
                        }
                    }
                    if !found {
                        return Err(RuleError(format!("Unknown command category '{cat}'")));
                    }
                } else if let Some((parent, sub)) = what.split_once('|') {
                    let i = reg
                        .lookup(parent.as_bytes())
                        .and_then(|p| reg.lookup_sub(p, sub.as_bytes()))
                        .ok_or_else(|| {
                            RuleError(format!("Unknown command or subcommand '{what}'"))
                        })?;
                    allowed[i] = on;
                } else {
                    let i = reg
                        .lookup(what.as_bytes())
                        .ok_or_else(|| RuleError(format!("Unknown command '{what}'")))?;
                    allowed[i] = on;
                    for j in reg.subcommands_of(i) {
                        allowed[j] = on;
                    }
                }
            }
        }
    }
    Ok(())
}

fn parse_keys(rules: &str) -> Result<Keys, RuleError> {
    let mut keys = Keys::Patterns(Vec::new());
    for rule in rules.split_whitespace() {
        if rule.eq_ignore_ascii_case("allkeys") || rule == "~*" {
            keys = Keys::All;
        } else if rule.eq_ignore_ascii_case("resetkeys") {
            keys = Keys::Patterns(Vec::new());
        } else if let Some(p) = rule.strip_prefix('~') {
            if p.is_empty() {
                return Err(RuleError("Empty key pattern '~'".into()));
            }
            if let Keys::Patterns(v) = &mut keys {
                v.push(p.as_bytes().to_vec());
            }
        } else {
            return Err(RuleError(format!(
                "Syntax error in key rule '{rule}' (use ~pattern, allkeys or resetkeys)"
            )));
        }
    }
    Ok(keys)
}

impl User {
    /// The user Redis starts with: every command, every key.
    fn default_user(password: Password) -> User {
        User {
            name: "default".into(),
            password,
            admin: false,
            ddl: true,
            allowed: vec![true; REGISTRY.all.len()],
            keys: Keys::All,
            db_role: None,
            query_readonly: false,
            rules: "~* &* +@all".into(),
        }
    }

    /// Compiles one `[[users]]` entry. Errors name the field (`commands`, `keys`, ...).
    pub fn compile(u: &UserConfig) -> Result<User, (&'static str, RuleError)> {
        let password = match (&u.password, &u.password_sha256) {
            (Some(p), None) => Password::Sha256(digest(p.as_bytes())),
            (None, Some(h)) => Password::Sha256(parse_sha256_hex(h).ok_or((
                "password_sha256",
                RuleError("must be 64 hex digits (a SHA-256 digest)".into()),
            ))?),
            (Some(_), Some(_)) => {
                return Err((
                    "password_sha256",
                    RuleError("set password or password_sha256, not both".into()),
                ))
            }
            (None, None) if u.name == "default" => Password::RequirePass,
            (None, None) => {
                return Err((
                    "password",
                    RuleError("set password or password_sha256".into()),
                ))
            }
        };
        let reg = &*REGISTRY;
        let mut allowed = vec![false; reg.all.len()];
        let commands_text = match &u.commands {
            Some(rules) => {
                apply_command_rules(&mut allowed, rules).map_err(|e| ("commands", e))?;
                let mut s = String::from("-@all");
                for r in rules.split_whitespace() {
                    s.push(' ');
                    s.push_str(&r.to_ascii_lowercase());
                }
                s
            }
            None => {
                allowed.iter_mut().for_each(|a| *a = true);
                let mut s = String::from("+@all");
                if !u.admin {
                    for name in ADMIN_ONLY {
                        if let Some(i) = reg.full_names.iter().position(|n| n == name) {
                            allowed[i] = false;
                        }
                        s.push_str(" -");
                        s.push_str(name);
                    }
                }
                s
            }
        };
        let keys = match &u.keys {
            Some(k) => parse_keys(k).map_err(|e| ("keys", e))?,
            None => Keys::All,
        };
        let keys_text = match &keys {
            Keys::All => "~*".to_string(),
            Keys::Patterns(v) if v.is_empty() => "resetkeys".to_string(),
            Keys::Patterns(v) => v
                .iter()
                .map(|p| format!("~{}", String::from_utf8_lossy(p)))
                .collect::<Vec<_>>()
                .join(" "),
        };
        if let Some(r) = &u.db_role {
            if r.is_empty() || r.contains('\0') {
                return Err((
                    "db_role",
                    RuleError("must be a non-empty PostgreSQL role name".into()),
                ));
            }
        }
        Ok(User {
            name: u.name.clone(),
            password,
            admin: u.admin,
            ddl: u.admin,
            allowed,
            keys,
            db_role: u.db_role.as_deref().map(Arc::from),
            query_readonly: u.query_readonly,
            rules: format!("{keys_text} &* {commands_text}"),
        })
    }

    /// May this user run the command at registry index `idx` with these arguments? The error
    /// is Redis's NOPERM line.
    pub fn check(&self, idx: usize, c: &Command, args: &[Bytes]) -> Result<(), CmdError> {
        if !self.allowed.get(idx).copied().unwrap_or(false) && !c.flag(NO_AUTH) {
            return Err(CmdError::msg(format!(
                "NOPERM User {} has no permissions to run the '{}' command",
                self.name, REGISTRY.full_names[idx]
            )));
        }
        if let Keys::Patterns(patterns) = &self.keys {
            let denied =
                key_args(c, args).any(|k| !patterns.iter().any(|p| glob_match(p, k, false)));
            if denied {
                return Err(CmdError::new("NOPERM No permissions to access a key"));
            }
        }
        Ok(())
    }

    /// Whether `pass` is this user's password (`requirepass`: the configured one, for the
    /// default user).
    pub fn password_ok(&self, pass: &[u8], requirepass: &str) -> bool {
        match &self.password {
            Password::Sha256(d) => password_matches(pass, d),
            Password::RequirePass if requirepass.is_empty() => true,
            Password::RequirePass => password_matches(pass, &digest(requirepass.as_bytes())),
        }
    }

    /// Whether a connection is authenticated as this user before any AUTH.
    pub fn needs_password(&self, requirepass: &str) -> bool {
        match &self.password {
            Password::Sha256(_) => true,
            Password::RequirePass => !requirepass.is_empty(),
        }
    }

    /// The user as ACL LIST prints it: never the password itself.
    pub fn describe(&self, requirepass: &str) -> String {
        let pass = match &self.password {
            Password::Sha256(d) => format!("#{}", hex(d)),
            Password::RequirePass if !requirepass.is_empty() => {
                format!("#{}", hex(&digest(requirepass.as_bytes())))
            }
            Password::RequirePass => "nopass".into(),
        };
        format!("user {} on {pass} {}", self.name, self.rules)
    }
}

/// The key arguments of a command, as the table places them (`numkeys` ones included).
pub fn key_args<'a>(c: &Command, args: &'a [Bytes]) -> impl Iterator<Item = &'a [u8]> + 'a {
    c.key_indexes(args).map(move |i| &args[i][..])
}

/// Every user: the `[[users]]` entries plus the built-in `default` unless one of them is it.
#[derive(Debug)]
pub struct Acl {
    users: BTreeMap<String, Arc<User>>,
}

impl Acl {
    /// Compiles the `[[users]]` entries; an error names the key (`users[1].commands: ...`).
    pub fn compile(users: &[UserConfig]) -> Result<Acl, String> {
        let mut map = BTreeMap::new();
        for (i, u) in users.iter().enumerate() {
            if u.name.is_empty() || !u.name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "config key `users[{i}].name`: must be a non-empty word"
                ));
            }
            let user = User::compile(u)
                .map_err(|(k, e)| format!("config key `users[{i}].{k}`: {}", e.0))?;
            if map.insert(u.name.clone(), Arc::new(user)).is_some() {
                return Err(format!(
                    "config key `users[{i}].name`: names must be unique"
                ));
            }
        }
        map.entry("default".to_string())
            .or_insert_with(|| Arc::new(User::default_user(Password::RequirePass)));
        Ok(Acl { users: map })
    }

    /// Fails closed: a default user that may run nothing (never reached after validation).
    pub fn locked() -> Acl {
        let mut u = User::default_user(Password::Sha256([0; 32]));
        u.allowed.iter_mut().for_each(|a| *a = false);
        let mut users = BTreeMap::new();
        users.insert(u.name.clone(), Arc::new(u));
        Acl { users }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<User>> {
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.users.get(n))
    }

    pub fn default_user(&self) -> Arc<User> {
        match self.users.get("default") {
            Some(u) => u.clone(),
            None => Arc::new(User::default_user(Password::RequirePass)),
        }
    }

    /// The user for `name` when `pass` is its password (else Redis's WRONGPASS).
    pub fn authenticate(
        &self,
        name: &[u8],
        pass: &[u8],
        requirepass: &str,
    ) -> Result<Arc<User>, CmdError> {
        // A missing user costs the same digest and comparison as a wrong password.
        let user = self.get(name);
        let ok = match user {
            Some(u) => u.password_ok(pass, requirepass),
            None => {
                let _ = password_matches(pass, &[0; 32]);
                false
            }
        };
        match user {
            Some(u) if ok => Ok(u.clone()),
            _ => Err(WRONGPASS),
        }
    }

    pub fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.values()
    }
}

pub const WRONGPASS: CmdError =
    CmdError::new("WRONGPASS invalid username-password pair or user is disabled.");

#[cfg(test)]
mod tests {
    use super::*;

    fn user(commands: Option<&str>, keys: Option<&str>, admin: bool) -> User {
        User::compile(&UserConfig {
            name: "alice".into(),
            password: Some("pw".into()),
            commands: commands.map(str::to_string),
            keys: keys.map(str::to_string),
            admin,
            ..Default::default()
        })
        .expect("compiles")
    }

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn check(u: &User, words: &[&str]) -> Result<(), String> {
        let a = args(words);
        let idx = crate::command::resolve(&a).map_err(|e| e.as_str().to_string())?;
        u.check(idx, REGISTRY.all[idx], &a)
            .map_err(|e| e.as_str().to_string())
    }

    #[test]
    fn password_compare_is_digest_to_digest() {
        let stored = digest(b"s3cret");
        assert!(password_matches(b"s3cret", &stored));
        assert!(!password_matches(b"s3cret ", &stored));
        assert!(!password_matches(b"", &stored));
        assert!(!password_matches(b"S3cret", &stored));
        // Whatever the input's length, the compared values are two 32-byte digests.
        assert_eq!(digest(&[b'x'; 10_000]).len(), 32);
        let hexed = hex(&stored);
        assert_eq!(parse_sha256_hex(&hexed), Some(stored));
        assert_eq!(parse_sha256_hex(&hexed.to_uppercase()), Some(stored));
        assert_eq!(parse_sha256_hex("abc"), None);
        assert_eq!(parse_sha256_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn read_only_rules_refuse_writes_with_redis_text() {
        let u = user(Some("+@read -@dangerous +query"), None, false);
        assert_eq!(check(&u, &["get", "k"]), Ok(()));
        assert_eq!(check(&u, &["query", "select 1"]), Ok(()));
        assert_eq!(
            check(&u, &["set", "k", "v"]),
            Err("NOPERM User alice has no permissions to run the 'set' command".into())
        );
        assert_eq!(
            check(&u, &["keys", "*"]),
            Err("NOPERM User alice has no permissions to run the 'keys' command".into())
        );
        // NO_AUTH commands are always allowed, as in Redis.
        assert_eq!(check(&u, &["auth", "a", "b"]), Ok(()));
    }

    #[test]
    fn subcommand_rules_and_default_admin_only() {
        let u = user(None, None, false);
        assert_eq!(check(&u, &["get", "k"]), Ok(()));
        assert_eq!(check(&u, &["config", "get", "maxmemory"]), Ok(()));
        assert_eq!(
            check(&u, &["config", "set", "maxmemory", "1"]),
            Err("NOPERM User alice has no permissions to run the 'config|set' command".into())
        );
        assert!(check(&u, &["flushall"]).is_err());
        assert!(check(&u, &["script", "flush"]).is_err());
        assert!(check(&u, &["db.track", "t"]).is_err());
        let admin = user(None, None, true);
        assert_eq!(check(&admin, &["flushall"]), Ok(()));
        let v = user(Some("+@all -config +config|get"), None, false);
        assert_eq!(check(&v, &["config", "get", "x"]), Ok(()));
        assert!(check(&v, &["config", "set", "x", "y"]).is_err());
    }

    #[test]
    fn key_patterns() {
        let u = user(Some("allcommands"), Some("~cache:* ~session:*"), false);
        assert_eq!(check(&u, &["get", "cache:1"]), Ok(()));
        assert_eq!(
            check(&u, &["mset", "cache:1", "a", "session:x", "b"]),
            Ok(())
        );
        let denied = Err("NOPERM No permissions to access a key".to_string());
        assert_eq!(check(&u, &["get", "other"]), denied);
        assert_eq!(check(&u, &["mset", "cache:1", "a", "other", "b"]), denied);
        assert_eq!(
            check(&u, &["eval", "return 1", "2", "cache:a", "nope"]),
            denied
        );
        assert_eq!(
            check(&u, &["eval", "return 1", "1", "cache:a", "nope"]),
            Ok(())
        );
        assert_eq!(check(&u, &["ping"]), Ok(()));
    }

    #[test]
    fn bad_rules_are_refused_with_the_field() {
        let bad = |c: Option<&str>, k: Option<&str>| {
            User::compile(&UserConfig {
                name: "bob".into(),
                password: Some("x".into()),
                commands: c.map(str::to_string),
                keys: k.map(str::to_string),
                ..Default::default()
            })
            .err()
            .map(|e| e.0)
        };
        assert_eq!(bad(Some("+@nosuch"), None), Some("commands"));
        assert_eq!(bad(Some("+nosuchcmd"), None), Some("commands"));
        assert_eq!(bad(Some("get"), None), Some("commands"));
        assert_eq!(bad(None, Some("cache:*")), Some("keys"));
        assert_eq!(bad(None, None), None);
        let e = Acl::compile(&[UserConfig {
            name: "bob".into(),
            ..Default::default()
        }])
        .err();
        assert_eq!(
            e.as_deref(),
            Some("config key `users[0].password`: set password or password_sha256")
        );
    }

    #[test]
    fn default_user_and_list() {
        let acl = Acl::compile(&[]).expect("compiles");
        let d = acl.default_user();
        assert!(!d.needs_password(""));
        assert!(d.needs_password("pw"));
        assert!(acl.authenticate(b"default", b"pw", "pw").is_ok());
        assert!(acl.authenticate(b"default", b"no", "pw").is_err());
        assert!(acl.authenticate(b"ghost", b"pw", "pw").is_err());
        assert_eq!(d.describe(""), "user default on nopass ~* &* +@all");
        let u = user(Some("+@read"), Some("~cache:*"), false);
        assert_eq!(
            u.describe(""),
            format!(
                "user alice on #{} ~cache:* &* -@all +@read",
                hex(&digest(b"pw"))
            )
        );
    }
}
