//! Unicode NFC normalization, without the heap.
//!
//! Why: the Qwen2 and GPT-NeoX tokenizers have an `NFC` normalizer in their
//! `tokenizer.json`, and `tokenizers` applies it before the split rule, so
//! "e" + U+0301 must be encoded as the tokens of "é". [`is_nfc_quick`] tells
//! cheaply whether a text certainly is NFC already (nearly every text is);
//! [`nfc_into`] writes the NFC of a text into a caller's buffer.
//!
//! The algorithm is the standard one (UAX #15), run as a stream over the
//! text's characters:
//!
//! 1. full canonical decomposition: the one-level mappings of
//!    [`DECOMP`] applied recursively, Hangul syllables split arithmetically
//!    into L V (T) jamo;
//! 2. canonical ordering: each run of non-starters (combining class
//!    other than 0, from [`CCC`]) is held back until the next starter and
//!    stably sorted by class;
//! 3. canonical composition: each code point is combined with the last
//!    starter when [`COMPOSE`] (or Hangul LV / LVT arithmetic) has a
//!    primary composite for the pair and it is not blocked, that is no
//!    code point left between them has class 0 or a class not below its
//!    own; a starter composes only with a starter right before it.
//!
//! Tables come from `tools/reference/gen_unicode_nfc.py` (see
//! [`super::nfc_tables`] for the Unicode version); every lookup is a binary
//! search.
//!
//! Limit: the only state is two stack buffers of [`SEGMENT`] (32) code
//! points: the run of non-starters awaiting ordering, and the non-starters
//! left uncomposed after the last starter. A run of more than 32
//! non-starters in a row (after decomposition) is pathological — Unicode's
//! Stream-Safe Text Format caps it at 30 — and is handled in chunks: each
//! 32 are sorted and composed on their own and written out in order, and
//! the marks after an overflow no longer compose with the starter. Such
//! text may come out differently from `tokenizers`; any other text comes
//! out exactly as NFC.

use super::nfc_tables::{CCC, COMPOSE, DECOMP, NOT_QUICK};
use core::cmp::Ordering;

#[cfg(test)]
#[path = "nfc_tests.rs"]
mod nfc_tests;

/// Code points below this are starters without a decomposition that are
/// never the second half of a composition (the generator checks it).
const FIRST_INTERESTING: u32 = 0x300;

/// Capacity of each of the two code point buffers; see the module doc.
const SEGMENT: usize = 32;

const S_BASE: u32 = 0xAC00;
const L_BASE: u32 = 0x1100;
const V_BASE: u32 = 0x1161;
const T_BASE: u32 = 0x11A7;
const L_COUNT: u32 = 19;
const V_COUNT: u32 = 21;
const T_COUNT: u32 = 28;
const N_COUNT: u32 = V_COUNT * T_COUNT;
const S_COUNT: u32 = L_COUNT * N_COUNT;

const MASK21: u64 = (1 << 21) - 1;

/// Whether `s` is certainly NFC already: true when it has no code point
/// that decomposes without recomposing, has a combining class other than
/// 0, or can be the second half of a composition. False only means "maybe
/// not": "q" + U+0323 + U+0307 is NFC but has combining marks.
pub(super) fn is_nfc_quick(s: &str) -> bool {
    if s.is_ascii() {
        return true;
    }
    s.chars().all(|c| {
        let c = c as u32;
        c < FIRST_INTERESTING
            || NOT_QUICK
                .binary_search_by(|&e| range_cmp((e >> 21) as u32, (e & MASK21) as u32, c))
                .is_err()
    })
}

/// Writes the NFC of `s` into `out` as UTF-8 and returns its length in
/// bytes, or `None` when `out` is too small. NFC can be longer than `s`
/// (U+0958 becomes U+0915 U+093C, 3 bytes to 6); three times `s.len()`
/// always suffices. Exact up to the run limit of the module doc.
pub(super) fn nfc_into(s: &str, out: &mut [u8]) -> Option<usize> {
    if is_nfc_quick(s) {
        out.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        return Some(s.len());
    }
    normalize(s, out)
}

/// [`nfc_into`] without the quick check.
fn normalize(s: &str, out: &mut [u8]) -> Option<usize> {
    let mut n = Normalizer {
        out,
        len: 0,
        run: [(0, 0); SEGMENT],
        run_len: 0,
        starter: None,
        tail: [0; SEGMENT],
        tail_len: 0,
        tail_max: 0,
    };
    for c in s.chars() {
        n.decompose(c as u32)?;
    }
    n.flush_run()?;
    n.flush_starter()?;
    Some(n.len)
}

