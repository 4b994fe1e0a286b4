//! The guest's own stderr, as the host keeps it: the last bytes written to it (the output
//! capture, `output.rs`, writes them here too), cleared before each call. A guest panic writes
//! its reason there just before it traps, so the reason survives whatever user code wrote to
//! file descriptor 2 before it (a buffer that kept the first bytes would fill with the user's
//! and lose the reason).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub(crate) struct TailPipe {
    capacity: usize,
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl TailPipe {
    pub(crate) fn new(capacity: usize) -> TailPipe {
        TailPipe { capacity, buffer: Arc::new(Mutex::new(VecDeque::new())) }
    }

    pub(crate) fn contents(&self) -> Vec<u8> {
        self.lock().iter().copied().collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u8>> {
        // A poisoned lock still holds bytes worth showing.
        self.buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn append(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        let bytes = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let overflow = (buffer.len() + bytes.len()).saturating_sub(self.capacity);
        buffer.drain(..overflow);
        buffer.extend(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_bytes_are_kept() {
        let pipe = TailPipe::new(8);
        pipe.append(b"user noise that is long");
        pipe.append(b"panic!");
        assert_eq!(pipe.contents(), b"ngpanic!");
        pipe.append(b"0123456789abc");
        assert_eq!(pipe.contents(), b"56789abc", "one write longer than the buffer keeps its end");
        pipe.clear();
        assert!(pipe.contents().is_empty());
    }
}
