//! Text to token ids and back, without the heap.
//!
//! A [`Tokenizer`] is a checked view of the `.mote` file's tokenizer section
//! (layout in [`crate::format::tokenizer`]), borrowed from wherever those
//! bytes live: a memory map, a flash slice, one buffer read at load. It
//! encodes the two kinds of BPE tokenizers the supported families use:
//!
//! - **byte-level** (GPT-2, Llama 3, Qwen, OLMoE): the text is cut into
//!   pieces by the family's split rule ([`split`]), each piece's UTF-8
//!   bytes start as byte tokens and are merged;
//! - **SentencePiece** (Llama 2, Mistral, Mixtral): spaces become `▁`, a
//!   `▁` is put in front, characters start as tokens (unknown ones as
//!   `<0xXX>` byte tokens) and are merged.
//!
//! Both merge by rank, lowest first and leftmost among equals, exactly as
//! `tokenizers` does. Added tokens (`<|im_start|>`, `<s>`, ...) are found
//! in the text first and never split. The caller's output buffer is also
//! the merge workspace, so encoding needs `text.len() + 4` slots at most
//! ([`Tokenizer::max_tokens`]). Decoding streams: [`TextDecoder`] holds a
//! partial UTF-8 character until its last byte arrives.

mod cases;
mod chat;
mod letters;
mod nfc;
mod nfc_tables;
mod split;

use crate::error::Error;
use crate::format::tokenizer::{
    ChatTemplate, Prepend, TokenizerHeader, TokenizerKind, TokenizerTables, NO_TOKEN,
    OPT_FIRST_TOKEN_NO_MARKS, OPT_FUSE_UNK, OPT_IGNORE_MERGES, OPT_NFC, OPT_SINGLE_DIGITS,
    OPT_SPLIT_DIGITS, OPT_SPLIT_ON_SPACE, OPT_STRIP_LEADING_SPACE, TOKEN_ADDED, TOKEN_BYTE,
    TOKEN_LSTRIP, TOKEN_RSTRIP, TOKEN_SPECIAL,
};

/// SentencePiece's space marker, U+2581.
const SPACE_MARK: &str = "\u{2581}";

/// A tokenizer read in place from its section's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Tokenizer<'a> {
    bytes: &'a [u8],
    header: TokenizerHeader,
    tables: TokenizerTables,
    /// SentencePiece only: no token has a `▁` right after another
    /// character, so no merge crosses the start of a run of `▁` and text can
    /// be merged word by word (linear in the text instead of quadratic).
    words_independent: bool,
}

fn bad(reason: &'static str) -> Error {
    Error::BadTokenizer { reason }
}

