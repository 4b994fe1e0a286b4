//! The trace events a sandbox keeps for the host, bounded whatever the guest reports.

use crate::TraceEvent;

/// The trace events a sandbox keeps for the host: bounded in count and bytes whatever the
/// guest reports (guest code can call the import directly); what does not fit is counted.
#[derive(Default)]
pub(crate) struct TraceBuffer {
    pub(crate) events: Vec<TraceEvent>,
    bytes: usize,
    pub(crate) dropped: u64,
}

/// At most this many trace events per sandbox, holding at most [`MAX_TRACE_BYTES`].
pub const MAX_TRACE_EVENTS: usize = 10_000;
pub const MAX_TRACE_BYTES: usize = 1 << 20;

impl TraceBuffer {
    pub(crate) fn push(&mut self, event: TraceEvent) {
        let size = event.event_json.len() + event.context_json.len();
        if self.events.len() >= MAX_TRACE_EVENTS || self.bytes + size > MAX_TRACE_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += size;
        self.events.push(event);
    }

    /// An event the host itself reports (no source line).
    pub(crate) fn push_host(&mut self, event: serde_json::Value) {
        self.push(TraceEvent { lineno: 0, event_json: event.to_string(), context_json: "{}".into() });
    }
}
