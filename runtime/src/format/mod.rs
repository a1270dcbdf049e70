//! The `.mote` file, both ways: the runtime parses it and the quantizer
//! writes it through the same definitions, so reader and writer cannot drift.
//! `docs/format.md` is the prose specification of what is here.
//!
//! ```text
//! 0      preamble (128 bytes): magic, version, offsets and CRCs of the sections
//! 128    config: postcard-encoded ModelConfig (at most 4096 bytes)
//! 64·k   directory: tensor_count records of 64 bytes, sorted by (layer, kind, expert)
//! 64·k   tokenizer (optional): vocabulary, merges, added tokens (format::tokenizer)
//! 4096·k data: tensors 64-byte aligned; each expert's gate, up, down contiguous,
//!        the group starting on a 4096-byte boundary (one read pages one expert in)
//! ```

pub mod config;
pub mod tensor;
pub mod tokenizer;

use crate::error::Error;

/// First eight bytes of every `.mote` file (PNG-style: catches text-mode mangling).
pub const MAGIC: [u8; 8] = *b"MOTE\r\n\x1a\n";
/// The format version this build writes.
pub const VERSION: u32 = 4;
/// The oldest format version this build reads (format 3 lacks the config
/// fields format 4 appended; they take their format-3 meaning).
pub const OLDEST_VERSION: u32 = 3;
/// Size of the preamble in bytes.
pub const PREAMBLE_BYTES: usize = 128;
/// Largest config section accepted; bounds the stack buffer it is decoded from.
pub const MAX_CONFIG_BYTES: usize = 4096;
/// Alignment of every tensor's first byte.
pub const TENSOR_ALIGN: u64 = 64;
/// Alignment of each expert's group of matrices and of the data region.
pub const EXPERT_ALIGN: u64 = 4096;

/// The fixed preamble: where each section is and the CRC32 of the small ones.
///
/// | offset | field | type |
/// |---|---|---|
/// | 0 | magic `MOTE\r\n\x1a\n` | [u8; 8] |
/// | 8 | version | u32 |
/// | 12 | preamble length (128) | u32 |
/// | 16 | config offset | u64 |
/// | 24 | config length | u32 |
/// | 28 | config CRC32 | u32 |
/// | 32 | directory offset | u64 |
/// | 40 | tensor count | u32 |
/// | 44 | directory CRC32 | u32 |
/// | 48 | data offset | u64 |
/// | 56 | data length | u64 |
/// | 64 | tokenizer offset | u64 (0: no tokenizer) |
/// | 72 | tokenizer length | u64 (0: no tokenizer) |
/// | 80 | tokenizer CRC32 | u32 |
/// | 84 | reserved | 44 zero bytes |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// Format version.
    pub version: u32,
    /// Offset of the config section.
    pub config_offset: u64,
    /// Length of the config section in bytes.
    pub config_len: u32,
    /// CRC32 of the config section.
    pub config_crc: u32,
    /// Offset of the tensor directory.
    pub directory_offset: u64,
    /// Number of 64-byte records in the directory.
    pub tensor_count: u32,
    /// CRC32 of the whole directory.
    pub directory_crc: u32,
    /// Offset of the data region.
    pub data_offset: u64,
    /// Length of the data region in bytes.
    pub data_len: u64,
    /// Offset of the tokenizer section.
    pub tokenizer_offset: u64,
    /// Length of the tokenizer section in bytes (0: the file has none).
    pub tokenizer_len: u64,
    /// CRC32 of the tokenizer section.
    pub tokenizer_crc: u32,
}

impl Preamble {
    /// Writes the preamble's 64 bytes.
    pub fn encode(&self) -> [u8; PREAMBLE_BYTES] {
        let mut b = [0u8; PREAMBLE_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(PREAMBLE_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.config_offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.config_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.config_crc.to_le_bytes());
        b[32..40].copy_from_slice(&self.directory_offset.to_le_bytes());
        b[40..44].copy_from_slice(&self.tensor_count.to_le_bytes());
        b[44..48].copy_from_slice(&self.directory_crc.to_le_bytes());
        b[48..56].copy_from_slice(&self.data_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.data_len.to_le_bytes());
        b[64..72].copy_from_slice(&self.tokenizer_offset.to_le_bytes());
        b[72..80].copy_from_slice(&self.tokenizer_len.to_le_bytes());
        b[80..84].copy_from_slice(&self.tokenizer_crc.to_le_bytes());
        b
    }

    /// Reads a preamble: magic first, then version, then the fixed length.
    /// Section ranges are checked against the file by [`crate::Model::open`].
    pub fn decode(b: &[u8; PREAMBLE_BYTES]) -> Result<Self, Error> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[0..8]);
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = u32_at(8);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        if u32_at(12) as usize != PREAMBLE_BYTES {
            return Err(Error::BadPreamble {
                reason: "preamble length is not 128",
            });
        }
        Ok(Preamble {
            version,
            config_offset: u64_at(16),
            config_len: u32_at(24),
            config_crc: u32_at(28),
            directory_offset: u64_at(32),
            tensor_count: u32_at(40),
            directory_crc: u32_at(44),
            data_offset: u64_at(48),
            data_len: u64_at(56),
            tokenizer_offset: u64_at(64),
            tokenizer_len: u64_at(72),
            tokenizer_crc: u32_at(80),
        })
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two).
pub const fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_round_trips() {
        let p = Preamble {
            version: VERSION,
            config_offset: 64,
            config_len: 100,
            config_crc: 1,
            directory_offset: 192,
            tensor_count: 9,
            directory_crc: 2,
            data_offset: 4096,
            data_len: 12345,
            tokenizer_offset: 1024,
            tokenizer_len: 77,
            tokenizer_crc: 3,
        };
        assert_eq!(Preamble::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn preamble_checks_magic_then_version() {
        let p = Preamble {
            version: VERSION,
            config_offset: 64,
            config_len: 1,
            config_crc: 0,
            directory_offset: 128,
            tensor_count: 0,
            directory_crc: 0,
            data_offset: 4096,
            data_len: 0,
            tokenizer_offset: 0,
            tokenizer_len: 0,
            tokenizer_crc: 0,
        };
        let mut b = p.encode();
        b[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        assert_eq!(
            Preamble::decode(&b),
            Err(Error::UnsupportedVersion {
                found: VERSION + 1,
                supported: VERSION
            })
        );
        b[0] = b'X';
        assert!(matches!(Preamble::decode(&b), Err(Error::BadMagic { .. })));
    }
}
