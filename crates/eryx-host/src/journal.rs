//! The callback journal: a sandbox records every callback call (name, arguments, result or
//! error, duration), and a sandbox given a journal replays it: each call is answered from the
//! journal, in the order the calls were started, without calling the host, and the answers
//! reach the guest in the order they did when recorded (each entry's `finished`), so code
//! that races callbacks (`asyncio.wait(..., FIRST_COMPLETED)`) takes the recorded path. A call
//! that is not the journal's next one is refused with the first difference.
//!
//! A journal keeps arguments and results as the JSON text they travelled as (parsed, JSON
//! takes tens of times its size), and at most [`MAX_JOURNAL_BYTES`] of it: a recording that
//! would hold more stops there and says so (`truncated`), and such a journal cannot be
//! replayed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The format number of journal files this host writes. It reads format 1 too (no order of
/// answers: a replay of one answers each call as soon as it is made).
pub const JOURNAL_FORMAT: u32 = 2;
/// The most bytes of arguments and results one journal records (as stored, with what each
/// entry costs besides).
pub const MAX_JOURNAL_BYTES: usize = 16 << 20;
/// What one entry costs besides its text (its structure, as kept and as written).
const ENTRY_OVERHEAD: usize = 256;

/// One callback call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub name: String,
    /// The keyword arguments, as sent (a JSON object, as text).
    pub arguments: Box<RawValue>,
    /// The callback's JSON result, when it answered one (`null` included: a present `null`
    /// is the result `None` in Python, an absent key a call that did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub result: Option<Box<RawValue>>,
    /// The callback's error text, when it failed. Neither is set for a call that was
    /// cancelled before it answered: replayed, it never answers either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
    /// Where this call's answer came among all answers of the recording (from 0); absent for
    /// a call that never answered, and in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<u64>,
}

/// The calls of a sandbox, in the order they were started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    pub calls: Vec<JournalEntry>,
    /// Set when the recording stopped at [`MAX_JOURNAL_BYTES`]: later calls are not in it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The bytes of arguments and results recorded.
    #[serde(skip)]
    bytes: usize,
    /// How many calls answered so far (the next `finished`).
    #[serde(skip)]
    answered: u64,
}

impl Default for Journal {
    fn default() -> Self {
        Journal { format: JOURNAL_FORMAT, calls: Vec::new(), truncated: false, bytes: 0, answered: 0 }
    }
}

impl PartialEq for JournalEntry {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.arguments.get() == other.arguments.get()
            && self.result.as_ref().map(|result| result.get()) == other.result.as_ref().map(|result| result.get())
            && self.error == other.error
            && self.duration_ms == other.duration_ms
            && self.finished == other.finished
    }
}

impl PartialEq for Journal {
    fn eq(&self, other: &Self) -> bool {
        self.format == other.format && self.calls == other.calls && self.truncated == other.truncated
    }
}

impl Journal {
    pub fn load(path: &Path) -> Result<Journal> {
        // A journal this host writes holds at most MAX_JOURNAL_BYTES of JSON text and some
        // structure around it; a larger file is refused before it is read.
        let size = std::fs::metadata(path).with_context(|| format!("read the callback journal {}", path.display()))?.len();
        if size > 2 * MAX_JOURNAL_BYTES as u64 {
            bail!("{} holds {size} bytes, more than a callback journal can ({} MiB); refusing it", path.display(), 2 * MAX_JOURNAL_BYTES >> 20);
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("read the callback journal {}", path.display()))?;
        let journal: Journal = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a callback journal (JSON with `format` and `calls`)", path.display()))?;
        if !(1..=JOURNAL_FORMAT).contains(&journal.format) {
            bail!("{} is a journal of format {}; this host reads formats 1 to {JOURNAL_FORMAT}", path.display(), journal.format);
        }
        if journal.truncated {
            bail!(
                "{} was cut at {} MiB of recorded arguments and results, so it cannot answer the run's later calls; \
                 record a run with smaller callback traffic",
                path.display(),
                MAX_JOURNAL_BYTES >> 20
            );
        }
        Ok(journal)
    }

    /// Whether `bytes` more fit; when not, the journal is cut here.
    fn room(&mut self, bytes: usize) -> bool {
        if self.truncated || self.bytes + bytes > MAX_JOURNAL_BYTES {
            self.truncated = true;
            return false;
        }
        self.bytes += bytes;
        true
    }

