//! The CPython backend of the eryx guest.
//!
//! The wit-dylib ABI layer (`eryx-guest-abi`) calls [`CPython`] for each export. This crate
//! starts the interpreter on first use, runs `eryx_runtime.py` (the Python half, included at
//! compile time) in a module of its own, gives that module four host functions, and
//! converts between Rust and Python values. All Python objects are held through [`Owned`],
//! which releases its reference exactly once.

mod python;

use eryx_guest_abi::{Backend, ExecuteOptions, StateSnapshot};
use python::{HelperModule, Owned};

eryx_guest_abi::export_backend!(CPython::start);

/// The CPython interpreter with the runtime helper loaded.
pub struct CPython {
    helper: HelperModule,
}

impl CPython {
    fn start() -> Self {
        let helper = python::initialize().unwrap_or_else(|error| {
            // Without an interpreter no export can do anything; trap with the reason.
            panic!("starting CPython failed: {error}")
        });
        CPython { helper }
    }
}

impl Backend for CPython {
    fn execute(&mut self, code: &str, options: &ExecuteOptions) -> Result<(), String> {
        let arguments = [Owned::string(code)?, Owned::boolean(options.trace)];
        let error = self.helper.call("execute", &arguments)?;
        if error.is_none() {
            Ok(())
        } else {
            Err(error.to_string()?)
        }
    }

    fn snapshot_state(&mut self) -> Result<StateSnapshot, String> {
        let result = self.helper.call("snapshot", &[])?;
        let error = result.item(2)?;
        if !error.is_none() {
            return Err(error.to_string()?);
        }
        Ok(StateSnapshot { data: result.item(0)?.to_bytes()?, skipped: result.item(1)?.strings()? })
    }

    fn restore_state(&mut self, data: &[u8]) -> Result<Vec<String>, String> {
        let result = self.helper.call("restore", &[Owned::bytes(data)?])?;
        let error = result.item(1)?;
        if !error.is_none() {
            return Err(error.to_string()?);
        }
        result.item(0)?.strings()
    }

    fn clear_state(&mut self) -> Result<(), String> {
        let error = self.helper.call("clear", &[])?;
        if error.is_none() {
            Ok(())
        } else {
            Err(error.to_string()?)
        }
    }
}
