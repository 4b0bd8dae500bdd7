//! The registry-sources hints: concurrent writers, the old file, the caps.

use layer_cache::sources::{RegistrySources, MAX_BLOBS, MAX_REPOS_PER_BLOB};
use layer_cache::{Digest, Store};

fn digest(i: usize) -> Digest {
    Digest::of(i.to_string().as_bytes())
}

#[test]
fn two_writers_adding_at_once_lose_nothing() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let store = Store::open(tmp.path().join("root")).expect("open");
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (store, barrier) = (&store, &barrier);
            s.spawn(move || {
                for round in 0..20 {
                    // Both load before either saves: each save must merge the other's.
                    let mut h = RegistrySources::load(store);
                    barrier.wait();
                    for i in 0..5 {
                        h.add(&digest(round * 10 + i), &format!("reg:5000/t{t}"));
                    }
                    h.save().expect("save");
                    barrier.wait();
                }
            });
        }
    });
    let h = RegistrySources::load(&store);
    for round in 0..20 {
        for i in 0..5 {
            assert_eq!(
                h.repos_on(&digest(round * 10 + i), "reg:5000"),
                ["t0", "t1"],
                "round {round} blob {i}"
            );
        }
    }
    assert!(h.repos_on(&digest(0), "other:5000").is_empty());
}

#[test]
fn the_unversioned_file_is_read_once_then_replaced() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let store = Store::open(tmp.path().join("root")).expect("open");
    let old = store.root().join("registry-sources.json");
    std::fs::write(
        &old,
        format!(
            r#"{{"{}":["reg:5000/a","reg:5000/b","docker.io/library/x"]}}"#,
            digest(1)
        ),
    )
    .expect("old");
    let mut h = RegistrySources::load(&store);
    assert_eq!(h.repos_on(&digest(1), "reg:5000"), ["a", "b"]);
    assert_eq!(h.repos_on(&digest(1), "docker.io"), ["library/x"]);
    h.add(&digest(2), "reg:5000/c");
    h.save().expect("save");
    assert!(!old.exists());
    assert!(store.root().join("registry-sources-v1.json").is_file());
    let h = RegistrySources::load(&store);
    assert_eq!(h.repos_on(&digest(1), "reg:5000"), ["a", "b"]);
    assert_eq!(h.repos_on(&digest(2), "reg:5000"), ["c"]);
}

#[test]
fn the_file_keeps_the_most_recent_blobs_and_repositories() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let store = Store::open(tmp.path().join("root")).expect("open");
    let mut h = RegistrySources::load(&store);
    for i in 0..MAX_REPOS_PER_BLOB + 3 {
        h.add(&digest(0), &format!("reg:5000/r{i:02}"));
    }
    for i in 1..=MAX_BLOBS + 10 {
        h.add(&digest(i), "reg:5000/many");
    }
    // Used again: the oldest blob becomes the newest.
    h.add(&digest(1), "reg:5000/again");
    h.save().expect("save");
    let h = RegistrySources::load(&store);
    let kept = h.repos_on(&digest(0), "reg:5000");
    assert!(kept.is_empty(), "{kept:?}");
    assert_eq!(h.repos_on(&digest(1), "reg:5000"), ["again", "many"]);
    for i in 2..=11 {
        assert!(h.repos_on(&digest(i), "reg:5000").is_empty(), "{i}");
    }
    assert_eq!(h.repos_on(&digest(12), "reg:5000"), ["many"]);
    assert_eq!(h.repos_on(&digest(MAX_BLOBS + 10), "reg:5000"), ["many"]);
    let size = std::fs::metadata(store.root().join("registry-sources-v1.json"))
        .expect("file")
        .len();
    assert!(size < 2 << 20, "{size}");

    let mut h = RegistrySources::load(&store);
    for i in 0..MAX_REPOS_PER_BLOB + 3 {
        h.add(&digest(5), &format!("reg:5000/r{i:02}"));
    }
    h.save().expect("save");
    let kept = RegistrySources::load(&store).repos_on(&digest(5), "reg:5000");
    let want: Vec<String> = (3..MAX_REPOS_PER_BLOB + 3)
        .map(|i| format!("r{i:02}"))
        .collect();
    assert_eq!(kept, want);
}
