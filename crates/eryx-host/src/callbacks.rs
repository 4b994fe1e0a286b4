//! Host callbacks: named functions with a description and a JSON-schema string for their
//! keyword arguments, called with a JSON object and returning JSON or an error text. A
//! callback is synchronous (run on a blocking thread of the host's async runtime, so a slow
//! one holds up nothing else) or asynchronous (a future on that runtime); several calls of one
//! sandbox may be pending at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};

type SyncHandler = dyn Fn(Value) -> Result<Value, String> + Send + Sync;
/// The future of one asynchronous callback call.
pub type CallbackFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
type AsyncHandler = dyn Fn(Value) -> CallbackFuture + Send + Sync;

#[derive(Clone)]
enum Handler {
    Sync(Arc<SyncHandler>),
    Async(Arc<AsyncHandler>),
}

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

    /// Adds a synchronous callback; `parameters_schema` is a JSON-schema object for the
    /// keyword arguments.
    pub fn register(
        &mut self,
        name: &str,
        description: &str,
        parameters_schema: Value,
        handler: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.insert(name, description, parameters_schema, Handler::Sync(Arc::new(handler)))
    }

    /// Adds an asynchronous callback: `handler` answers a future, run on the host's tokio
    /// runtime (so it may use tokio's timers and I/O).
    pub fn register_async<F>(
        &mut self,
        name: &str,
        description: &str,
        parameters_schema: Value,
        handler: impl Fn(Value) -> F + Send + Sync + 'static,
    ) -> &mut Self
    where
        F: Future<Output = Result<Value, String>> + Send + 'static,
    {
        let handler = move |arguments| -> CallbackFuture { Box::pin(handler(arguments)) };
        self.insert(name, description, parameters_schema, Handler::Async(Arc::new(handler)))
    }

    fn insert(&mut self, name: &str, description: &str, parameters_schema: Value, handler: Handler) -> &mut Self {
        self.by_name.insert(
            name.to_owned(),
            Callback {
                name: name.to_owned(),
                description: description.to_owned(),
                parameters_schema_json: parameters_schema.to_string(),
                handler,
            },
        );
        self
    }

    pub fn list(&self) -> impl Iterator<Item = &Callback> {
        self.by_name.values()
    }

    /// Serves the world's `invoke` import: the future of the callback's JSON result (or error
    /// text). It must be polled inside a tokio runtime; dropping it abandons the call (an
    /// asynchronous callback is cancelled, a synchronous one finishes on its thread unheard).
    pub fn invoke(&self, name: &str, arguments_json: &str) -> impl Future<Output = Result<String, String>> + Send + 'static {
        self.invoke_holding(name, arguments_json, (), None)
    }

    /// [`Callbacks::invoke`] that keeps `hold` (what the call accounts for: its arguments'
    /// reservation) until the handler itself is done, even when the call is abandoned first
    /// (a synchronous handler runs on to its end); a synchronous handler runs only with a
    /// permit of `sync_slots` (a sandbox's share of the blocking threads), held as long.
    pub fn invoke_holding(
        &self,
        name: &str,
        arguments_json: &str,
        hold: impl Send + 'static,
        sync_slots: Option<Arc<tokio::sync::Semaphore>>,
    ) -> impl Future<Output = Result<String, String>> + Send + 'static {
        let name = name.to_owned();
        let call = self.prepare(&name, arguments_json);
        async move {
            let task = match call? {
                (Handler::Sync(handler), arguments) => {
                    let permit = match sync_slots {
                        Some(slots) => Some(slots.acquire_owned().await.map_err(|_| format!("callback `{name}`: the sandbox is gone"))?),
                        None => None,
                    };
                    tokio::task::spawn_blocking(move || {
                        let result = handler(arguments);
                        drop((hold, permit));
                        result
                    })
                }
                (Handler::Async(handler), arguments) => tokio::spawn(async move {
                    let result = handler(arguments).await;
                    drop(hold);
                    result
                }),
            };
            match Abandon(task).await {
                Ok(result) => result.map(|value| value.to_string()),
                Err(error) if error.is_panic() => Err(format!("callback `{name}` panicked")),
                Err(error) => Err(format!("callback `{name}` was cancelled ({error})")),
            }
        }
    }

    /// The handler of `name` and the parsed arguments, or why there is no call to make.
    fn prepare(&self, name: &str, arguments_json: &str) -> Result<(Handler, Value), String> {
        let Some(callback) = self.by_name.get(name) else {
            let known = self.by_name.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(format!("unknown callback `{name}` (known callbacks: {known})"));
        };
        let arguments: Value = serde_json::from_str(arguments_json)
            .map_err(|error| format!("callback `{name}`: the arguments are not JSON: {error}"))?;
        Ok((callback.handler.clone(), arguments))
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
            .register_async(
                "sleep",
                "Waits `ms` milliseconds on the host (without holding a thread), then returns them.",
                json!({"type": "object", "properties": {"ms": {"type": "integer"}}, "required": ["ms"]}),
                |arguments| async move {
                    let ms = arguments.get("ms").and_then(Value::as_u64).ok_or("argument `ms` must be a non-negative integer")?;
                    tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
                    Ok(json!(ms))
                },
            )
            .register("my-tool", "A callback whose name is not a Python identifier.", json!({"type": "object"}), |_| {
                Ok(json!("tool ran"))
            });
        callbacks
    }
}

