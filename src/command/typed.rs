//! Typed key access shared by the data-type families (hashes, sets, lists): read a key as
//! one kind of object (absent → None, another type → WRONGTYPE), or write it, creating an
//! empty object when absent. The store drops an object left empty, as Redis deletes a key
//! whose last element goes.

use super::error::{CmdError, WRONG_TYPE};
use super::Ctx;
use crate::cache::entry::{Entry, ValueRef};
use crate::cache::store::Slot;
use crate::cache::value::Typed;
use crate::server::reply::Reply;

/// Runs `f` on the object at `key` if it is a `T`, counting a keyspace hit or miss.
pub fn read<T: Typed, R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&T>, &mut Reply) -> R,
) -> Result<R, CmdError> {
    let out = &mut *ctx.out;
    ctx.app.store.read(ctx.session.db, key, ctx.now, |e| {
        match e.map(|e| e.value()) {
            None => Ok(f(None, out)),
            Some(ValueRef::Obj(o)) => T::of(o).map(|t| f(Some(t), out)).ok_or(WRONG_TYPE),
            Some(ValueRef::Str(_)) => Err(WRONG_TYPE),
        }
    })
}

/// The `T` in a slot, for commands that already hold one (None when absent).
pub fn in_slot<T: Typed>(slot: &Slot) -> Result<Option<&T>, CmdError> {
    match slot.get().map(|e| e.value()) {
        None => Ok(None),
        Some(ValueRef::Obj(o)) => T::of(o).map(Some).ok_or(WRONG_TYPE),
        Some(ValueRef::Str(_)) => Err(WRONG_TYPE),
    }
}

/// Runs `f` on the `T` in a slot, created empty when the key is absent.
pub fn write_slot<T: Typed, R>(
    slot: &mut Slot,
    key: &[u8],
    f: impl FnOnce(&mut T) -> Result<R, CmdError>,
) -> Result<R, CmdError> {
    in_slot::<T>(slot)?;
    if !slot.exists() {
        let mut t = T::default();
        let r = f(&mut t)?;
        slot.put(Entry::new_obj(key, Box::new(t.into_object()), None, 0));
        return Ok(r);
    }
    match slot.get_mut().and_then(|e| e.obj_mut()).and_then(T::of_mut) {
        Some(t) => f(t),
        None => Err(WRONG_TYPE),
    }
}

/// Runs `f` on the `T` at `key`, created empty when absent.
pub fn write<T: Typed, R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&mut T) -> Result<R, CmdError>,
) -> Result<R, CmdError> {
    ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        write_slot(slot, key, f)
    })
}

/// Runs `f` on the `T` at `key` only if it exists (None otherwise); never creates it.
pub fn update<T: Typed, R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&mut T) -> Result<R, CmdError>,
) -> Result<Option<R>, CmdError> {
    ctx.app.store.access(ctx.session.db, key, ctx.now, |slot| {
        if in_slot::<T>(slot)?.is_none() {
            return Ok(None);
        }
        write_slot(slot, key, f).map(Some)
    })
}
