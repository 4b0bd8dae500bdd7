//! Context hashing: the sha256 of every file of a 2,000-file context (40 folders), cold
//! (an empty stat cache: every file is read) and warm (a saved stat cache: only stat).
//! A no-op rebuild is bounded by the warm figure.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use layer_cache::Store;

const DIRS: usize = 40;
const FILES: usize = 2_000;

fn make_context(root: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..FILES {
        let dir = root.join(format!("src/d{:02}", i % DIRS));
        std::fs::create_dir_all(&dir).unwrap();
        let body = format!("file {i}\n").repeat(2 + i * 37 % 60);
        let path = dir.join(format!("f{i:04}.txt"));
        std::fs::write(&path, body).unwrap();
        // older than the cache, so the racy-file rule does not force a re-read
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, root, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, p));
        }
    }
}

/// Stats and hashes every file of the context through the store's stat cache.
fn hash_context(store: &Store, ctx: &Path) -> u64 {
    let mut cache = store.stat_cache(ctx);
    let mut files = Vec::new();
    walk(ctx, ctx, &mut files);
    for (rel, path) in &files {
        let md = std::fs::symlink_metadata(path).unwrap();
        std::hint::black_box(cache.file_entry(rel, path, &md, || Ok(Vec::new())).unwrap());
    }
    cache.hashed()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    make_context(&ctx);
    let ctx = ctx.canonicalize().unwrap();
    let mut g = c.benchmark_group("context_hash");
    g.throughput(Throughput::Elements(FILES as u64));
    g.bench_function("cold", |b| {
        b.iter(|| {
            let store = Store::open(dir.path().join("cold-store")).unwrap();
            assert_eq!(hash_context(&store, &ctx), FILES as u64);
        })
    });
    let warm = Store::open(dir.path().join("warm-store")).unwrap();
    let mut cache = warm.stat_cache(&ctx);
    let mut files = Vec::new();
    walk(&ctx, &ctx, &mut files);
    for (rel, path) in &files {
        let md = std::fs::symlink_metadata(path).unwrap();
        cache.file_entry(rel, path, &md, || Ok(Vec::new())).unwrap();
    }
    cache.save(&warm).unwrap();
    g.bench_function("warm", |b| {
        b.iter(|| assert_eq!(hash_context(&warm, &ctx), 0))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
