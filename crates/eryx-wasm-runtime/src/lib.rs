//! The CPython backend of the eryx guest.
//!
//! The wit-dylib ABI layer (`eryx-guest-abi`) calls [`CPython`] for each export. This crate
//! starts the interpreter on first use, runs `eryx_runtime.py` (the Python half, included at
//! compile time) in a module of its own, gives that module three host functions, and
//! converts between Rust and Python values. All Python objects are held through [`Owned`],
//! which releases its reference exactly once.

mod python;

use eryx_guest_abi::{Backend, ExecuteError, ExecuteOutput};
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
    fn execute(&mut self, code: &str) -> Result<ExecuteOutput, ExecuteError> {
        let result = self.helper.call("execute", &[Owned::string(code)?])?;
        let stdout = result.item(0)?.to_string()?;
        let stderr = result.item(1)?.to_string()?;
        let error = result.item(2)?;
        if error.is_none() {
            Ok(ExecuteOutput { stdout, stderr })
        } else {
            Err(ExecuteError { stdout, stderr, traceback: error.to_string()? })
        }
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, String> {
        let result = self.helper.call("snapshot", &[])?;
        let error = result.item(1)?;
        if !error.is_none() {
            return Err(error.to_string()?);
        }
        result.item(0)?.to_bytes()
    }

    fn restore_state(&mut self, data: &[u8]) -> Result<(), String> {
        let error = self.helper.call("restore", &[Owned::bytes(data)?])?;
        if error.is_none() {
            Ok(())
        } else {
            Err(error.to_string()?)
        }
    }

    fn clear_state(&mut self) {
        // `clear` reports nothing; an unexpected Python failure here is a runtime bug,
        // and losing the sandbox to a trap is better than silently keeping stale state.
        if let Err(error) = self.helper.call("clear", &[]) {
            panic!("clear-state failed: {error}");
        }
    }
}
