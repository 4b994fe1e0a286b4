//! Host callbacks: named functions with a description and a JSON-schema string for their
//! keyword arguments, called with a JSON object and returning JSON or an error text.

use std::sync::Arc;
use std::collections::BTreeMap;

use serde_json::{json, Value};

type Handler = Box<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

pub struct Callback {
    pub name: String,
    pub description: String,
    pub parameters_schema_json: String,
    handler: Handler,
}

/// One `report-trace` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub lineno: u32,
    pub event_json: String,
    pub context_json: String,
}

#[derive(Default)]
pub struct Callbacks {
    by_name: BTreeMap<String, Callback>,
}

impl Callbacks {
    pub fn new() -> Callbacks {
        Callbacks::default()
    }

    /// Adds a callback; `parameters_schema` is a JSON-schema object for the keyword arguments.
    pub fn register(
        &mut self,
        name: &str,
        description: &str,
        parameters_schema: Value,
        handler: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.by_name.insert(
            name.to_owned(),
            Callback {
                name: name.to_owned(),
                description: description.to_owned(),
                parameters_schema_json: parameters_schema.to_string(),
                handler: Box::new(handler),
            },
        );
        self
    }

    pub fn list(&self) -> impl Iterator<Item = &Callback> {
        self.by_name.values()
    }

    /// Serves the world's `invoke` import.
    pub fn invoke(&self, name: &str, arguments_json: &str) -> Result<String, String> {
        let Some(callback) = self.by_name.get(name) else {
            let known = self.by_name.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(format!("unknown callback `{name}` (known callbacks: {known})"));
        };
        let arguments: Value = serde_json::from_str(arguments_json)
            .map_err(|error| format!("callback `{name}`: the arguments are not JSON: {error}"))?;
        (callback.handler)(arguments).map(|result| result.to_string())
    }

