//! What a sandbox may use: [`Limits`] and the two mechanisms behind the ones the host
//! enforces while guest code runs: the epoch ticker (the timeout's clock) and the memory
//! limiter of a store.

use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch ticker advances; the timeout's resolution.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// How many timers of one sandbox may be pending at once. The runtime's event loop keeps one
/// (its next deadline); only code that reaches the runtime's plumbing makes more, and a timer
/// beyond these answers at once (an event loop woken early looks again), so such code cannot
/// grow the host's memory with sleeping timers.
pub const MAX_PENDING_TIMERS: usize = 64;

/// How many synchronous callbacks of one sandbox run at once (others wait their turn): a
/// sandbox whose calls hang cannot take the blocking threads other sandboxes need.
pub const SYNC_CALLBACKS_PER_SANDBOX: usize = 16;

/// Resource limits for one sandbox.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time one `execute` may take.
    pub timeout: Duration,
    /// The most linear memory the guest may hold, in bytes.
    pub memory_bytes: usize,
    /// Fuel per `execute` (instructions, roughly), when set.
    pub fuel: Option<u64>,
    /// The most bytes of stdout, and of stderr, one `execute` keeps (counted by the host at
    /// the guest's WASI streams, where user code cannot reach: the rest is cut at a character
    /// boundary with a mark, and the output says it was truncated).
    pub max_output_bytes: u64,
    /// The most callback invocations one `execute` may make.
    pub max_callbacks: u32,
    /// How long one callback may take before the guest gets an error instead.
    pub callback_timeout: Duration,
    /// The most bytes of JSON arguments one callback call may carry. Checked before they are
    /// parsed: parsed, JSON takes tens of times its size in the host's memory.
    pub max_callback_argument_bytes: usize,
    /// The most bytes of arguments the callback calls pending at once may carry together.
    pub max_pending_callback_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 256 << 20,
            fuel: None,
            max_output_bytes: 1 << 20,
            max_callbacks: 1000,
            callback_timeout: Duration::from_secs(10),
            max_callback_argument_bytes: 256 << 10,
            max_pending_callback_bytes: 1 << 20,
        }
    }
}

/// Advances `engine`'s epoch every [`TICK`] (the timeouts' clock) until the engine, held
/// weakly, is gone.
pub(crate) fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::spawn(move || loop {
        std::thread::sleep(TICK);
        match weak.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => break,
        }
    });
}

/// The memory limit of one store. A growth past it is refused (`memory.grow` answers -1, so
/// the guest's allocator fails and Python raises `MemoryError`) and remembered for the call:
/// when the guest then traps anyway (an allocation it cannot survive), the trap is the memory
/// limit. A sandbox forgets the refusal when its next call starts.
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    pub(crate) refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: usize) -> MemoryLimiter {
        MemoryLimiter { max_bytes, refused: false }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|maximum| desired <= maximum))
    }
}
