//! Parallel gzip, as pigz does it: the input is cut into fixed blocks, each block is
//! deflated on a worker with the previous 32 KiB as its dictionary and ends in a sync
//! flush, and the pieces are written in order as one gzip member. The output depends
//! only on the level and the block size, never on the thread count, so layers stay
//! reproducible across machines.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// pigz's default block size.
const BLOCK: usize = 128 * 1024;
const DICT: usize = 32 * 1024;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

type Done = (u64, io::Result<Vec<u8>>);

struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: u32) -> Pool {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, results) = mpsc::channel::<Done>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let (rx, tx) = (Arc::clone(&rx), tx.clone());
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let out = deflate_block(level, &job.dict, &job.data, job.last);
                    if tx.send((job.seq, out)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(jobs),
            results,
            workers,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the job channel ends the workers.
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A gzip writer that compresses on all cores.
pub struct ParGzEncoder<W: Write> {
    inner: Option<W>,
    level: u32,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: Crc,
    pool: Option<Pool>,
    max_in_flight: usize,
    next_seq: u64,
    write_seq: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    in_flight: usize,
}

impl<W: Write> ParGzEncoder<W> {
    /// `threads` workers (1 compresses inline on the caller's thread).
    pub fn new(mut inner: W, level: u32, threads: usize) -> io::Result<ParGzEncoder<W>> {
        let level = level.min(9);
        // Header: no name, no mtime, OS unknown, as flate2 writes it.
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        let threads = threads.max(1);
        Ok(ParGzEncoder {
            inner: Some(inner),
            level,
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: Crc::new(),
            pool: (threads > 1).then(|| Pool::new(threads, level)),
            max_in_flight: threads * 2,
            next_seq: 0,
            write_seq: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
        })
    }

    fn inner(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    /// Hands the current block to a worker (or deflates it here), keeping its tail as
    /// the next block's dictionary.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let tail_from = data.len().saturating_sub(DICT);
        let next_dict = if data.len() >= DICT {
            data[tail_from..].to_vec()
        } else {
            let mut d = std::mem::take(&mut self.dict);
            d.extend_from_slice(&data);
            let excess = d.len().saturating_sub(DICT);
            d.drain(..excess);
            d
        };
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let seq = self.next_seq;
        self.next_seq += 1;
        match &self.pool {
            None => {
                let out = deflate_block(self.level, &dict, &data, last)?;
                self.inner()?.write_all(&out)?;
                self.write_seq += 1;
            }
            Some(pool) => {
                let job = Job {
                    seq,
                    data,
                    dict,
                    last,
                };
                pool.jobs
                    .as_ref()
                    .ok_or_else(|| io::Error::other("gzip workers stopped"))?
                    .send(job)
                    .map_err(|_| io::Error::other("gzip workers stopped"))?;
                self.in_flight += 1;
                while self.in_flight >= self.max_in_flight {
                    self.collect_one()?;
                }
            }
        }
        Ok(())
    }

    /// Waits for one finished block and writes whatever is now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| io::Error::other("no gzip workers"))?;
        let (seq, out) = pool
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.in_flight -= 1;
        self.pending.insert(seq, out?);
        while let Some(out) = self.pending.remove(&self.write_seq) {
            self.inner()?.write_all(&out)?;
            self.write_seq += 1;
        }
        Ok(())
    }

    /// Writes the last block and the trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        let (crc, len) = (self.crc.sum(), self.crc.amount());
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        inner.write_all(&crc.to_le_bytes())?;
        inner.write_all(&len.to_le_bytes())?;
        Ok(inner)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are fixed so the output is deterministic; flushing only the inner writer.
        self.inner()?.flush()
    }
}

/// Raw deflate of one block; a sync flush ends every block but the last, which ends
/// the stream.
/// Bytes of each of a block's three samples deflated at level 1 to judge whether
/// it compresses at all.
const TRIAL: usize = 4 * 1024;

/// Whether `data` looks incompressible (random or already compressed): its
/// first, middle and last TRIAL bytes each fail to shrink at level 1. Such a block
/// is stored, not searched for matches at full effort: the output is as large
/// either way.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < 4 * TRIAL {
        return false;
    }
    let mid = data.len() / 2;
    let samples = [
        &data[..TRIAL],
        &data[mid..mid + TRIAL],
        &data[data.len() - TRIAL..],
    ];
    let mut out = Vec::with_capacity(TRIAL + 1024);
    samples.iter().all(|sample| {
        out.clear();
        let mut c = Compress::new(Compression::new(1), false);
        c.compress_vec(sample, &mut out, FlushCompress::Finish)
            .is_ok()
            && c.total_in() == TRIAL as u64
            && out.len() >= TRIAL
    })
}

fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    // The choice depends on the data alone, so the output stays reproducible.
    let level = if level > 1 && incompressible(data) {
        0
    } else {
        level
    };
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() == data.len() as u64;
        match status {
            Status::StreamEnd => break,
            // A flush is complete once deflate stops short of filling the buffer.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible with long-range repeats, so dictionaries matter.
        let mut v = Vec::with_capacity(len);
        let mut x: u32 = 12345;
        while v.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let word = format!("line {} of {}\n", x % 977, x % 13);
            v.extend_from_slice(word.as_bytes());
        }
        v.truncate(len);
        v
    }

    fn gz(data: &[u8], threads: usize, level: u32) -> Vec<u8> {
        let mut w = ParGzEncoder::new(Vec::new(), level, threads).unwrap();
        // Odd write sizes cross block boundaries.
        for chunk in data.chunks(7919) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_does_not_depend_on_threads() {
        for len in [0, 1, 100, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 1_000_000] {
            let data = sample(len);
            for level in [0, 1, 6, 9] {
                let one = gz(&data, 1, level);
                let four = gz(&data, 4, level);
                assert_eq!(one, four, "len {len} level {level}");
                let mut back = Vec::new();
                flate2::read::GzDecoder::new(&one[..])
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back, data, "len {len} level {level}");
            }
        }
    }

    #[test]
    fn incompressible_blocks_are_stored_and_mixed_data_round_trips() {
        // Random bytes, then text: stored blocks, then compressed ones, in one member.
        let mut data = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while data.len() < 3 * BLOCK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        assert!(incompressible(&data[..BLOCK]));
        assert!(!incompressible(&sample(BLOCK)));
        data.extend_from_slice(&sample(2 * BLOCK + 17));
        let one = gz(&data, 1, 6);
        assert_eq!(one, gz(&data, 3, 6));
        // Stored: no bigger than the input plus block headers.
        assert!(one.len() < 3 * BLOCK + 2 * BLOCK / 3, "{}", one.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn compresses_about_as_well_as_one_stream() {
        let data = sample(2_000_000);
        let ours = gz(&data, 2, 6).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        assert!(ours * 100 <= single * 102, "{ours} vs {single}");
    }

    #[test]
    fn gzip_tool_accepts_the_stream() {
        let data = sample(600_000);
        let out = gz(&data, 3, 6);
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&out));
        let result = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(result.status.success());
        assert_eq!(result.stdout, data);
    }
}