/// A spawned callback call that is aborted when its awaiting future is dropped (a cancelled
/// subtask, a timeout): an asynchronous callback then stops at its next await.
struct Abandon<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Abandon<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(context)
    }
}

impl<T> Drop for Abandon<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls `callbacks` the way a sandbox does, on a runtime of its own.
    trait Blocking {
        fn call(&self, name: &str, arguments_json: &str) -> Result<String, String>;
    }

    impl Blocking for Callbacks {
        fn call(&self, name: &str, arguments_json: &str) -> Result<String, String> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            runtime.block_on(self.invoke(name, arguments_json))
        }
    }

    #[test]
    fn async_callbacks_are_awaited_and_sync_ones_run_beside_them() {
        let mut callbacks = Callbacks::standard();
        callbacks.register_async("later", "", json!({}), |arguments| async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Ok(arguments)
        });
        assert_eq!(callbacks.call("sleep", r#"{"ms": 5}"#), Ok("5".into()));
        assert_eq!(callbacks.call("later", r#"{"x": 1}"#), Ok(r#"{"x":1}"#.into()));
        callbacks.register("panics", "", json!({}), |_| panic!("inside"));
        assert_eq!(callbacks.call("panics", "{}"), Err("callback `panics` panicked".into()));
    }

    #[test]
    fn standard_callbacks_answer_as_the_case_format_promises() {
        let callbacks = Callbacks::standard();
        assert_eq!(callbacks.call("add", r#"{"a": 10, "b": 32}"#), Ok("42".into()));
        assert_eq!(callbacks.call("add", r#"{"a": 0.5, "b": 1}"#), Ok("1.5".into()));
        assert_eq!(callbacks.call("echo", r#"{"x": [1, "y"]}"#), Ok(r#"{"x":[1,"y"]}"#.into()));
        assert_eq!(callbacks.call("http.get", r#"{"url": "u"}"#), Ok(r#"{"status":200,"url":"u"}"#.into()));
        // Integers of any size come back exactly; a sum JSON cannot carry is an error.
        let huge = r#"{"n":1180591620717411303425}"#;
        assert_eq!(callbacks.call("echo", huge), Ok(huge.into()));
        let error = callbacks.call("add", r#"{"a": 1e308, "b": 1e308}"#).unwrap_err();
        assert!(error.contains("not a finite number"), "{error}");
        assert_eq!(callbacks.call("add", r#"{"a": 9007199254740993, "b": 0}"#), Ok("9007199254740993".into()));
        assert_eq!(callbacks.call("fail", "{}"), Err("boom".into()));
        let time: Value = serde_json::from_str(&callbacks.call("get_time", "{}").unwrap()).unwrap();
        assert!(time["timestamp"].as_f64().unwrap() > 1.7e9);
    }

    #[test]
    fn unknown_callbacks_and_bad_arguments_are_errors_with_their_cause() {
        let callbacks = Callbacks::standard();
        let error = callbacks.call("nope", "{}").unwrap_err();
        assert!(error.contains("unknown callback `nope`") && error.contains("add"), "{error}");
        assert!(callbacks.call("add", "{").unwrap_err().contains("not JSON"));
        assert!(callbacks.call("add", r#"{"a": "1", "b": 2}"#).unwrap_err().contains("`a`"));
    }
}