    /// Records a call that starts now; answers its index for [`Journal::finish`] (`None` once
    /// the journal is full). Until then it has neither result nor error (a call cancelled
    /// before it answered stays so).
    pub(crate) fn start(&mut self, name: &str, arguments_json: &str) -> Option<usize> {
        // What is kept, as stored (text that is not JSON is stored escaped), and an entry's
        // own structure.
        let arguments = raw(arguments_json);
        if !self.room(ENTRY_OVERHEAD + name.len() + arguments.get().len()) {
            return None;
        }
        self.calls.push(JournalEntry {
            name: name.to_owned(),
            arguments,
            result: None,
            error: None,
            duration_ms: 0.0,
            finished: None,
        });
        Some(self.calls.len() - 1)
    }

    /// Records the answer of the call `index` (a result that no longer fits cuts the journal
    /// before this call).
    pub(crate) fn finish(&mut self, index: usize, answer: &Result<String, String>, duration_ms: f64) {
        let result = answer.as_ref().ok().map(|text| raw(text));
        let size = match (answer, &result) {
            (_, Some(result)) => result.get().len(),
            (Err(text), None) => text.len(),
            (Ok(_), None) => 0,
        };
        if !self.room(size) {
            self.calls.truncate(index);
            return;
        }
        let Some(entry) = self.calls.get_mut(index) else { return };
        entry.duration_ms = duration_ms;
        entry.finished = Some(self.answered);
        self.answered += 1;
        match (answer, result) {
            (_, Some(result)) => entry.result = Some(result),
            (Err(text), _) => entry.error = Some(text.clone()),
            (Ok(_), None) => {}
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a journal serialises");
        crate::write_atomic(path, format!("{text}\n").as_bytes())
    }
}

/// What a sandbox does with its callback calls.
#[derive(Default)]
pub(crate) enum Mode {
    #[default]
    Off,
    Record(Journal),
    Replay(Replay),
}

pub(crate) struct Replay {
    journal: Journal,
    next: usize,
    /// The first call that was not the journal's.
    pub(crate) divergence: Option<String>,
    /// Whose answer may be delivered now (shared with the calls waiting for their turn).
    turns: Arc<Turns>,
}

/// The order in which a replay delivers answers: the recorded one.
#[derive(Default)]
pub(crate) struct Turns {
    next: Mutex<u64>,
    changed: tokio::sync::Notify,
}

impl Turns {
    /// Waits until the answers recorded before `position` were delivered.
    pub(crate) async fn wait_for(&self, position: u64) {
        loop {
            let notified = self.changed.notified();
            if *self.next.lock().expect("the turn lock") >= position {
                return;
            }
            notified.await;
        }
    }

    /// The answer at `position` was delivered: the next may go.
    pub(crate) fn done(&self, position: u64) {
        let mut next = self.next.lock().expect("the turn lock");
        *next = (*next).max(position + 1);
        drop(next);
        self.changed.notify_waiters();
    }
}

/// A replayed call's answer (`None`: it never answered) and, for a journal that recorded the
/// order of answers, its turn.
pub(crate) struct Recorded {
    pub(crate) answer: Option<Result<String, String>>,
    pub(crate) turn: Option<(u64, Arc<Turns>)>,
}

impl Replay {
    pub(crate) fn new(journal: Journal) -> Replay {
        Replay { journal, next: 0, divergence: None, turns: Arc::default() }
    }

    /// The answer of the next call: the recorded one when the call is the journal's next one
    /// (`None` for a call that never answered), with its turn, otherwise an error naming the
    /// first difference (the first one is also kept for [`Replay::mismatch`]).
    pub(crate) fn answer(&mut self, name: &str, arguments_json: &str) -> Recorded {
        let refused = |text: String| Recorded { answer: Some(Err(text)), turn: None };
        let recorded = self.recorded(name, arguments_json);
        match recorded {
            Ok(Some((answer, finished))) => {
                Recorded { answer: Some(answer), turn: finished.map(|position| (position, self.turns.clone())) }
            }
            Ok(None) => Recorded { answer: None, turn: None },
            Err(difference) => refused(difference),
        }
    }

