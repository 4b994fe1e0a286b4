//! Verified downloads over HTTP(S): streamed to a temporary file with a progress bar,
//! retried on transient failures, checked against the pinned sha256, then moved into the
//! cache. Nothing unverified is ever left where a later step would look.

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::inputs::cache::Cache;

const ATTEMPTS: u32 = 3;

/// Downloads `url` into the cache as the entry for `sha256`, unless it is there already.
pub fn fetch_verified(cache: &Cache, url: &str, sha256: &str, what: &str) -> Result<PathBuf> {
    if let Some(path) = cache.get(sha256)? {
        return Ok(path);
    }
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(1800))
        .build()
        .context("create the HTTP client")?;
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        match download_once(&client, cache, url, what) {
            Ok(file) => return cache.insert_file(&file, sha256, what),
            Err(error) if error.transient && attempt < ATTEMPTS => {
                eprintln!("{what}: attempt {attempt} failed ({:#}); retrying", error.error);
                std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                last_error = Some(error.error);
            }
            Err(error) => return Err(error.error),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{what}: download failed")))
}

struct Failure {
    error: anyhow::Error,
    transient: bool,
}

fn download_once(
    client: &reqwest::blocking::Client,
    cache: &Cache,
    url: &str,
    what: &str,
) -> std::result::Result<PathBuf, Failure> {
    let permanent = |error: anyhow::Error| Failure { error, transient: false };
    let transient = |error: anyhow::Error| Failure { error, transient: true };
    let mut response = client
        .get(url)
        .send()
        .map_err(|error| transient(anyhow::Error::new(error).context(format!("download {what} from {url}"))))?;
    let status = response.status();
    if !status.is_success() {
        let error = anyhow::anyhow!("download {what} from {url}: HTTP {status}");
        return Err(if status.is_server_error() { transient(error) } else { permanent(error) });
    }
    let length = response.content_length();
    let directory = cache.partial_dir().map_err(permanent)?;
    let file_path = directory.join(format!("download-{}-{}", std::process::id(), what.replace(['/', ' '], "_")));
    let progress = ProgressBar::new(length.unwrap_or(0));
    progress.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .unwrap()
            .progress_chars("=> "),
    );
    progress.set_message(what.to_owned());
    let result = (|| -> std::result::Result<u64, Failure> {
        let mut file = fs::File::create(&file_path)
            .with_context(|| format!("create {}", file_path.display()))
            .map_err(permanent)?;
        let mut buffer = vec![0u8; 1 << 16];
        let mut received = 0u64;
        loop {
            let read = response.read(&mut buffer).map_err(|error| {
                transient(anyhow::Error::new(error).context(format!("download {what}: the connection broke")))
            })?;
            if read == 0 {
                break;
            }
            file.write_all(&buffer[..read]).map_err(|error| permanent(error.into()))?;
            received += read as u64;
            progress.set_position(received);
        }
        file.sync_all().map_err(|error| permanent(error.into()))?;
        Ok(received)
    })();
    progress.finish_and_clear();
    match result {
        Ok(received) => {
            if let Some(expected) = length {
                if received != expected {
                    let _ = fs::remove_file(&file_path);
                    return Err(transient(anyhow::anyhow!(
                        "download {what}: truncated body ({received} of {expected} bytes)"
                    )));
                }
            }
            Ok(file_path)
        }
        Err(failure) => {
            let _ = fs::remove_file(&file_path);
            Err(failure)
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::cache::sha256_bytes;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A loopback HTTP server answering every request with `response(request_number)`.
    fn serve(responses: Vec<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                let response = &responses[index.min(responses.len() - 1)];
                let _ = stream.write_all(response);
            }
        });
        format!("http://{address}/file.tar.gz")
    }

    fn ok(body: &[u8]) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        response
    }

    #[test]
    fn the_right_digest_lands_in_the_cache() {
        let body = b"pinned bytes".repeat(1000);
        let url = serve(vec![ok(&body)]);
        let directory = tempfile::tempdir().unwrap();
        let cache = Cache::at(directory.path());
        let path = fetch_verified(&cache, &url, &sha256_bytes(&body), "thing").unwrap();
        assert_eq!(fs::read(path).unwrap(), body);
    }

    #[test]
    fn a_wrong_digest_leaves_no_cache_entry() {
        let url = serve(vec![ok(b"evil bytes")]);
        let directory = tempfile::tempdir().unwrap();
        let cache = Cache::at(directory.path());
        let pinned = sha256_bytes(b"good bytes");
        let error = format!("{:#}", fetch_verified(&cache, &url, &pinned, "thing").unwrap_err());
        assert!(error.contains("sha256 mismatch"), "{error}");
        assert!(error.contains(&sha256_bytes(b"evil bytes")), "{error}");
        assert!(!cache.entry_path(&pinned).exists());
        let leftovers = fs::read_dir(cache.partial_dir().unwrap()).unwrap().count();
        assert_eq!(leftovers, 0, "the rejected download stays nowhere");
    }

    #[test]
    fn a_truncated_body_is_an_error_after_retries() {
        let mut truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n".to_vec();
        truncated.extend_from_slice(&[7u8; 100]);
        let url = serve(vec![truncated]);
        let directory = tempfile::tempdir().unwrap();
        let cache = Cache::at(directory.path());
        let pinned = sha256_bytes(&[7u8; 1000]);
        let error = format!("{:#}", fetch_verified(&cache, &url, &pinned, "thing").unwrap_err());
        assert!(error.contains("thing"), "{error}");
        assert!(!cache.entry_path(&pinned).exists());
    }

    #[test]
    fn a_transient_failure_is_retried() {
        let body = b"second time lucky";
        let url = serve(vec![
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            ok(body),
        ]);
        let directory = tempfile::tempdir().unwrap();
        let cache = Cache::at(directory.path());
        let path = fetch_verified(&cache, &url, &sha256_bytes(body), "thing").unwrap();
        assert_eq!(fs::read(path).unwrap(), body);
    }

    #[test]
    fn a_missing_file_is_not_retried_forever() {
        let url = serve(vec![b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()]);
        let directory = tempfile::tempdir().unwrap();
        let cache = Cache::at(directory.path());
        let error = format!("{:#}", fetch_verified(&cache, &url, &sha256_bytes(b"x"), "thing").unwrap_err());
        assert!(error.contains("HTTP 404"), "{error}");
    }
}