/// Where `c` lies relative to the inclusive range `lo..=hi`, as a binary
/// search over sorted ranges wants it.
fn range_cmp(lo: u32, hi: u32, c: u32) -> Ordering {
    if hi < c {
        Ordering::Less
    } else if lo > c {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// Canonical combining class.
fn ccc(c: u32) -> u8 {
    if c < FIRST_INTERESTING {
        return 0;
    }
    match CCC.binary_search_by(|&e| range_cmp((e >> 29) as u32, ((e >> 8) & MASK21) as u32, c)) {
        Ok(i) => (CCC[i] & 0xFF) as u8,
        Err(_) => 0,
    }
}

/// One level of canonical decomposition (Hangul aside): `(first, second)`,
/// `second` 0 for a singleton.
fn decomposition(c: u32) -> Option<(u32, u32)> {
    if c < 0xC0 {
        return None;
    }
    let i = DECOMP
        .binary_search_by(|&e| ((e >> 42) as u32).cmp(&c))
        .ok()?;
    let e = DECOMP[i];
    Some((((e >> 21) & MASK21) as u32, (e & MASK21) as u32))
}

/// The primary composite of `first` (a starter) and `second`, if any.
fn composite(first: u32, second: u32) -> Option<u32> {
    if (L_BASE..L_BASE + L_COUNT).contains(&first) && (V_BASE..V_BASE + V_COUNT).contains(&second) {
        return Some(S_BASE + ((first - L_BASE) * V_COUNT + (second - V_BASE)) * T_COUNT);
    }
    if (S_BASE..S_BASE + S_COUNT).contains(&first)
        && (first - S_BASE).is_multiple_of(T_COUNT)
        && (T_BASE + 1..T_BASE + T_COUNT).contains(&second)
    {
        return Some(first + (second - T_BASE));
    }
    if second < FIRST_INTERESTING {
        return None;
    }
    let key = (u64::from(first) << 21) | u64::from(second);
    let i = COMPOSE.binary_search_by(|&e| (e >> 21).cmp(&key)).ok()?;
    Some((COMPOSE[i] & MASK21) as u32)
}

/// The streaming state: stage 2 (ordering) holds `run`, stage 3
/// (composition) holds `starter` and `tail`; stage 1 keeps nothing.
struct Normalizer<'o> {
    out: &'o mut [u8],
    len: usize,
    /// Non-starters since the last starter, with their classes, unsorted.
    run: [(u32, u8); SEGMENT],
    run_len: usize,
    /// The last starter, not yet written: later code points may compose
    /// into it.
    starter: Option<u32>,
    /// The code points after `starter` that did not compose (non-starters).
    tail: [u32; SEGMENT],
    tail_len: usize,
    /// The highest class in `tail` (0 when empty).
    tail_max: u8,
}

impl Normalizer<'_> {
    /// Stage 1: full canonical decomposition of `c`.
    fn decompose(&mut self, c: u32) -> Option<()> {
        if (S_BASE..S_BASE + S_COUNT).contains(&c) {
            let i = c - S_BASE;
            self.order(L_BASE + i / N_COUNT)?;
            self.order(V_BASE + (i % N_COUNT) / T_COUNT)?;
            if !i.is_multiple_of(T_COUNT) {
                self.order(T_BASE + i % T_COUNT)?;
            }
            return Some(());
        }
        match decomposition(c) {
            Some((first, second)) => {
                self.decompose(first)?;
                if second != 0 {
                    self.decompose(second)?;
                }
                Some(())
            }
            None => self.order(c),
        }
    }

    /// Stage 2: canonical ordering of each run of non-starters.
    fn order(&mut self, c: u32) -> Option<()> {
        let class = ccc(c);
        if class == 0 {
            self.flush_run()?;
            return self.compose(c, 0);
        }
        if self.run_len == SEGMENT {
            self.flush_run()?;
        }
        self.run[self.run_len] = (c, class);
        self.run_len += 1;
        Some(())
    }

    /// Sorts the held run by class (stable: insertion sort) and passes it on.
    fn flush_run(&mut self) -> Option<()> {
        let run = &mut self.run[..self.run_len];
        for i in 1..run.len() {
            let mut j = i;
            while j > 0 && run[j - 1].1 > run[j].1 {
                run.swap(j - 1, j);
                j -= 1;
            }
        }
        for i in 0..self.run_len {
            let (c, class) = self.run[i];
            self.compose(c, class)?;
        }
        self.run_len = 0;
        Some(())
    }

    /// Stage 3: canonical composition of `c`, of class `class`.
    fn compose(&mut self, c: u32, class: u8) -> Option<()> {
        let Some(starter) = self.starter else {
            if class == 0 {
                self.starter = Some(c);
                return Some(());
            }
            return self.write(c);
        };
        let blocked = self.tail_len > 0 && self.tail_max >= class;
        if !blocked {
            if let Some(p) = composite(starter, c) {
                self.starter = Some(p);
                return Some(());
            }
        }
        if class == 0 {
            self.flush_starter()?;
            self.starter = Some(c);
        } else if self.tail_len == SEGMENT {
            // Past the limit: give up composing with this starter.
            self.flush_starter()?;
            self.write(c)?;
        } else {
            self.tail[self.tail_len] = c;
            self.tail_len += 1;
            self.tail_max = self.tail_max.max(class);
        }
        Some(())
    }

    /// Writes the starter and what follows it uncomposed.
    fn flush_starter(&mut self) -> Option<()> {
        if let Some(s) = self.starter.take() {
            self.write(s)?;
        }
        for i in 0..self.tail_len {
            self.write(self.tail[i])?;
        }
        self.tail_len = 0;
        self.tail_max = 0;
        Some(())
    }

    fn write(&mut self, c: u32) -> Option<()> {
        // Every code point here is a `char` of the input or a table entry.
        let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
        let n = c.len_utf8();
        let dst = self.out.get_mut(self.len..self.len + n)?;
        c.encode_utf8(dst);
        self.len += n;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::nfc_tests::{SINGLES, STRINGS};
    use super::*;

    /// NFC of `s` through both paths (which must agree).
    fn nfc<'a>(s: &str, buf: &'a mut [u8; 512]) -> &'a str {
        let n = nfc_into(s, buf).expect("buffer too small");
        let mut slow = [0u8; 512];
        let m = normalize(s, &mut slow).expect("buffer too small");
        assert_eq!(
            &buf[..n],
            &slow[..m],
            "quick and slow paths differ on {s:?}"
        );
        core::str::from_utf8(&buf[..n]).expect("valid UTF-8")
    }

    fn check(s: &str, expected: &str) {
        let mut buf = [0u8; 512];
        assert_eq!(nfc(s, &mut buf), expected, "NFC of {s:?}");
        if is_nfc_quick(s) {
            assert_eq!(s, expected, "is_nfc_quick true on non-NFC {s:?}");
        }
    }

    // Expectations from Python's unicodedata.normalize('NFC', ...).
    #[test]
    fn decomposed_latin() {
        check("e\u{301}", "\u{E9}");
        check("cafe\u{301}", "caf\u{E9}");
        check("A\u{30A}", "\u{C5}");
        check("o\u{308}\u{304}", "\u{22B}");
        check("\u{301}e", "\u{301}e");
        check("n\u{303}a\u{308}", "\u{F1}\u{E4}");
    }

    #[test]
    fn reordering() {
        check("a\u{323}\u{302}", "\u{1EAD}");
        check("a\u{302}\u{323}", "\u{1EAD}");
        check("q\u{307}\u{323}", "q\u{323}\u{307}");
        check("q\u{323}\u{307}", "q\u{323}\u{307}");
        check("\u{1E0B}\u{323}", "\u{1E0D}\u{307}");
    }

    #[test]
    fn blocked() {
        // U+0301 after U+0301: the first composes, the second is blocked.
        check("e\u{301}\u{301}", "\u{E9}\u{301}");
        // The same class (230) in between blocks: U+0305 does not compose
        // with "a" and stops U+0301 from reaching it.
        check("a\u{305}\u{301}", "a\u{305}\u{301}");
        check("a\u{303}\u{301}", "\u{E3}\u{301}");
        // A starter in between blocks.
        check("a\u{5B0}\u{301}", "\u{E1}\u{5B0}");
        check("ab\u{301}", "ab\u{301}");
        // A lower class (220) does not block a higher one (230).
        check("a\u{316}\u{301}", "\u{E1}\u{316}");
    }

    #[test]
    fn singletons_and_exclusions() {
        check("\u{212B}", "\u{C5}");
        check("\u{2126}", "\u{3A9}");
        check("\u{212A}", "K");
        check("\u{958}", "\u{915}\u{93C}");
        check("\u{915}\u{93C}", "\u{915}\u{93C}");
        check("\u{344}", "\u{308}\u{301}");
        check("\u{F73}", "\u{F71}\u{F72}");
        check("\u{FB2C}", "\u{5E9}\u{5BC}\u{5C1}");
        check("\u{2ADC}", "\u{2ADD}\u{338}");
    }

    #[test]
    fn hangul() {
        check("\u{1100}\u{1161}", "\u{AC00}");
        check("\u{1100}\u{1161}\u{11A8}", "\u{AC01}");
        check("\u{AC00}\u{11A8}", "\u{AC01}");
        check("\u{AC01}\u{11A8}", "\u{AC01}\u{11A8}");
        check("\u{1100}\u{1161}\u{11A7}", "\u{AC00}\u{11A7}");
        check("\u{1112}\u{1175}\u{11C2}", "\u{D7A3}");
        check("\u{1100}\u{302}\u{1161}", "\u{1100}\u{302}\u{1161}");
        check("\u{D55C}\u{AD6D}\u{C5B4}", "\u{D55C}\u{AD6D}\u{C5B4}");
    }

    #[test]
    fn starter_pairs() {
        check("\u{B47}\u{B3E}", "\u{B4B}");
        check("\u{DD9}\u{DCF}\u{DCA}", "\u{DDD}");
        check("\u{11099}\u{110BA}", "\u{1109A}");
        check("\u{B47}\u{301}\u{B3E}", "\u{B47}\u{301}\u{B3E}");
    }

    #[test]
    fn vietnamese_and_greek() {
        check(
            "Tie\u{302}\u{301}ng Vie\u{323}\u{302}t",
            "Ti\u{1EBF}ng Vi\u{1EC7}t",
        );
        check("Tiếng Việt", "Tiếng Việt");
        check("\u{3B1}\u{301}", "\u{3AC}");
        check("\u{3B9}\u{308}\u{301}", "\u{390}");
        check("\u{3C5}\u{308}\u{301}", "\u{3B0}");
        check("\u{3B1}\u{313}\u{300}\u{345}", "\u{1F82}");
        check("\u{3B1}\u{345}\u{313}\u{300}", "\u{1F82}");
        check("\u{1F71}", "\u{3AC}");
        check("\u{385}", "\u{385}");
        check("\u{A8}\u{301}", "\u{385}");
    }

    #[test]
    fn already_nfc() {
        for s in [
            "",
            "hello, world",
            "\u{4E2D}\u{6587}\u{6F22}\u{5B57}",
            "\u{1F600}\u{1F44D}\u{1F3FD}",
            "caf\u{E9}",
            "\u{C5}ngstr\u{F6}m",
        ] {
            check(s, s);
            assert!(is_nfc_quick(s), "{s:?}");
        }
        assert!(!is_nfc_quick("e\u{301}"));
        assert!(!is_nfc_quick("\u{212B}"));
        assert!(!is_nfc_quick("\u{AC00}\u{11A8}"));
        assert!(!is_nfc_quick("\u{B47}\u{B3E}"));
    }

    #[test]
    fn buffer_too_small() {
        let mut buf = [0u8; 5];
        assert_eq!(nfc_into("caf\u{E9}", &mut buf), Some(5));
        assert_eq!(nfc_into("cafe\u{301}", &mut buf), Some(5));
        assert_eq!(nfc_into("caf\u{E9}!", &mut buf), None);
        assert_eq!(nfc_into("\u{958}\u{958}", &mut buf), None);
        let mut buf = [0u8; 6];
        assert_eq!(nfc_into("\u{958}\u{958}", &mut buf), None);
        let mut buf = [0u8; 12];
        assert_eq!(nfc_into("\u{958}\u{958}", &mut buf), Some(12));
    }

    #[test]
    fn long_run_of_marks() {
        // 40 marks: past the limit, still valid output with every mark kept.
        let mut s = [0u8; 128];
        s[0] = b'a';
        for i in 0..40 {
            s[1 + 2 * i..3 + 2 * i].copy_from_slice("\u{301}".as_bytes());
        }
        let s = core::str::from_utf8(&s[..81]).unwrap();
        let mut buf = [0u8; 512];
        let out = nfc(s, &mut buf);
        assert!(out.starts_with('\u{E1}'));
        assert_eq!(out.chars().filter(|&c| c == '\u{301}').count(), 39);
    }

    #[test]
    fn generated_strings() {
        for (s, expected) in STRINGS {
            check(s, expected);
        }
    }

    #[test]
    fn every_code_point() {
        let mut singles = SINGLES.iter().peekable();
        let mut buf = [0u8; 512];
        for c in (0..0x30000).filter_map(char::from_u32) {
            let mut one = [0u8; 4];
            let s = c.encode_utf8(&mut one);
            let expected = match singles.peek() {
                Some(&&(k, e)) if k == c as u32 => {
                    singles.next();
                    assert!(!is_nfc_quick(s), "U+{:04X}", c as u32);
                    e
                }
                _ => s,
            };
            assert_eq!(nfc(s, &mut buf), expected, "U+{:04X}", c as u32);
        }
        assert!(singles.next().is_none());
    }

    #[test]
    fn tables_sorted() {
        assert!(DECOMP.windows(2).all(|w| w[0] >> 42 < w[1] >> 42));
        assert!(COMPOSE.windows(2).all(|w| w[0] >> 21 < w[1] >> 21));
        assert!(CCC.windows(2).all(|w| (w[0] >> 8) & MASK21 < w[1] >> 29));
        assert!(NOT_QUICK.windows(2).all(|w| w[0] & MASK21 < w[1] >> 21));
    }
}
