//! The command layer's error type. Its text is exactly what goes on the wire after `-`, error
//! code included (`ERR`, `WRONGTYPE`, `NOAUTH`, ...): clients parse these strings, so every
//! Redis error a command can produce is spelled here once, as Redis spells it.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError(pub Cow<'static, str>);

pub type CmdResult = Result<(), CmdError>;

impl CmdError {
    pub const fn new(s: &'static str) -> CmdError {
        CmdError(Cow::Borrowed(s))
    }

    pub fn msg(s: String) -> CmdError {
        CmdError(Cow::Owned(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub const SYNTAX: CmdError = CmdError::new("ERR syntax error");
pub const WRONG_TYPE: CmdError =
    CmdError::new("WRONGTYPE Operation against a key holding the wrong kind of value");
pub const NOT_INTEGER: CmdError = CmdError::new("ERR value is not an integer or out of range");
pub const NOT_FLOAT: CmdError = CmdError::new("ERR value is not a valid float");
pub const OVERFLOW: CmdError = CmdError::new("ERR increment or decrement would overflow");
pub const NO_SUCH_KEY: CmdError = CmdError::new("ERR no such key");
pub const DB_INDEX: CmdError = CmdError::new("ERR DB index is out of range");
pub const OOM: CmdError = CmdError::new("OOM command not allowed when used memory > 'maxmemory'.");
pub const NOAUTH: CmdError = CmdError::new("NOAUTH Authentication required.");
pub const NAN_OR_INF: CmdError = CmdError::new("ERR increment would produce NaN or Infinity");
pub const TOO_BIG: CmdError =
    CmdError::new("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
pub const OFFSET_RANGE: CmdError = CmdError::new("ERR offset is out of range");
pub const HASH_NOT_INT: CmdError = CmdError::new("ERR hash value is not an integer");
pub const HASH_NOT_FLOAT: CmdError = CmdError::new("ERR hash value is not a float");
pub const SCRIPT_DENIED: CmdError =
    CmdError::new("ERR This Redis command is not allowed from script");

pub fn arity(name: &str) -> CmdError {
    CmdError::msg(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub fn invalid_expire(cmd: &str) -> CmdError {
    CmdError::msg(format!("ERR invalid expire time in '{cmd}' command"))
}