impl<'a> Tokenizer<'a> {
    /// Checks the section: header, table sizes against its length, every
    /// id in range, token ends monotone, merges and the lookup table
    /// sorted. After this, encoding and decoding cannot index out of
    /// bounds whatever the bytes were.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let header = TokenizerHeader::decode(bytes).map_err(bad)?;
        let tables = header.tables();
        if tables.len != bytes.len() {
            return Err(bad("section length disagrees with its table counts"));
        }
        let mut t = Tokenizer {
            bytes,
            header,
            tables,
            words_independent: false,
        };
        let n = header.n_tokens;
        let id_ok = |id: u32| id == NO_TOKEN || id < n;
        let mut prev = 0u32;
        let mut longest = 0u32;
        for i in 0..n {
            let end = t.word(tables.ends, i as usize);
            if end < prev || end > header.pool_len {
                return Err(bad("token ends are not increasing inside the pool"));
            }
            longest = longest.max(end - prev);
            prev = end;
        }
        if longest != header.max_token_bytes {
            return Err(bad("max_token_bytes is not the longest token's length"));
        }
        let ids = [header.unk, header.prefix[0], header.prefix[1]];
        if !ids.iter().chain(header.suffix.iter()).all(|&id| id_ok(id)) {
            return Err(bad("a special token id is out of range"));
        }
        for i in 0..header.n_sorted as usize {
            let id = t.word(tables.sorted, i);
            if id >= n {
                return Err(bad("lookup table holds an id out of range"));
            }
            if i > 0 && t.token_bytes(t.word(tables.sorted, i - 1)) > t.token_bytes(id) {
                return Err(bad("lookup table is not sorted"));
            }
        }
        let mut last = (0u32, 0u32);
        for i in 0..header.n_merges as usize {
            let [l, r, m, _rank] = t.merge_at(i);
            if l >= n || r >= n || m >= n {
                return Err(bad("a merge names a token out of range"));
            }
            if i > 0 && (l, r) <= last {
                return Err(bad("merges are not sorted by pair"));
            }
            last = (l, r);
        }
        for i in 0..header.n_added as usize {
            let id = t.word(tables.added, i);
            if id >= n || t.token_bytes(id).is_empty() {
                return Err(bad("an added token is out of range or empty"));
            }
        }
        if !(0..256).all(|b| id_ok(t.word(tables.bytes, b))) {
            return Err(bad("a byte token is out of range"));
        }
        let mark = SPACE_MARK.as_bytes();
        t.words_independent = header.kind == TokenizerKind::SentencePiece
            && (0..n).all(|id| {
                let b = t.token_bytes(id);
                (1..b.len()).all(|i| {
                    !b[i..].starts_with(mark) || (i >= mark.len() && b[..i].ends_with(mark))
                })
            });
        Ok(t)
    }

    /// The `i`-th u32 of the table at `at` (in range after `parse`'s size check).
    fn word(&self, at: usize, i: usize) -> u32 {
        let o = at + 4 * i;
        let b = &self.bytes[o..o + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn merge_at(&self, i: usize) -> [u32; 4] {
        let w = |k| self.word(self.tables.merges, 4 * i + k);
        [w(0), w(1), w(2), w(3)]
    }

    fn flags(&self, id: u32) -> u8 {
        self.bytes[self.tables.flags + id as usize]
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> u32 {
        self.header.n_tokens
    }

    /// Byte-level or SentencePiece.
    pub fn kind(&self) -> TokenizerKind {
        self.header.kind
    }

    /// The chat format for `mote chat`.
    pub fn chat_template(&self) -> ChatTemplate {
        self.header.chat
    }

    /// The ids `encode` puts before the text when asked to add special tokens.
    pub fn prefix(&self) -> impl Iterator<Item = u32> + '_ {
        self.header.prefix.into_iter().filter(|&id| id != NO_TOKEN)
    }

    /// The bytes of token `id` (empty for an unknown id). For byte-level
    /// tokens these are the raw bytes; SentencePiece pieces keep their `▁`;
    /// a byte-fallback token's is its one byte.
    pub fn token_bytes(&self, id: u32) -> &'a [u8] {
        if id >= self.header.n_tokens {
            return &[];
        }
        let end = self.word(self.tables.ends, id as usize) as usize;
        let start = match id {
            0 => 0,
            _ => self.word(self.tables.ends, id as usize - 1) as usize,
        };
        let pool = self.tables.pool;
        &self.bytes[pool + start..pool + end]
    }

    /// Whether `id` is a special token (skipped when decoding).
    pub fn is_special(&self, id: u32) -> bool {
        id < self.header.n_tokens && self.flags(id) & TOKEN_SPECIAL != 0
    }

    /// The id of the token whose bytes are `text`, among the model's
    /// ordinary tokens, or among the added tokens.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.lookup(text.as_bytes()).or_else(|| {
            (0..self.header.n_added as usize)
                .map(|i| self.word(self.tables.added, i))
                .find(|&id| self.token_bytes(id) == text.as_bytes())
        })
    }

    /// Binary search of the sorted table.
    fn lookup(&self, key: &[u8]) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.header.n_sorted as usize);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let id = self.word(self.tables.sorted, mid);
            match self.token_bytes(id).cmp(key) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Some(id),
            }
        }
        None
    }

    /// The merge of the pair `(l, r)`: its rank and the merged token.
    fn merge(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        let (mut lo, mut hi) = (0usize, self.header.n_merges as usize);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let [ml, mr, m, rank] = self.merge_at(mid);
            match (ml, mr).cmp(&(l, r)) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Some((rank, m)),
            }
        }
        None
    }

    /// Output slots `encode` may need for a text of `text_len` bytes (with
    /// an NFC normalizer, also room for the normalized text). SentencePiece
    /// writes each space as the 3-byte `▁` and may put one in front, and
    /// byte fallback can give a token a byte.
    pub fn max_tokens(&self, text_len: usize) -> usize {
        let bytes = match self.header.kind {
            TokenizerKind::SentencePiece => 3 * text_len + 3,
            _ => text_len,
        };
        match self.header.options & OPT_NFC {
            0 => bytes + 5,
            _ => 3 * bytes + 5 + nfc_scratch_slots(text_len),
        }
    }

    /// Bytes of output buffer a [`TextDecoder`] step may need.
    pub fn max_decoded_bytes(&self) -> usize {
        3 * (self.header.max_token_bytes as usize + 4)
    }

    /// Encodes `text` into `out`, returning the number of ids written. With
    /// `add_special` the tokenizer's BOS/EOS template is applied (as
    /// `tokenizers`' `add_special_tokens=True`). Fails only if `out` is
    /// smaller than [`Tokenizer::max_tokens`] and the text needs more.
    pub fn encode(&self, text: &str, add_special: bool, out: &mut [u32]) -> Result<usize, Error> {
        if self.header.options & OPT_NFC == 0 || nfc::is_nfc_quick(text) {
            return self.encode_normalized(text, add_special, out);
        }
        // NFC can grow text threefold; the normalized text goes at the end
        // of `out`, the ids at its start.
        let needed = self.max_tokens(text.len());
        let provided = out.len();
        if provided < needed {
            return Err(Error::BufferTooSmall {
                what: "token ids",
                needed,
                provided,
            });
        }
        let (ids, scratch) = out.split_at_mut(provided - nfc_scratch_slots(text.len()));
        // SAFETY: `scratch` is an exclusively borrowed, initialised [u32];
        // viewing its memory as 4x as many u8 is sound (u8 has alignment 1
        // and every bit pattern is a valid u8), and the view lives only
        // while `scratch` is borrowed here.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<u8>(), scratch.len() * 4)
        };
        let len = nfc::nfc_into(text, bytes).ok_or(bad("NFC output exceeded 3x the input"))?;
        let normalized =
            core::str::from_utf8(&bytes[..len]).map_err(|_| bad("NFC produced invalid UTF-8"))?;
        self.encode_normalized(normalized, add_special, ids)
    }

    /// [`Tokenizer::encode`] of text already normalized.
    fn encode_normalized(
        &self,
        text: &str,
        add_special: bool,
        out: &mut [u32],
    ) -> Result<usize, Error> {
        let mut n = 0;
        if add_special {
            for id in self.prefix() {
                push(out, &mut n, id)?;
            }
        }
        let mut rest = text;
        let mut offset = 0usize;
        while !rest.is_empty() {
            match self.find_added(rest) {
                Some((at, id, len)) => {
                    let mut before = &rest[..at];
                    if self.flags(id) & TOKEN_LSTRIP != 0 {
                        before = before.trim_end();
                    }
                    self.encode_segment(before, offset == 0, out, &mut n)?;
                    push(out, &mut n, id)?;
                    let mut after = &rest[at + len..];
                    if self.flags(id) & TOKEN_RSTRIP != 0 {
                        after = after.trim_start();
                    }
                    offset += rest.len() - after.len();
                    rest = after;
                }
                None => {
                    self.encode_segment(rest, offset == 0, out, &mut n)?;
                    rest = "";
                }
            }
        }
        if add_special {
            for id in self.header.suffix.into_iter().filter(|&id| id != NO_TOKEN) {
                push(out, &mut n, id)?;
            }
        }
        Ok(n)
    }

    /// The leftmost added token in `s` (longest at that position): its
    /// byte offset, id and length.
    fn find_added(&self, s: &str) -> Option<(usize, u32, usize)> {
        let count = self.header.n_added as usize;
        if count == 0 {
            return None;
        }
        let b = s.as_bytes();
        for at in 0..b.len() {
            // The table is longest first, so the first hit is the longest.
            for i in 0..count {
                let id = self.word(self.tables.added, i);
                let tok = self.token_bytes(id);
                if b[at] == tok[0] && b[at..].starts_with(tok) {
                    return Some((at, id, tok.len()));
                }
            }
        }
        None
    }

    /// Encodes text with no added tokens in it.
    fn encode_segment(
        &self,
        s: &str,
        at_start: bool,
        out: &mut [u32],
        n: &mut usize,
    ) -> Result<(), Error> {
        if s.is_empty() {
            return Ok(());
        }
        match self.header.kind {
            TokenizerKind::ByteLevel => {
                // A Digits pre-tokenizer cuts the text first; the split
                // rule then runs inside each of its pieces.
                let digits = self.header.options & (OPT_SPLIT_DIGITS | OPT_SINGLE_DIGITS);
                let mut outer = 0;
                while outer < s.len() {
                    let outer_end = match digits {
                        0 => s.len(),
                        d => split::digit_piece(s, outer, d & OPT_SINGLE_DIGITS != 0),
                    };
                    let piece = &s[outer..outer_end];
                    let mut i = 0;
                    while i < piece.len() {
                        let end = split::next_piece(self.header.split, piece, i);
                        self.encode_bytes(&piece[i..end], out, n)?;
                        i = end;
                    }
                    outer = outer_end;
                }
                Ok(())
            }
            TokenizerKind::SentencePiece => {
                let prepend = match self.header.prepend {
                    Prepend::Never => false,
                    Prepend::Always => true,
                    Prepend::UnlessSpace => !s.starts_with(' '),
                    Prepend::First => at_start && !s.starts_with(' '),
                };
                self.encode_pieces(s, prepend, out, n)
            }
        }
    }

    /// Byte-level BPE of one pre-token.
    fn encode_bytes(&self, piece: &str, out: &mut [u32], n: &mut usize) -> Result<(), Error> {
        if self.header.options & OPT_IGNORE_MERGES != 0 {
            if let Some(id) = self.lookup(piece.as_bytes()) {
                return push(out, n, id);
            }
        }
        let start = *n;
        for &b in piece.as_bytes() {
            let id = self.word(self.tables.bytes, b as usize);
            if id != NO_TOKEN {
                push(out, n, id)?;
            }
        }
        *n = start + self.merge_all(&mut out[start..*n]);
        Ok(())
    }

    /// SentencePiece BPE of one stretch of text: characters (spaces as `▁`)
    /// to tokens, unknown ones to byte tokens or `unk`, then merges; word
    /// by word when the tokenizer splits on `▁`.
    fn encode_pieces(
        &self,
        s: &str,
        prepend: bool,
        out: &mut [u32],
        n: &mut usize,
    ) -> Result<(), Error> {
        let split_words = self.header.options & OPT_SPLIT_ON_SPACE != 0;
        let fuse_unk = self.header.options & OPT_FUSE_UNK != 0;
        let mut word_start = *n;
        let mut last_unk = false;
        let mut after_space = false;
        let chars = prepend.then_some(' ').into_iter().chain(s.chars());
        for c in chars {
            let mut utf8 = [0u8; 4];
            let text: &[u8] = if c == ' ' {
                let word_ends = split_words || (self.words_independent && !after_space);
                after_space = true;
                if word_ends && *n > word_start {
                    let len = self.merge_all(&mut out[word_start..*n]);
                    *n = word_start + len;
                    word_start = *n;
                }
                SPACE_MARK.as_bytes()
            } else {
                after_space = false;
                c.encode_utf8(&mut utf8).as_bytes()
            };
            if let Some(id) = self.lookup(text) {
                push(out, n, id)?;
                last_unk = false;
                continue;
            }
            let bytes = |b: &u8| self.word(self.tables.bytes, *b as usize);
            if text.iter().all(|b| bytes(b) != NO_TOKEN) {
                for b in text {
                    push(out, n, bytes(b))?;
                }
                last_unk = false;
            } else if self.header.unk != NO_TOKEN && !(fuse_unk && last_unk) {
                push(out, n, self.header.unk)?;
                last_unk = true;
            }
        }
        let len = self.merge_all(&mut out[word_start..*n]);
        *n = word_start + len;
        Ok(())
    }

    /// Applies merges to `symbols` in place, lowest rank first (leftmost
    /// among equals); returns how many symbols remain.
    fn merge_all(&self, symbols: &mut [u32]) -> usize {
        let mut len = symbols.len();
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..len.saturating_sub(1) {
                if let Some((rank, merged)) = self.merge(symbols[i], symbols[i + 1]) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else {
                return len;
            };
            symbols[i] = merged;
            symbols.copy_within(i + 2..len, i + 1);
            len -= 1;
        }
    }

    /// Decodes `ids` into `out` as `tokenizers`' `decode` with
    /// `skip_special_tokens` does; returns the text. `out` needs
    /// [`Tokenizer::max_decoded_bytes`] per id at most.
    ///
    /// SentencePiece byte-fallback tokens follow `tokenizers` exactly: a
    /// run of them that is not valid UTF-8 as a whole becomes one U+FFFD
    /// per token (a [`TextDecoder`], which cannot see ahead, shows each
    /// complete character as soon as it is there instead).
    pub fn decode<'o>(
        &self,
        ids: &[u32],
        skip_special: bool,
        out: &'o mut [u8],
    ) -> Result<&'o str, Error> {
        let mut dec = TextDecoder::new(skip_special);
        let mut n = 0;
        let mut i = 0;
        while i < ids.len() {
            if self.is_byte_token(ids[i]) {
                let run = ids[i..]
                    .iter()
                    .take_while(|&&id| {
                        self.is_byte_token(id) || (skip_special && self.is_special(id))
                    })
                    .count();
                let run = &ids[i..i + run];
                let bytes = run
                    .iter()
                    .filter(|&&id| self.is_byte_token(id))
                    .map(|&id| self.token_bytes(id)[0]);
                let valid = valid_utf8(bytes);
                for &id in run {
                    n += match valid || !self.is_byte_token(id) {
                        true => dec.push(self, id, &mut out[n..])?.len(),
                        false => dec.replacement(&mut out[n..])?.len(),
                    };
                }
                i += run.len();
                continue;
            }
            n += dec.push(self, ids[i], &mut out[n..])?.len();
            i += 1;
        }
        n += dec.finish(&mut out[n..])?.len();
        // Every step wrote whole UTF-8 characters.
        core::str::from_utf8(&out[..n]).map_err(|_| bad("decoder produced invalid UTF-8"))
    }

    fn is_byte_token(&self, id: u32) -> bool {
        id < self.header.n_tokens && self.flags(id) & TOKEN_BYTE != 0
    }

    /// The text bytes token `id` stands for, written to `emit` a byte at a
    /// time: SentencePiece pieces with `▁` as a space, or with no `▁` at
    /// all when `drop_marks` (the first token under a Metaspace decoder).
    fn text_bytes(
        &self,
        id: u32,
        drop_marks: bool,
        mut emit: impl FnMut(u8) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let bytes = self.token_bytes(id);
        let is_piece = self.header.kind == TokenizerKind::SentencePiece
            && self.flags(id) & (TOKEN_BYTE | TOKEN_ADDED) == 0;
        let mark = SPACE_MARK.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if is_piece && bytes[i..].starts_with(mark) {
                if !drop_marks {
                    emit(b' ')?;
                }
                i += mark.len();
            } else {
                emit(bytes[i])?;
                i += 1;
            }
        }
        Ok(())
    }
}

