//! The sandbox flags of `cargo xtask run` and `eryx-tools run`, declared once: the xtask
//! parses them and hands them on to the host unchanged.

/// Limits, tracing and output form of one `run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SandboxFlags {
    /// Wall-clock limit of each execute, in milliseconds [default: 30000]
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Memory limit of the sandbox, in MiB [default: 256]
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<usize>,
    /// Fuel per execute (roughly, instructions); off by default
    #[arg(long)]
    pub fuel: Option<u64>,
    /// The most UTF-8 bytes of stdout, and of stderr, an execute keeps [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_output_bytes: Option<u64>,
    /// The most callback invocations per execute [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_callbacks: Option<u32>,
    /// How long one callback may take, in milliseconds [default: 10000]
    #[arg(long, value_name = "MS")]
    pub callback_timeout_ms: Option<u64>,
    /// Print the trace events of the user's code to stderr, one JSON object per line
    #[arg(long)]
    pub trace: bool,
    /// The most bytes of JSON arguments one callback call may carry [default: 262144]
    #[arg(long, value_name = "BYTES")]
    pub max_callback_argument_bytes: Option<usize>,
    /// The most bytes of arguments the callback calls pending at once may carry [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_pending_callback_bytes: Option<usize>,
    /// Print one JSON object per execute on stdout instead of the output:
    /// {stdout, stderr, error, truncated, trace}
    #[arg(long)]
    pub json: bool,
    /// Record every callback call (name, arguments, result or error, duration) into FILE
    /// (JSON), written when the run ends
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<std::path::PathBuf>,
    /// Answer the callback calls from the journal FILE (written by --record) instead of
    /// calling the host; a call that differs from the journal is an error naming the first
    /// difference
    #[arg(long, value_name = "FILE")]
    pub replay: Option<std::path::PathBuf>,
}

impl SandboxFlags {
    /// The flags as command-line arguments, to hand them on.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut value = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(format!("--{name}"));
                args.push(value);
            }
        };
        value("timeout-ms", self.timeout_ms.map(|v| v.to_string()));
        value("memory-mib", self.memory_mib.map(|v| v.to_string()));
        value("fuel", self.fuel.map(|v| v.to_string()));
        value("max-output-bytes", self.max_output_bytes.map(|v| v.to_string()));
        value("max-callbacks", self.max_callbacks.map(|v| v.to_string()));
        value("callback-timeout-ms", self.callback_timeout_ms.map(|v| v.to_string()));
        value("max-callback-argument-bytes", self.max_callback_argument_bytes.map(|v| v.to_string()));
        value("max-pending-callback-bytes", self.max_pending_callback_bytes.map(|v| v.to_string()));
        if self.trace {
            args.push("--trace".into());
        }
        if self.json {
            args.push("--json".into());
        }
        // The host may run from another directory: a relative path names the caller's file.
        let mut path = |name: &str, path: &Option<std::path::PathBuf>| {
            if let Some(path) = path {
                args.push(format!("--{name}"));
                args.push(std::path::absolute(path).unwrap_or_else(|_| path.clone()).display().to_string());
            }
        };
        path("record", &self.record);
        path("replay", &self.replay);
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: SandboxFlags,
    }

    #[test]
    fn flags_handed_on_parse_to_the_same_flags() {
        let given = [
            "x", "--timeout-ms", "5", "--fuel", "9", "--max-output-bytes", "100", "--trace", "--json", "--callback-timeout-ms", "7",
            "--record", "/tmp/journal.json", "--max-callback-argument-bytes", "1000", "--max-pending-callback-bytes", "2000",
        ];
        let parsed = Cli::parse_from(given).flags;
        let again = Cli::parse_from(std::iter::once("x".to_owned()).chain(parsed.to_args())).flags;
        assert_eq!(format!("{parsed:?}"), format!("{again:?}"));
        assert_eq!(again.fuel, Some(9));
        assert_eq!((again.max_callback_argument_bytes, again.max_pending_callback_bytes), (Some(1000), Some(2000)));
        assert!(again.trace && again.json);
        assert_eq!(again.memory_mib, None);
        assert_eq!(again.record.as_deref(), Some(std::path::Path::new("/tmp/journal.json")));
        let relative = Cli::parse_from(["x", "--replay", "journal.json"]).flags.to_args();
        assert_eq!(relative[1], std::env::current_dir().unwrap().join("journal.json").display().to_string());
        assert!(Cli::try_parse_from(["x", "--record", "a", "--replay", "b"]).is_err(), "recording and replaying exclude each other");
    }
}
