//! The tokenizer section's layout, shared by the quantizer that writes it
//! and [`crate::tokenizer`] that reads it in place (from a memory map, a
//! flash slice or one buffer): fixed-width little-endian tables whose
//! positions follow from the header's counts, so nothing is parsed into
//! heap structures.
//!
//! ```text
//! header      64 bytes (TokenizerHeader)
//! ends        n_tokens × u32   end of token i's bytes in the pool (start = end of i-1)
//! sorted      n_sorted × u32   ids of the ordinary model tokens, sorted by their bytes
//! merges      n_merges × 4 u32 (left, right, merged, rank), sorted by (left, right)
//! added       n_added × u32    ids of added tokens, longest content first
//! bytes       256 × u32        token of each byte value (byte-level) or its <0xXX> byte-fallback token
//! flags       n_tokens × u8    TOKEN_* bits per token
//! pool        pool_len bytes   every token's bytes
//! ```

/// First four bytes of the section.
pub const TOKENIZER_MAGIC: [u8; 4] = *b"MTOK";
/// Bytes of the fixed header.
pub const TOKENIZER_HEADER_BYTES: usize = 64;
/// "No token" in id fields.
pub const NO_TOKEN: u32 = u32::MAX;
/// Largest vocabulary accepted (bounds every table).
pub const MAX_TOKENS: u32 = 1 << 22;

/// Token flag: a special token (BOS, EOS, chat markers); skipped when decoding text.
pub const TOKEN_SPECIAL: u8 = 1;
/// Token flag: a byte-fallback token `<0xXX>`; its pool bytes are the one raw byte.
pub const TOKEN_BYTE: u8 = 2;
/// Token flag: an added token, matched in the text before the model splits it.
pub const TOKEN_ADDED: u8 = 4;
/// Token flag: an added token that swallows the whitespace before it.
pub const TOKEN_LSTRIP: u8 = 8;
/// Token flag: an added token that swallows the whitespace after it.
pub const TOKEN_RSTRIP: u8 = 16;

/// How the model's tokens relate to text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenizerKind {
    /// GPT-2 style: BPE over UTF-8 bytes after a pre-tokenizer split
    /// (GPT-2, Llama 3, Qwen, OLMoE).
    ByteLevel = 1,
    /// SentencePiece style: BPE over characters with spaces as `▁`,
    /// unknown characters as `<0xXX>` byte tokens (Llama 2, Mistral, Mixtral).
    SentencePiece = 2,
}

/// The pre-tokenizer split rule applied before byte-level BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SplitRule {
    /// The whole text is one piece.
    None = 0,
    /// GPT-2's `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2 = 1,
    /// Llama 3's: case-insensitive contractions, one leading non-letter
    /// joined to a word, numbers in runs of up to three digits, newlines kept
    /// together.
    Llama3 = 2,
    /// Qwen2's: Llama 3's with single digits.
    Qwen2 = 3,
    /// OpenAI's o200k (gpt-oss): Llama 3's with words cut by letter case
    /// (capitals, then small letters) and `/` joining trailing newlines.
    O200k = 4,
}

/// Where a SentencePiece tokenizer puts the `▁` in front of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Prepend {
    /// Never (byte-level tokenizers, `prepend_scheme: never`).
    Never = 0,
    /// Before every non-empty piece of text, even one starting with a
    /// space (the legacy `Prepend("▁")` normalizer of Llama 2).
    Always = 1,
    /// Before every piece not already starting with a space (Metaspace
    /// `prepend_scheme: always`).
    UnlessSpace = 2,
    /// Only before the text's first piece, unless it starts with a space
    /// (Metaspace `prepend_scheme: first`).
    First = 3,
}

/// The chat format `mote chat` wraps turns in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChatTemplate {
    /// `User: ...\nAssistant:` in plain text (models without a chat format).
    Plain = 0,
    /// ChatML: `<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n` (Qwen).
    ChatMl = 1,
    /// Llama 3: `<|start_header_id|>user<|end_header_id|>\n\n...<|eot_id|>`.
    Llama3 = 2,
    /// Mistral / Mixtral / Llama 2: `[INST] ... [/INST]`.
    Inst = 3,
    /// Tulu / OLMoE: `<|user|>\n...\n<|assistant|>\n`.
    Tulu = 4,
    /// Granite: `<|start_of_role|>user<|end_of_role|>...<|end_of_text|>`.
    Granite = 5,
}

