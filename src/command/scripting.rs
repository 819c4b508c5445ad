//! EVAL/EVALSHA/SCRIPT: Lua 5.1 scripts (placeholder until the scripting engine lands).

use super::error::{CmdError, CmdResult};
use super::table::{cmd, Command, NOSCRIPT};
use super::Ctx;
use bytes::Bytes;

#[derive(Default)]
pub struct Scripts {}

const NOT_YET: CmdError = CmdError::new("ERR scripting is not available");

pub static SCRIPT: &[Command] = &[cmd(
    "flush",
    -2,
    NOSCRIPT,
    (0, 0, 0),
    &["scripting"],
    "scripting",
    "Removes all server-side Lua scripts from the script cache.",
    script_flush,
)];

pub fn eval(_ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    Err(NOT_YET)
}
pub fn evalsha(_ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    Err(NOT_YET)
}
pub fn eval_ro(_ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    Err(NOT_YET)
}
pub fn evalsha_ro(_ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    Err(NOT_YET)
}
fn script_flush(_ctx: &mut Ctx<'_>, _args: &[Bytes]) -> CmdResult {
    Err(NOT_YET)
}