/// Whether `bytes` are well-formed UTF-8 (Unicode table 3-7), complete.
fn valid_utf8(bytes: impl Iterator<Item = u8>) -> bool {
    let mut need = 0usize;
    let mut range = (0x80u8, 0xBFu8);
    for b in bytes {
        if need == 0 {
            match utf8_start(b) {
                Some((len, r)) => {
                    need = len - 1;
                    range = r;
                }
                None => return false,
            }
        } else {
            if b < range.0 || b > range.1 {
                return false;
            }
            need -= 1;
            range = (0x80, 0xBF);
        }
    }
    need == 0
}

/// For a UTF-8 start byte: the sequence length and the valid range of the
/// second byte (Unicode table 3-7); `None` for a byte that starts nothing.
fn utf8_start(b: u8) -> Option<(usize, (u8, u8))> {
    match b {
        0x00..=0x7F => Some((1, (0x80, 0xBF))),
        0xC2..=0xDF => Some((2, (0x80, 0xBF))),
        0xE0 => Some((3, (0xA0, 0xBF))),
        0xE1..=0xEC | 0xEE..=0xEF => Some((3, (0x80, 0xBF))),
        0xED => Some((3, (0x80, 0x9F))),
        0xF0 => Some((4, (0x90, 0xBF))),
        0xF1..=0xF3 => Some((4, (0x80, 0xBF))),
        0xF4 => Some((4, (0x80, 0x8F))),
        _ => None,
    }
}

