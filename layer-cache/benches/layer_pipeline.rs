//! The layer pipeline per MB: files → tar → compressor → sha256 (diff_id and digest) →
//! fsync'ed blob in a store, with gzip, zstd and no compression; and sha256 alone.
//! Targets: gzip ≥ 80 % of `pigz -6` on the same machine, zstd ≥ 300 MB/s on 2 cores,
//! sha256 ≥ 1.5 GB/s (SHA-NI). The store lives under $TMPDIR (bench/run.sh points it at
//! its loop-mounted work area).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use layer_cache::digest::Hasher;
use layer_cache::image::Compression;
use layer_cache::layer::LayerOptions;
use layer_cache::Store;

const FILES: usize = 64;
const FILE_SIZE: usize = 256 * 1024;

/// Deterministic bytes that compress about like executables (gzip -6 near 2:1): runs
/// copied from earlier in the buffer mixed with skewed literals.
fn binary_like(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let r = next();
        if out.len() > 4096 && r % 3 == 0 {
            let n = 8 + (r >> 8) as usize % 56;
            let back = 1 + (r >> 16) as usize % 4000;
            let start = out.len() - back;
            for i in 0..n.min(len - out.len()) {
                let b = out[start + i];
                out.push(b);
            }
        } else {
            let n = 4 + (r >> 8) as usize % 12;
            for _ in 0..n.min(len - out.len()) {
                let v = next();
                out.push(if v % 2 == 0 {
                    (v >> 8) as u8 & 0x3f
                } else {
                    (v >> 8) as u8
                });
            }
        }
    }
    out
}

fn files() -> Vec<(String, Vec<u8>)> {
    (0..FILES)
        .map(|i| {
            (
                format!("usr/lib/bench/lib{i:02}.so"),
                binary_like(FILE_SIZE, i as u64 + 7),
            )
        })
        .collect()
}

/// One layer: a tar of `files` streamed through the store's layer writer.
fn write_layer(store: &Store, files: &[(String, Vec<u8>)], compression: Compression) {
    let mut w = store
        .layer_writer(LayerOptions {
            compression,
            level: None,
        })
        .unwrap();
    {
        let mut tar = tar::Builder::new(&mut w);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        tar.finish().unwrap();
    }
    black_box(w.finish().unwrap());
}

fn pipeline(c: &mut Criterion) {
    let files = files();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let mut g = c.benchmark_group("layer_pipeline");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes((FILES * FILE_SIZE) as u64));
    for (name, comp) in [
        ("gzip", Compression::Gzip),
        ("zstd", Compression::Zstd),
        ("uncompressed", Compression::None),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(name), &comp, |b, comp| {
            b.iter(|| write_layer(&store, &files, *comp))
        });
    }
    g.finish();
}

fn sha256(c: &mut Criterion) {
    let data = binary_like(16 * 1024 * 1024, 42);
    let mut g = c.benchmark_group("sha256");
    g.sample_size(20)
        .throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("16MiB", |b| {
        b.iter(|| {
            let mut h = Hasher::new();
            for chunk in data.chunks(64 * 1024) {
                h.update(black_box(chunk));
            }
            h.finish()
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline, sha256);
criterion_main!(benches);