impl TokenizerKind {
    /// The kind with this code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::ByteLevel),
            2 => Some(Self::SentencePiece),
            _ => None,
        }
    }
}

impl SplitRule {
    /// The rule with this code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::None),
            1 => Some(Self::Gpt2),
            2 => Some(Self::Llama3),
            3 => Some(Self::Qwen2),
            4 => Some(Self::O200k),
            _ => None,
        }
    }
}

impl Prepend {
    /// The scheme with this code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::Never),
            1 => Some(Self::Always),
            2 => Some(Self::UnlessSpace),
            3 => Some(Self::First),
            _ => None,
        }
    }
}

impl ChatTemplate {
    /// The template with this code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::Plain),
            1 => Some(Self::ChatMl),
            2 => Some(Self::Llama3),
            3 => Some(Self::Inst),
            4 => Some(Self::Tulu),
            5 => Some(Self::Granite),
            _ => None,
        }
    }
}

/// The section's fixed header.
///
/// | offset | field | type |
/// |---|---|---|
/// | 0 | magic `MTOK` | [u8; 4] |
/// | 4 | kind | u8 ([`TokenizerKind`]) |
/// | 5 | split rule | u8 ([`SplitRule`]) |
/// | 6 | prepend | u8 ([`Prepend`]) |
/// | 7 | options | u8: 1 ignore_merges, 2 split on `▁` (Metaspace split), 4 strip one leading space when decoding, 8 fuse unknown, 16 first token's `▁` dropped when decoding, 32 digit runs cut out first, 64 single digits cut out first, 128 NFC normalization |
/// | 8 | n_tokens | u32 |
/// | 12 | n_sorted | u32 |
/// | 16 | n_merges | u32 |
/// | 20 | n_added | u32 |
/// | 24 | pool_len | u32 |
/// | 28 | unk | u32 (`NO_TOKEN`: none) |
/// | 32 | prefix | 2 × u32: added before the text by `add_special` (BOS) |
/// | 40 | suffix | 2 × u32: added after it |
/// | 48 | chat template | u8 ([`ChatTemplate`]), then 3 zero bytes |
/// | 52 | max_token_bytes | u32: longest token in the pool |
/// | 56 | reserved | 8 zero bytes |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizerHeader {
    /// Byte-level or SentencePiece.
    pub kind: TokenizerKind,
    /// Pre-tokenizer split rule (byte-level).
    pub split: SplitRule,
    /// Where `▁` is put in front of text (SentencePiece).
    pub prepend: Prepend,
    /// `OPT_*` bits.
    pub options: u8,
    /// Token ids `0..n_tokens`.
    pub n_tokens: u32,
    /// Entries of the sorted lookup table.
    pub n_sorted: u32,
    /// BPE merges.
    pub n_merges: u32,
    /// Added tokens.
    pub n_added: u32,
    /// Bytes of the pool.
    pub pool_len: u32,
    /// Unknown-token id, or `NO_TOKEN`.
    pub unk: u32,
    /// Ids put before the text when special tokens are added.
    pub prefix: [u32; 2],
    /// Ids put after it.
    pub suffix: [u32; 2],
    /// Chat format.
    pub chat: ChatTemplate,
    /// Longest token's bytes.
    pub max_token_bytes: u32,
}

