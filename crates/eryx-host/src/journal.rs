//! The callback journal: a sandbox records every callback call (name, arguments, result or
//! error, duration), and a sandbox given a journal replays it: each call is answered from the
//! journal, in the order the calls were started, without calling the host. A call that is not
//! the journal's next one is refused with the first difference.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The format number of journal files this host writes and reads.
pub const JOURNAL_FORMAT: u32 = 1;

/// One callback call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub name: String,
    /// The keyword arguments, as sent (a JSON object).
    pub arguments: Value,
    /// The callback's JSON result, when it answered one (`null` included: a present `null`
    /// is the result `None` in Python, an absent key a call that did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub result: Option<Value>,
    /// The callback's error text, when it failed. Neither is set for a call that was
    /// cancelled before it answered: replayed, it never answers either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
}

/// The calls of a sandbox, in the order they were started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    pub calls: Vec<JournalEntry>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal { format: JOURNAL_FORMAT, calls: Vec::new() }
    }
}

impl Journal {
    pub fn load(path: &Path) -> Result<Journal> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read the callback journal {}", path.display()))?;
        let journal: Journal = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a callback journal (JSON with `format` and `calls`)", path.display()))?;
        if journal.format != JOURNAL_FORMAT {
            bail!("{} is a journal of format {}; this host reads format {JOURNAL_FORMAT}", path.display(), journal.format);
        }
        Ok(journal)
    }

    /// Records a call that starts now; answers its index for [`Journal::finish`]. Until then
    /// it has neither result nor error (a call cancelled before it answered stays so).
    pub(crate) fn start(&mut self, name: &str, arguments_json: &str) -> usize {
        self.calls.push(JournalEntry {
            name: name.to_owned(),
            arguments: parse(arguments_json),
            result: None,
            error: None,
            duration_ms: 0.0,
        });
        self.calls.len() - 1
    }

    /// Records the answer of the call `index`.
    pub(crate) fn finish(&mut self, index: usize, answer: &Result<String, String>, duration_ms: f64) {
        let entry = &mut self.calls[index];
        entry.duration_ms = duration_ms;
        match answer {
            Ok(text) => entry.result = Some(parse(text)),
            Err(text) => entry.error = Some(text.clone()),
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
}

impl Replay {
    pub(crate) fn new(journal: Journal) -> Replay {
        Replay { journal, next: 0, divergence: None }
    }

    /// The answer of the next call: the recorded one when the call is the journal's next one
    /// (`None` for a call that never answered), otherwise an error naming the first
    /// difference (the first one is also kept for [`Replay::mismatch`]).
    pub(crate) fn answer(&mut self, name: &str, arguments_json: &str) -> Option<Result<String, String>> {
        let number = self.next + 1;
        self.next += 1;
        let found = parse(arguments_json);
        let difference = match self.journal.calls.get(number - 1) {
            None => format!(
                "the callback journal has {} calls; this is call {number}: `{name}` with {found}",
                self.journal.calls.len()
            ),
            Some(entry) if entry.name != name => {
                format!("call {number} differs from the callback journal: it calls `{name}`, the journal has `{}`", entry.name)
            }
            Some(entry) if entry.arguments != found => format!(
                "call {number} (`{name}`) differs from the callback journal: {}",
                first_difference(&entry.arguments, &found)
            ),
            Some(entry) => {
                return match (&entry.result, &entry.error) {
                    (_, Some(error)) => Some(Err(error.clone())),
                    (Some(result), None) => Some(Ok(result.to_string())),
                    (None, None) => None,
                }
            }
        };
        self.divergence.get_or_insert_with(|| difference.clone());
        Some(Err(difference))
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
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
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
        JournalEntry { name: name.into(), arguments, result, error: None, duration_ms: 1.0 }
    }

    #[test]
    fn a_replay_answers_in_order_and_names_the_first_difference() {
        let journal = Journal {
            format: JOURNAL_FORMAT,
            calls: vec![
                entry("add", json!({"a": 1, "b": 2}), Some(json!(3))),
                entry("add", json!({"a": 2, "b": 2}), Some(json!(4))),
                entry("sleep", json!({"ms": 5}), None),
            ],
        };
        let mut replay = Replay::new(journal.clone());
        // Argument order does not matter; values do.
        assert_eq!(replay.answer("add", r#"{"b": 2, "a": 1}"#), Some(Ok("3".into())));
        let error = "call 2 (`add`) differs from the callback journal: argument `b` is 3, the journal has 2";
        assert_eq!(replay.answer("add", r#"{"a": 2, "b": 3}"#), Some(Err(error.into())));
        assert_eq!(replay.answer("sleep", r#"{"ms": 5}"#), None, "a call that never answered stays unanswered");
        assert!(replay.answer("echo", "{}").unwrap().unwrap_err().contains("has 3 calls; this is call 4"));
        assert_eq!(replay.mismatch().as_deref(), Some(error), "the first difference is kept");

        let mut short = Replay::new(journal);
        assert!(short.answer("echo", "{}").unwrap().unwrap_err().contains("it calls `echo`, the journal has `add`"));
        let mut unfinished = Replay::new(Journal { format: JOURNAL_FORMAT, calls: vec![entry("add", json!({}), Some(json!(0)))] });
        assert!(unfinished.mismatch().unwrap().contains("1 more call(s) than were made, from call 1 (`add`)"));
        assert_eq!(unfinished.answer("add", "{}"), Some(Ok("0".into())));
        assert_eq!(unfinished.mismatch(), None);
    }

    #[test]
    fn journals_round_trip_through_files_and_refuse_other_formats() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("journal.json");
        let journal = Journal {
            format: JOURNAL_FORMAT,
            calls: vec![JournalEntry { name: "fail".into(), arguments: json!({}), result: None, error: Some("boom".into()), duration_ms: 0.5 }],
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
        let index = journal.start("nothing", "{}");
        journal.finish(index, &Ok("null".into()), 0.1);
        journal.save(&path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains(r#""result": null"#));
        let loaded = Journal::load(&path).unwrap();
        assert_eq!(loaded, journal);
        assert_eq!(Replay::new(loaded).answer("nothing", "{}"), Some(Ok("null".into())));
    }
}
