//! What the calls into a sandbox answer: the output of an `execute`, a state snapshot, and
//! why a call failed.

use std::time::Duration;

/// What one `execute` wrote to its stdout and stderr, as the host captured it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// The text of stdout: its bytes as UTF-8, with what is not UTF-8 escaped (see
    /// [`output::text_view`](crate::output::text_view)), and the mark of the cut
    /// ([`output::cut_mark`](crate::output::cut_mark)) when it was cut.
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout or stderr was cut at [`Limits::max_output_bytes`](crate::Limits::max_output_bytes).
    pub truncated: bool,
    /// The bytes stdout kept, exactly as written (at most the limit; no mark).
    pub stdout_bytes: Vec<u8>,
    pub stderr_bytes: Vec<u8>,
    /// How many characters were written beyond the limit (0 exactly when the stream was not cut).
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
}

/// The user state of a sandbox, as `snapshot-state` serialised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSnapshot {
    pub data: Vec<u8>,
    /// The globals left out: values that cannot be serialised, or that refer to code
    /// defined in the sandbox.
    pub skipped: Vec<String>,
}

/// Why an `execute` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// The Python code raised: the guest's traceback, and what the code printed before.
    Python { traceback: String, output: Output },
    /// The wall-clock timeout was hit.
    Timeout(Duration),
    /// The memory limit was hit.
    MemoryLimit(usize),
    /// The fuel ran out.
    FuelExhausted(u64),
    /// The guest trapped for another reason; the sandbox cannot be used again.
    Trap(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every failure but Python's own ends the instance: say so.
        const RECREATE: &str = "the sandbox must be recreated";
        match self {
            ExecError::Python { traceback, .. } => write!(formatter, "{traceback}"),
            ExecError::Timeout(limit) => {
                write!(formatter, "execution timed out: the timeout limit of {} ms was hit; {RECREATE}", limit.as_millis())
            }
            ExecError::MemoryLimit(limit) => {
                write!(formatter, "the memory limit of {} MiB was hit; {RECREATE}", limit >> 20)
            }
            ExecError::FuelExhausted(fuel) => write!(formatter, "the fuel limit of {fuel} was hit; {RECREATE}"),
            ExecError::Trap(text) => write!(formatter, "the sandbox trapped ({RECREATE}): {text}"),
        }
    }
}

impl std::error::Error for ExecError {}

impl ExecError {
    /// A Python failure that printed nothing (the state exports).
    pub fn python(traceback: String) -> ExecError {
        ExecError::Python { traceback, output: Output::default() }
    }

    /// What the failed code printed before it failed (empty for other failures).
    pub fn partial_output(&self) -> Option<&Output> {
        match self {
            ExecError::Python { output, .. } => Some(output),
            _ => None,
        }
    }
}