/// u32 slots holding the NFC form of `text_len` bytes (at most 3x as long).
fn nfc_scratch_slots(text_len: usize) -> usize {
    (3 * text_len).div_ceil(4)
}

fn push(out: &mut [u32], n: &mut usize, id: u32) -> Result<(), Error> {
    let slot = out.get_mut(*n).ok_or(Error::BufferTooSmall {
        what: "token ids",
        needed: *n + 1,
        provided: *n,
    })?;
    *slot = id;
    *n += 1;
    Ok(())
}

/// Turns a stream of token ids into UTF-8 text, holding back the bytes of
/// a character split across tokens until it is complete. Bytes that can
/// never form a character come out as U+FFFD, one per maximal ill-formed
/// sequence, as Rust's and `tokenizers`' lossy UTF-8 decoding does.
#[derive(Debug, Clone, Copy)]
pub struct TextDecoder {
    pending: [u8; 4],
    len: u8,
    /// Bytes the pending character needs in all.
    want: u8,
    /// Valid range of the next continuation byte.
    next: (u8, u8),
    /// Nothing has been decoded yet (the leading-space rules apply).
    at_start: bool,
    skip_special: bool,
}

const REPLACEMENT: &str = "\u{FFFD}";

impl TextDecoder {
    /// A decoder at the start of a text.
    pub fn new(skip_special: bool) -> Self {
        TextDecoder {
            pending: [0; 4],
            len: 0,
            want: 0,
            next: (0x80, 0xBF),
            at_start: true,
            skip_special,
        }
    }