    fn recorded(&mut self, name: &str, arguments_json: &str) -> Result<Option<(Result<String, String>, Option<u64>)>, String> {
        let number = self.next + 1;
        self.next += 1;
        let found = parse(arguments_json);
        let difference = match self.journal.calls.get(number - 1).map(|entry| (entry, parse(entry.arguments.get()))) {
            None => format!(
                "the callback journal has {} calls; this is call {number}: `{name}` with {found}",
                self.journal.calls.len()
            ),
            Some((entry, _)) if entry.name != name => {
                format!("call {number} differs from the callback journal: it calls `{name}`, the journal has `{}`", entry.name)
            }
            Some((_, recorded)) if recorded != found => format!(
                "call {number} (`{name}`) differs from the callback journal: {}",
                first_difference(&recorded, &found)
            ),
            Some((entry, _)) => {
                return Ok(match (&entry.result, &entry.error) {
                    (_, Some(error)) => Some((Err(error.clone()), entry.finished)),
                    (Some(result), None) => Some((Ok(result.get().to_owned()), entry.finished)),
                    (None, None) => None,
                })
            }
        };
        self.divergence.get_or_insert_with(|| difference.clone());
        Err(difference)
    }

    /// Why the replay did not match: the first call that differed, or the journal's calls
    /// that were never made.
    pub(crate) fn mismatch(&self) -> Option<String> {
        if let Some(divergence) = &self.divergence {
            return Some(divergence.clone());
        }
        let left = self.journal.calls.len().saturating_sub(self.next);
        (left > 0).then(|| {
            format!(
                "the callback journal has {left} more call(s) than were made, from call {} (`{}`)",
                self.next + 1,
                self.journal.calls[self.next].name
            )
        })
    }
}

/// A key that is there, whatever its value (`null` too): `Some`. (An absent key is the
/// field's default, `None`.)
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// JSON text as it travelled, or, when it is not JSON, as a JSON string of that text.
fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned())
        .or_else(|_| RawValue::from_string(Value::String(text.to_owned()).to_string()))
        .expect("a JSON string is JSON")
}

/// The arguments as JSON, or as the text they were when they are not JSON.
fn parse(arguments_json: &str) -> Value {
    serde_json::from_str(arguments_json).unwrap_or_else(|_| Value::String(arguments_json.to_owned()))
}

