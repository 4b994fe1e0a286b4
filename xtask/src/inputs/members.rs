//! Finds the pinned CPython members inside the componentize-py wheel's native library by
//! content: every zstd frame (magic `28 b5 2f fd`) is decompressed and identified by the
//! sha256 of its bytes, so the extraction never depends on offsets. Corrupt frames and
//! false magic matches are skipped.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::inputs::cache::sha256_bytes;
use crate::inputs::lock::Member;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// One frame that decompressed cleanly.
pub struct Frame {
    pub offset: usize,
    pub bytes: Vec<u8>,
}

/// Every zstd frame in `blob` that decompresses to at most `limit` bytes.
pub fn frames(blob: &[u8], limit: usize) -> Vec<Frame> {
    let mut found = Vec::new();
    let mut position = 0;
    while let Some(relative) = find(&blob[position..], &ZSTD_MAGIC) {
        let offset = position + relative;
        match decompress_frame(&blob[offset..], limit) {
            Some((bytes, consumed)) => {
                found.push(Frame { offset, bytes });
                position = offset + consumed.max(ZSTD_MAGIC.len());
            }
            None => position = offset + 1,
        }
    }
    found
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Decompresses the frame starting at `input[0]`; returns its bytes and compressed size.
fn decompress_frame(input: &[u8], limit: usize) -> Option<(Vec<u8>, usize)> {
    let size = zstd::zstd_safe::find_frame_compressed_size(input).ok()?;
    let frame = &input[..size];
    let mut decoder = zstd::stream::read::Decoder::with_buffer(frame).ok()?.single_frame();
    let mut bytes = Vec::new();
    (&mut decoder).take(limit as u64 + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() > limit {
        return None;
    }
    Some((bytes, size))
}

/// Picks the pinned members out of `blob`. Every member must be found exactly as pinned;
/// a missing one is an error that lists what the blob did contain.
pub fn extract_members(blob: &[u8], members: &[Member]) -> Result<BTreeMap<String, Vec<u8>>> {
    let limit = members.iter().map(|member| member.size).max().unwrap_or(0) as usize;
    let mut wanted: BTreeMap<&str, &Member> =
        members.iter().map(|member| (member.sha256.as_str(), member)).collect();
    let mut found = BTreeMap::new();
    let mut seen = Vec::new();
    for frame in frames(blob, limit) {
        let digest = sha256_bytes(&frame.bytes);
        if let Some(member) = wanted.remove(digest.as_str()) {
            found.insert(member.name.clone(), frame.bytes);
        } else {
            seen.push(format!("  offset {}: {} bytes, sha256 {digest}", frame.offset, frame.bytes.len()));
        }
    }
    if !wanted.is_empty() {
        let missing = wanted
            .values()
            .map(|member| format!("  {} (sha256 {})", member.name, member.sha256))
            .collect::<Vec<_>>()
            .join("\n");
        bail!(
            "the wheel's native library lacks pinned members:\n{missing}\nunpinned frames it holds:\n{}\n\
             (the wheel or toolchains.lock changed: re-pin the members together with the wheel)",
            seen.join("\n")
        );
    }
    Ok(found)
}

/// The one native library inside the wheel (a zip), which carries the zstd frames.
pub fn wheel_native_library(wheel: &Path) -> Result<Vec<u8>> {
    let file = fs::File::open(wheel).with_context(|| format!("open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file).with_context(|| format!("read {} as a zip", wheel.display()))?;
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    let library = names
        .iter()
        .find(|name| name.ends_with(".so") || name.ends_with(".pyd") || name.ends_with(".dylib"))
        .with_context(|| format!("{} holds no native library", wheel.display()))?;
    let mut entry = archive.by_name(library)?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).with_context(|| format!("read {library} from the wheel"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, bytes: &[u8]) -> Member {
        Member { name: name.into(), sha256: sha256_bytes(bytes), size: bytes.len() as u64 }
    }

    fn noise(length: usize, seed: u8) -> Vec<u8> {
        (0..length).map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn synthetic_blob() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let first = b"first member ".repeat(500);
        let second = noise(20_000, 3);
        let mut corrupt = zstd::encode_all(&b"corrupt member ".repeat(300)[..], 3).unwrap();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        corrupt[middle + 1] ^= 0xff;
        let mut blob = noise(1000, 1);
        blob.extend_from_slice(&ZSTD_MAGIC); // a false match with garbage after it
        blob.extend(noise(50, 9));
        blob.extend(zstd::encode_all(&first[..], 3).unwrap());
        blob.extend(noise(777, 2));
        blob.extend(corrupt);
        blob.extend(noise(333, 4));
        blob.extend(zstd::encode_all(&second[..], 19).unwrap());
        blob.extend(noise(100, 5));
        (blob, first, second)
    }

    #[test]
    fn members_are_found_by_content_among_noise_and_corrupt_frames() {
        let (blob, first, second) = synthetic_blob();
        let members = vec![member("second.so", &second), member("first.so", &first)];
        let found = extract_members(&blob, &members).unwrap();
        assert_eq!(found["first.so"], first);
        assert_eq!(found["second.so"], second);
    }

    #[test]
    fn a_missing_member_is_named() {
        let (blob, first, _second) = synthetic_blob();
        let members = vec![member("first.so", &first), member("absent.so", b"not in the blob")];
        let error = extract_members(&blob, &members).unwrap_err().to_string();
        assert!(error.contains("absent.so"), "{error}");
        assert!(error.contains("unpinned frames"), "{error}");
    }

    #[test]
    fn the_real_wheel_yields_every_pinned_member_when_cached() {
        let lock = crate::inputs::lock::Lock::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../toolchains.lock"
        )))
        .unwrap();
        let cache = crate::inputs::cache::Cache::open(None).unwrap();
        let wheel = lock.wheel_for_host().unwrap();
        let Some(path) = cache.get(&wheel.sha256).unwrap() else {
            eprintln!("the pinned wheel is not in the cache; run `cargo xtask fetch` to cover this");
            return;
        };
        let library = wheel_native_library(&path).unwrap();
        let found = extract_members(&library, &lock.cpython.members).unwrap();
        assert_eq!(found.len(), lock.cpython.members.len());
        assert_eq!(&found["libc.so"][..4], b"\0asm");
    }
}