    /// A decoder continuing a text already under way (after a prompt): the
    /// first token's leading space is kept.
    pub fn continuing(skip_special: bool) -> Self {
        TextDecoder {
            at_start: false,
            ..Self::new(skip_special)
        }
    }

    /// Decodes one more token into `out`, returning the text completed by it
    /// (possibly empty).
    pub fn push<'o>(
        &mut self,
        tok: &Tokenizer<'_>,
        id: u32,
        out: &'o mut [u8],
    ) -> Result<&'o str, Error> {
        let mut n = 0;
        if id >= tok.vocab_size() {
            return Err(Error::TokenOutOfRange {
                token: id,
                vocab_size: tok.vocab_size(),
            });
        }
        if self.skip_special && tok.is_special(id) {
            return Ok("");
        }
        let options = tok.header.options;
        let first = self.at_start;
        let drop_marks = first && options & OPT_FIRST_TOKEN_NO_MARKS != 0;
        // The Strip decoder looks at the text's first byte, from whichever
        // token it comes; the Metaspace decoder at the first token.
        let mut strip = first && options & OPT_STRIP_LEADING_SPACE != 0;
        let mut wrote = false;
        tok.text_bytes(id, drop_marks, |b| {
            wrote = true;
            if core::mem::take(&mut strip) && b == b' ' {
                return Ok(());
            }
            self.byte(b, out, &mut n)
        })?;
        if wrote || options & OPT_FIRST_TOKEN_NO_MARKS != 0 {
            self.at_start = false;
        }
        // Only whole characters were written.
        core::str::from_utf8(&out[..n]).map_err(|_| bad("decoder produced invalid UTF-8"))
    }

    /// Ends the text: a character still incomplete becomes U+FFFD.
    pub fn finish<'o>(&mut self, out: &'o mut [u8]) -> Result<&'o str, Error> {
        let mut n = 0;
        if self.len > 0 {
            self.len = 0;
            put(out, &mut n, REPLACEMENT.as_bytes())?;
        }
        core::str::from_utf8(&out[..n]).map_err(|_| bad("decoder produced invalid UTF-8"))
    }

    /// One U+FFFD in place of a token (an ill-formed byte-fallback run).
    fn replacement<'o>(&mut self, out: &'o mut [u8]) -> Result<&'o str, Error> {
        let mut n = 0;
        if self.len > 0 {
            self.len = 0;
            put(out, &mut n, REPLACEMENT.as_bytes())?;
        }
        self.at_start = false;
        put(out, &mut n, REPLACEMENT.as_bytes())?;
        core::str::from_utf8(&out[..n]).map_err(|_| bad("decoder produced invalid UTF-8"))
    }

    fn byte(&mut self, b: u8, out: &mut [u8], n: &mut usize) -> Result<(), Error> {
        if self.len > 0 {
            if (self.next.0..=self.next.1).contains(&b) {
                self.pending[self.len as usize] = b;
                self.len += 1;
                self.next = (0x80, 0xBF);
                if self.len == self.want {
                    self.len = 0;
                    let p = self.pending;
                    put(out, n, &p[..self.want as usize])?;
                }
                return Ok(());
            }
            // The pending bytes are a maximal ill-formed prefix; `b` starts afresh.
            self.len = 0;
            put(out, n, REPLACEMENT.as_bytes())?;
        }
        match utf8_start(b) {
            Some((1, _)) => put(out, n, &[b]),
            Some((want, next)) => {
                self.pending[0] = b;
                self.len = 1;
                self.want = want as u8;
                self.next = next;
                Ok(())
            }
            None => put(out, n, REPLACEMENT.as_bytes()),
        }
    }
}

fn put(out: &mut [u8], n: &mut usize, bytes: &[u8]) -> Result<(), Error> {
    let end = *n + bytes.len();
    let provided = out.len();
    let dst = out.get_mut(*n..end).ok_or(Error::BufferTooSmall {
        what: "decoded text",
        needed: end,
        provided,
    })?;
    dst.copy_from_slice(bytes);
    *n = end;
    Ok(())
}