/// Names the first argument that differs between the journal's and a call's.
fn first_difference(expected: &Value, found: &Value) -> String {
    if let (Value::Object(expected), Value::Object(found)) = (expected, found) {
        for (key, value) in expected {
            match found.get(key) {
                None => return format!("argument `{key}` is missing (the journal has {value})"),
                Some(other) if other != value => return format!("argument `{key}` is {other}, the journal has {value}"),
                Some(_) => {}
            }
        }
        if let Some(key) = found.keys().find(|key| !expected.contains_key(*key)) {
            return format!("argument `{key}` is not in the journal's call");
        }
    }
    format!("the arguments are {found}, the journal has {expected}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(name: &str, arguments: Value, result: Option<Value>) -> JournalEntry {
        JournalEntry {
            name: name.into(),
            arguments: raw(&arguments.to_string()),
            result: result.map(|result| raw(&result.to_string())),
            error: None,
            duration_ms: 1.0,
            finished: None,
        }
    }

    #[test]
    fn a_replay_answers_in_order_and_names_the_first_difference() {
        let journal = Journal {
            calls: vec![
                entry("add", json!({"a": 1, "b": 2}), Some(json!(3))),
                entry("add", json!({"a": 2, "b": 2}), Some(json!(4))),
                entry("sleep", json!({"ms": 5}), None),
            ],
            ..Journal::default()
        };
        let mut replay = Replay::new(journal.clone());
        // Argument order does not matter; values do.
        assert_eq!(replay.answer("add", r#"{"b": 2, "a": 1}"#).answer, Some(Ok("3".into())));
        let error = "call 2 (`add`) differs from the callback journal: argument `b` is 3, the journal has 2";
        assert_eq!(replay.answer("add", r#"{"a": 2, "b": 3}"#).answer, Some(Err(error.into())));
        assert_eq!(replay.answer("sleep", r#"{"ms": 5}"#).answer, None, "a call that never answered stays unanswered");
        assert!(replay.answer("echo", "{}").answer.unwrap().unwrap_err().contains("has 3 calls; this is call 4"));
        assert_eq!(replay.mismatch().as_deref(), Some(error), "the first difference is kept");

        let mut short = Replay::new(journal);
        assert!(short.answer("echo", "{}").answer.unwrap().unwrap_err().contains("it calls `echo`, the journal has `add`"));
        let mut unfinished = Replay::new(Journal { calls: vec![entry("add", json!({}), Some(json!(0)))], ..Journal::default() });
        assert!(unfinished.mismatch().unwrap().contains("1 more call(s) than were made, from call 1 (`add`)"));
        assert_eq!(unfinished.answer("add", "{}").answer, Some(Ok("0".into())));
        assert_eq!(unfinished.mismatch(), None);
    }

    #[test]
    fn journals_round_trip_through_files_and_refuse_other_formats() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("journal.json");
        let journal = Journal {
            calls: vec![JournalEntry { name: "fail".into(), arguments: raw("{}"), result: None, error: Some("boom".into()), duration_ms: 0.5, finished: Some(0) }],
            ..Journal::default()
        };
        journal.save(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap(), journal);
        std::fs::write(&path, r#"{"format": 9, "calls": []}"#).unwrap();
        assert!(Journal::load(&path).unwrap_err().to_string().contains("format 9"));
    }

    /// A callback that answered `null` (Python's `None`) is recorded with `"result": null`,
    /// and replays as that answer, not as a call that never answered.
    #[test]
    fn a_null_result_replays_as_null() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("journal.json");
        let mut journal = Journal::default();
        let index = journal.start("nothing", "{}").unwrap();
        journal.finish(index, &Ok("null".into()), 0.1);
        journal.save(&path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains(r#""result": null"#));
        let loaded = Journal::load(&path).unwrap();
        assert_eq!(loaded, journal);
        assert_eq!(Replay::new(loaded).answer("nothing", "{}").answer, Some(Ok("null".into())));
    }

    /// A recording that would hold more than [`MAX_JOURNAL_BYTES`] stops there, says so, and
    /// is refused for replay; the calls themselves go on.
    #[test]
    fn a_journal_is_bounded_and_a_cut_one_is_not_replayed() {
        let directory = tempfile::tempdir().unwrap();
        let mut journal = Journal::default();
        let big = format!("{{\"text\": \"{}\"}}", "x".repeat(1 << 20));
        let mut recorded = 0;
        for _ in 0..40 {
            if let Some(index) = journal.start("echo", &big) {
                journal.finish(index, &Ok(big.clone()), 0.1);
                recorded += 1;
            }
        }
        assert!(journal.truncated);
        assert!(recorded <= 8 && journal.calls.len() <= recorded, "{recorded} calls of 2 MiB each were kept");
        assert!(journal.calls.iter().all(|call| call.result.is_some()));
        let path = directory.path().join("journal.json");
        journal.save(&path).unwrap();
        let error = Journal::load(&path).unwrap_err().to_string();
        assert!(error.contains("was cut at 16 MiB"), "{error}");
    }

    /// Answers reach the guest in the order they did when recorded: a call started first but
    /// answered second waits for the other's answer.
    #[test]
    fn a_replay_delivers_answers_in_the_recorded_order() {
        let mut journal = Journal::default();
        let slow = journal.start("sleep", r#"{"ms": 300}"#).unwrap();
        let fast = journal.start("sleep", r#"{"ms": 20}"#).unwrap();
        journal.finish(fast, &Ok("20".into()), 20.0);
        journal.finish(slow, &Ok("300".into()), 300.0);
        assert_eq!((journal.calls[0].finished, journal.calls[1].finished), (Some(1), Some(0)));

        let mut replay = Replay::new(journal);
        let first = replay.answer("sleep", r#"{"ms": 300}"#);
        let second = replay.answer("sleep", r#"{"ms": 20}"#);
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let tasks = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        tasks.block_on(async {
            let deliver = |recorded: Recorded| {
                let delivered = delivered.clone();
                async move {
                    let (position, turns) = recorded.turn.unwrap();
                    turns.wait_for(position).await;
                    delivered.lock().unwrap().push(recorded.answer.unwrap().unwrap());
                    turns.done(position);
                }
            };
            // The call started first is polled first, and still answers second.
            let first = tokio::spawn(deliver(first));
            tokio::task::yield_now().await;
            let second = tokio::spawn(deliver(second));
            first.await.unwrap();
            second.await.unwrap();
        });
        assert_eq!(*delivered.lock().unwrap(), ["20", "300"]);
    }

    /// A journal file larger than any journal can be is refused before it is read (a
    /// hostile file could otherwise take the host's memory).
    #[test]
    fn an_oversized_journal_file_is_refused_unread() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("journal.json");
        // Sparse: the size is what counts, and nothing of it is read.
        std::fs::File::create(&path).unwrap().set_len(2 * MAX_JOURNAL_BYTES as u64 + 1).unwrap();
        let error = Journal::load(&path).unwrap_err().to_string();
        assert!(error.contains("more than a callback journal can"), "{error}");
    }
}