    /// The callbacks every conformance case gets, also offered by `cargo xtask run`.
    pub fn standard() -> Callbacks {
        let mut callbacks = Callbacks::new();
        let text = |value: &Value, name: &str| {
            value.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| format!("argument `{name}` must be a string"))
        };
        let one_string = |name: &str| json!({"type": "object", "properties": {name: {"type": "string"}}, "required": [name]});
        let number = |value: &Value, name: &str| {
            value.get(name).cloned().filter(Value::is_number).ok_or_else(|| format!("argument `{name}` must be a number"))
        };
        callbacks
            .register(
                "add",
                "Adds two numbers.",
                json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
                move |arguments| {
                    let (a, b) = (number(&arguments, "a")?, number(&arguments, "b")?);
                    if let Some(sum) = a.as_i64().zip(b.as_i64()).and_then(|(a, b)| a.checked_add(b)) {
                        return Ok(Value::from(sum));
                    }
                    let sum = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
                    // JSON has no infinities: a sum out of range is an error, never `null`.
                    serde_json::Number::from_f64(sum)
                        .map(Value::Number)
                        .ok_or_else(|| format!("the sum {sum} is not a finite number, which JSON cannot carry"))
                },
            )
            .register(
                "echo",
                "Returns its keyword arguments.",
                json!({"type": "object", "additionalProperties": true}),
                Ok,
            )
            .register(
                "get_time",
                "Returns the host's time as seconds since the Unix epoch.",
                json!({"type": "object", "properties": {}}),
                |_| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_err(|error| error.to_string())?;
                    Ok(json!({"timestamp": now.as_secs_f64()}))
                },
            )
            .register("http.get", "Pretends to fetch a URL.", one_string("url"), move |arguments| {
                let url = text(&arguments, "url")?;
                Ok(json!({"status": 200, "url": url}))
            })
            .register("fail", "Always fails.", json!({"type": "object", "properties": {}}), |_| Err("boom".to_owned()))
            // A name that is a callback and the prefix of another, taking an argument called
            // `name`; and a name that is not a Python identifier (reachable through `invoke`).
            .register("greet", "Greets `name`.", one_string("name"), move |arguments| {
                Ok(json!(format!("hello {}", text(&arguments, "name")?)))
            })
            .register("greet.loudly", "Greets `name` loudly.", one_string("name"), move |arguments| {
                Ok(json!(format!("HELLO {}", text(&arguments, "name")?.to_uppercase())))
            })
            .register(
                "sleep",
                "Waits `ms` milliseconds on the host, then returns them.",
                json!({"type": "object", "properties": {"ms": {"type": "integer"}}, "required": ["ms"]}),
                |arguments| {
                    let ms = arguments.get("ms").and_then(Value::as_u64).ok_or("argument `ms` must be a non-negative integer")?;
                    std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
                    Ok(json!(ms))
                },
            )
            .register("my-tool", "A callback whose name is not a Python identifier.", json!({"type": "object"}), |_| {
                Ok(json!("tool ran"))
            });
        callbacks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_callbacks_answer_as_the_case_format_promises() {
        let callbacks = Callbacks::standard();
        assert_eq!(callbacks.invoke("add", r#"{"a": 10, "b": 32}"#), Ok("42".into()));
        assert_eq!(callbacks.invoke("add", r#"{"a": 0.5, "b": 1}"#), Ok("1.5".into()));
        assert_eq!(callbacks.invoke("echo", r#"{"x": [1, "y"]}"#), Ok(r#"{"x":[1,"y"]}"#.into()));
        assert_eq!(callbacks.invoke("http.get", r#"{"url": "u"}"#), Ok(r#"{"status":200,"url":"u"}"#.into()));
        // Integers of any size come back exactly; a sum JSON cannot carry is an error.
        let huge = r#"{"n":1180591620717411303425}"#;
        assert_eq!(callbacks.invoke("echo", huge), Ok(huge.into()));
        let error = callbacks.invoke("add", r#"{"a": 1e308, "b": 1e308}"#).unwrap_err();
        assert!(error.contains("not a finite number"), "{error}");
        assert_eq!(callbacks.invoke("add", r#"{"a": 9007199254740993, "b": 0}"#), Ok("9007199254740993".into()));
        assert_eq!(callbacks.invoke("fail", "{}"), Err("boom".into()));
        let time: Value = serde_json::from_str(&callbacks.invoke("get_time", "{}").unwrap()).unwrap();
        assert!(time["timestamp"].as_f64().unwrap() > 1.7e9);
    }

    #[test]
    fn unknown_callbacks_and_bad_arguments_are_errors_with_their_cause() {
        let callbacks = Callbacks::standard();
        let error = callbacks.invoke("nope", "{}").unwrap_err();
        assert!(error.contains("unknown callback `nope`") && error.contains("add"), "{error}");
        assert!(callbacks.invoke("add", "{").unwrap_err().contains("not JSON"));
        assert!(callbacks.invoke("add", r#"{"a": "1", "b": 2}"#).unwrap_err().contains("`a`"));
    }
}

type Request = (String, String, std::sync::mpsc::SyncSender<Result<String, String>>);

/// Runs a sandbox's callbacks on a thread of their own and waits at most a timeout for each
/// answer: a callback that hangs gives the guest an error instead of holding the sandbox
/// forever. The thread is kept for the next call; one that is stuck in a callback is left
/// to finish it (it ends then) and a new one serves the next call.
pub(crate) struct CallbackRunner {
    callbacks: Arc<Callbacks>,
    requests: Option<std::sync::mpsc::Sender<Request>>,
}

impl CallbackRunner {
    pub(crate) fn new(callbacks: Arc<Callbacks>) -> CallbackRunner {
        CallbackRunner { callbacks, requests: None }
    }

    pub(crate) fn callbacks(&self) -> &Callbacks {
        &self.callbacks
    }

    fn requests(&mut self) -> Result<&std::sync::mpsc::Sender<Request>, String> {
        if self.requests.is_none() {
            let (sender, receiver) = std::sync::mpsc::channel::<Request>();
            let callbacks = self.callbacks.clone();
            std::thread::Builder::new()
                .name("eryx callbacks".into())
                .spawn(move || {
                    for (name, arguments_json, reply) in receiver {
                        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callbacks.invoke(&name, &arguments_json)))
                            .unwrap_or_else(|_| Err(format!("callback `{name}` panicked")));
                        let _ = reply.send(answer);
                    }
                })
                .map_err(|error| format!("the callback thread could not start: {error}"))?;
            self.requests = Some(sender);
        }
        Ok(self.requests.as_ref().expect("just set"))
    }

    pub(crate) fn invoke(&mut self, name: &str, arguments_json: String, timeout: std::time::Duration) -> Result<String, String> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if self.requests()?.send((name.to_owned(), arguments_json, reply)).is_err() {
            self.requests = None;
            return Err(format!("callback `{name}`: the callback thread has ended"));
        }
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.requests = None;
                Err(format!("callback `{name}` did not answer within the callback timeout of {} ms", timeout.as_millis()))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.requests = None;
                Err(format!("callback `{name}` ended its thread"))
            }
        }
    }
}