/// Option: a pre-token that is itself a token is not split by merges.
pub const OPT_IGNORE_MERGES: u8 = 1;
/// Option: SentencePiece text is split into words before each `▁`.
pub const OPT_SPLIT_ON_SPACE: u8 = 2;
/// Option: decoding drops one leading space of the text.
pub const OPT_STRIP_LEADING_SPACE: u8 = 4;
/// Option: consecutive unknown characters become one unknown token.
pub const OPT_FUSE_UNK: u8 = 8;
/// Option: decoding drops every `▁` of the text's first token (the
/// Metaspace decoder) instead of turning it into a space.
pub const OPT_FIRST_TOKEN_NO_MARKS: u8 = 16;
/// Option: byte-level text is cut at digits first (the `Digits` pre-tokenizer).
pub const OPT_SPLIT_DIGITS: u8 = 32;
/// Option: ... into single digits (`individual_digits: true`).
pub const OPT_SINGLE_DIGITS: u8 = 64;
/// Option: text is put in Unicode NFC before encoding (a `NFC` normalizer).
pub const OPT_NFC: u8 = 128;

/// Byte offsets of the tables inside the section, from the header's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizerTables {
    /// `ends` table.
    pub ends: usize,
    /// `sorted` table.
    pub sorted: usize,
    /// `merges` table.
    pub merges: usize,
    /// `added` table.
    pub added: usize,
    /// `bytes` table.
    pub bytes: usize,
    /// `flags` table.
    pub flags: usize,
    /// The pool.
    pub pool: usize,
    /// Total bytes of the section.
    pub len: usize,
}

impl TokenizerHeader {
    /// The header's 64 bytes.
    pub fn encode(&self) -> [u8; TOKENIZER_HEADER_BYTES] {
        let mut b = [0u8; TOKENIZER_HEADER_BYTES];
        b[0..4].copy_from_slice(&TOKENIZER_MAGIC);
        b[4] = self.kind as u8;
        b[5] = self.split as u8;
        b[6] = self.prepend as u8;
        b[7] = self.options;
        let words = [
            self.n_tokens,
            self.n_sorted,
            self.n_merges,
            self.n_added,
            self.pool_len,
            self.unk,
            self.prefix[0],
            self.prefix[1],
            self.suffix[0],
            self.suffix[1],
        ];
        for (i, w) in words.iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        b[48] = self.chat as u8;
        b[52..56].copy_from_slice(&self.max_token_bytes.to_le_bytes());
        b
    }

    /// Reads a header; `Err` names the first bad field.
    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < TOKENIZER_HEADER_BYTES {
            return Err("section is shorter than its 64-byte header");
        }
        if b[0..4] != TOKENIZER_MAGIC {
            return Err("bad magic (expected MTOK)");
        }
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = TokenizerHeader {
            kind: TokenizerKind::from_code(b[4]).ok_or("unknown tokenizer kind")?,
            split: SplitRule::from_code(b[5]).ok_or("unknown split rule")?,
            prepend: Prepend::from_code(b[6]).ok_or("unknown prepend scheme")?,
            options: b[7],
            n_tokens: w(8),
            n_sorted: w(12),
            n_merges: w(16),
            n_added: w(20),
            pool_len: w(24),
            unk: w(28),
            prefix: [w(32), w(36)],
            suffix: [w(40), w(44)],
            chat: ChatTemplate::from_code(b[48]).ok_or("unknown chat template")?,
            max_token_bytes: w(52),
        };
        if h.n_tokens == 0 || h.n_tokens > MAX_TOKENS {
            return Err("token count is 0 or too large");
        }
        if h.n_sorted > h.n_tokens || h.n_added > h.n_tokens || h.n_merges > MAX_TOKENS {
            return Err("table count is larger than the vocabulary");
        }
        Ok(h)
    }

    /// Where each table starts (all counts are bounded by [`MAX_TOKENS`],
    /// so the sums cannot overflow).
    pub fn tables(&self) -> TokenizerTables {
        let ends = TOKENIZER_HEADER_BYTES;
        let sorted = ends + 4 * self.n_tokens as usize;
        let merges = sorted + 4 * self.n_sorted as usize;
        let added = merges + 16 * self.n_merges as usize;
        let bytes = added + 4 * self.n_added as usize;
        let flags = bytes + 4 * 256;
        let pool = flags + self.n_tokens as usize;
        TokenizerTables {
            ends,
            sorted,
            merges,
            added,
            bytes,
            flags,
            pool,
            len: pool + self.pool_len as usize,
        }
    }
}
