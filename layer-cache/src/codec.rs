//! One sniff-and-decompress for every stream that may be compressed: layers,
//! ADD's local archives and a build context on standard input. The magic numbers
//! are those of containerd's and moby's `DetectCompression`; each caller says
//! which codecs it accepts (a layer is gzip, zstd or plain; an archive may also
//! be bzip2 or xz), and a head no accepted codec claims is read as is.

use std::io::{self, BufRead, Read};

/// What a stream's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The codecs of an image layer.
pub const LAYER: &[Codec] = &[Codec::Gzip, Codec::Zstd];

/// A layer blob's compression, sniffed from its first bytes (at least 4).
pub fn layer_compression(head: &[u8]) -> crate::image::Compression {
    use crate::image::Compression;
    match Codec::sniff_among(head, LAYER) {
        Codec::Gzip => Compression::Gzip,
        Codec::Zstd => Compression::Zstd,
        _ => Compression::None,
    }
}

/// The codecs Docker's `DecompressStream` reads (ADD archives, `docker build -`).
pub const ARCHIVE: &[Codec] = &[Codec::Gzip, Codec::Bzip2, Codec::Xz, Codec::Zstd];

/// Bytes [`Codec::sniff`] needs to tell every codec apart.
pub const MAGIC_LEN: usize = 6;

impl Codec {
    /// The codec whose magic `head` starts with; plain when none does.
    pub fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&[0x1f, 0x8b, 0x08]) {
            Codec::Gzip
        } else if head.starts_with(b"BZh") {
            Codec::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Codec::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else {
            Codec::Plain
        }
    }

    /// [`Codec::sniff`], reading any codec not in `accept` as plain.
    pub fn sniff_among(head: &[u8], accept: &[Codec]) -> Codec {
        match Codec::sniff(head) {
            c if accept.contains(&c) => c,
            _ => Codec::Plain,
        }
    }

    /// A reader of `reader`'s content decoded by this codec (multi-member gzip,
    /// bzip2 and xz streams are read to their end, as `gzip -d` does).
    pub fn decoder<'a, R: BufRead + Send + 'a>(
        self,
        reader: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Codec::Plain => Box::new(reader),
            Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            Codec::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
            Codec::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(reader)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
        })
    }
}

/// Reads until `buf` is full or the stream ends; the count read.
pub fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The stream that [`peek`] read from: its head again, then the rest.
pub type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads up to `n` bytes (fewer only at the end of input) and returns them with
/// a reader of the whole stream, those bytes included.
pub fn peek<R: Read>(mut reader: R, n: usize) -> io::Result<(Vec<u8>, Peeked<R>)> {
    let mut head = vec![0u8; n];
    // Read the head ourselves: one `read` may return fewer bytes than asked.
    let got = read_up_to(&mut reader, &mut head)?;
    head.truncate(got);
    Ok((head.clone(), io::Cursor::new(head).chain(reader)))
}

/// Sniffs `reader`'s head among `accept` and returns the codec with a reader of
/// the decoded stream.
pub fn decompress<'a, R: BufRead + Send + 'a>(
    reader: R,
    accept: &[Codec],
) -> io::Result<(Codec, Box<dyn Read + Send + 'a>)> {
    let (head, stream) = peek(reader, MAGIC_LEN)?;
    let codec = Codec::sniff_among(&head, accept);
    Ok((codec, codec.decoder(stream)?))
}

/// Whether a 512-byte block is a tar header, as Go's archive/tar decides: not all
/// zeroes (that is the end of an archive), and its checksum field matches the
/// block's signed or unsigned byte sum (old v7 tars have no magic to go by).
pub fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block[..512].iter().all(|b| *b == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(want) = i64::from_str_radix(field.trim_matches([' ', '\0']), 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, b) in block[..512].iter().enumerate() {
        // The checksum field counts as spaces.
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || want == signed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wrapped(data: &[u8]) -> Vec<(Codec, Vec<u8>)> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(data).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(data).unwrap();
        vec![
            (Codec::Plain, data.to_vec()),
            (Codec::Gzip, gz.finish().unwrap()),
            (Codec::Bzip2, bz.finish().unwrap()),
            (Codec::Xz, xz.finish().unwrap()),
            (Codec::Zstd, zstd::encode_all(data, 3).unwrap()),
        ]
    }

    #[test]
    fn decompresses_every_archive_codec() {
        let data = b"the same bytes in every wrapper".repeat(50);
        for (codec, bytes) in wrapped(&data) {
            assert_eq!(Codec::sniff(&bytes), codec);
            let (got, mut r) = decompress(&bytes[..], ARCHIVE).unwrap();
            assert_eq!(got, codec);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{codec:?}");
        }
    }

    #[test]
    fn codecs_not_accepted_are_read_as_plain() {
        let data = b"layer bytes".repeat(20);
        for (codec, bytes) in wrapped(&data) {
            let (got, mut r) = decompress(&bytes[..], LAYER).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            drop(r);
            if LAYER.contains(&codec) {
                assert_eq!((got, out), (codec, data.clone()));
            } else {
                assert_eq!((got, out), (Codec::Plain, bytes));
            }
        }
    }

    #[test]
    fn short_input_passes_through() {
        let (codec, mut r) = decompress(&b"ab"[..], ARCHIVE).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!((codec, &out[..]), (Codec::Plain, &b"ab"[..]));
        assert_eq!(Codec::sniff(b"BZh91AY"), Codec::Bzip2);
        assert_eq!(Codec::sniff(b"FROM x"), Codec::Plain);
    }

    #[test]
    fn recognises_tar_headers() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "x", io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(is_tar_header(&bytes[..512]));
        assert!(!is_tar_header(&[b'F'; 512]));
        assert!(!is_tar_header(&[0; 512]));
        assert!(!is_tar_header(&bytes[..511]));
        // A byte over 0x7f: Go accepts the signed sum some old tars wrote.
        let mut block = [0u8; 512];
        block[0] = 0xff;
        block[257..262].copy_from_slice(b"ustar");
        let signed: i64 = block
            .iter()
            .enumerate()
            .map(|(i, b)| match (148..156).contains(&i) {
                true => 32,
                false => i64::from(*b as i8),
            })
            .sum();
        block[148..155].copy_from_slice(format!("{signed:06o}\0").as_bytes());
        assert!(is_tar_header(&block));
    }
}
