//! The pre-tokenizer split rules of byte-level BPE tokenizers, written out
//! as hand-made matchers of the regular expressions `tokenizers` runs
//! (no regex engine, no heap): each call returns where the piece that
//! starts at `start` ends, trying the pattern's alternatives in order as a
//! backtracking regex engine would.

use super::cases::{Case, CASES};
use super::letters::LETTERS;
use crate::format::tokenizer::SplitRule;

/// Index of the range of a sorted, disjoint range `table` holding `c`.
fn range_of<T>(table: &[T], c: char, bounds: impl Fn(&T) -> (u32, u32)) -> Option<usize> {
    let c = c as u32;
    table
        .binary_search_by(|r| {
            let (lo, hi) = bounds(r);
            if hi < c {
                core::cmp::Ordering::Less
            } else if lo > c {
                core::cmp::Ordering::Greater
            } else {
                core::cmp::Ordering::Equal
            }
        })
        .ok()
}

/// `\p{L}`.
pub(super) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    range_of(&LETTERS, c, |&(lo, hi)| (lo, hi)).is_some()
}

/// o200k's class of `c`, if it is a letter or a mark.
fn case_of(c: char) -> Option<Case> {
    if c.is_ascii() {
        return match c {
            'A'..='Z' => Some(Case::Upper),
            'a'..='z' => Some(Case::Lower),
            _ => None,
        };
    }
    range_of(&CASES, c, |&(lo, hi, _)| (lo, hi)).map(|i| CASES[i].2)
}

/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`.
fn is_upper_class(c: char) -> bool {
    matches!(case_of(c), Some(Case::Upper | Case::Both))
}

/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`.
fn is_lower_class(c: char) -> bool {
    matches!(case_of(c), Some(Case::Lower | Case::Both))
}

/// `\p{N}`.
fn is_number(c: char) -> bool {
    c.is_numeric()
}

/// `\s`.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

fn is_newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// Neither whitespace, letter nor number: `[^\s\p{L}\p{N}]`.
fn is_other(c: char) -> bool {
    !is_space(c) && !is_letter(c) && !is_number(c)
}

/// End of the run of characters of `s` from `i` that satisfy `f`, at most
/// `max` of them.
fn run(s: &str, i: usize, max: usize, f: impl Fn(char) -> bool) -> usize {
    let mut end = i;
    for (n, c) in s[i..].chars().enumerate() {
        if n == max || !f(c) {
            break;
        }
        end += c.len_utf8();
    }
    end
}

/// `'s|'t|'re|'ve|'m|'ll|'d`, optionally ignoring ASCII case.
fn contraction(s: &str, i: usize, any_case: bool) -> Option<usize> {
    let rest = &s.as_bytes()[i..];
    if rest.first() != Some(&b'\'') {
        return None;
    }
    for suffix in ["s", "t", "re", "ve", "m", "ll", "d"] {
        let n = suffix.len();
        if let Some(cand) = rest.get(1..1 + n) {
            let hit = if any_case {
                cand.eq_ignore_ascii_case(suffix.as_bytes())
            } else {
                cand == suffix.as_bytes()
            };
            if hit {
                return Some(i + 1 + n);
            }
        }
    }
    None
}

/// `\s+(?!\S)|\s+` at `i` (a whitespace character): the whole run if it
/// ends the text, else the run less its last character (that one joins the
/// next word), else the single character.
fn whitespace(s: &str, i: usize) -> usize {
    let end = run(s, i, usize::MAX, is_space);
    if end == s.len() {
        return end;
    }
    let last = s[..end].chars().next_back().map_or(0, char::len_utf8);
    if end - last > i {
        end - last
    } else {
        end
    }
}

/// `c` followed by a run of `f` characters, with `c` optional and a space:
/// ` ?X+`. Returns the end if at least one `X` follows.
fn space_then_run(s: &str, i: usize, f: impl Fn(char) -> bool) -> Option<usize> {
    let mut chars = s[i..].chars();
    let c0 = chars.next()?;
    let from = if c0 == ' ' && chars.next().is_some_and(&f) {
        i + 1
    } else {
        i
    };
    let end = run(s, from, usize::MAX, f);
    (end > from).then_some(end)
}

/// The `Digits` pre-tokenizer: a run of digits (or one digit when
/// `single`), or the run of other characters up to the next digit.
pub(super) fn digit_piece(s: &str, start: usize, single: bool) -> usize {
    let first = s[start..].chars().next().unwrap_or(' ');
    match (is_number(first), single) {
        (true, true) => start + first.len_utf8(),
        (true, false) => run(s, start, usize::MAX, is_number),
        (false, _) => run(s, start, usize::MAX, |c| !is_number(c)),
    }
}

/// End of the piece of `s` starting at `start` (`start < s.len()`).
pub(super) fn next_piece(rule: SplitRule, s: &str, start: usize) -> usize {
    match rule {
        SplitRule::None => s.len(),
        SplitRule::Gpt2 => gpt2(s, start),
        SplitRule::Llama3 => llama3(s, start, 3),
        SplitRule::Qwen2 => llama3(s, start, 1),
        SplitRule::O200k => o200k(s, start),
    }
}

/// `U*L+` at `i` (U, L: o200k's upper and lower classes) as a backtracking
/// engine matches it: the longest run of U, then the longest run of L; if
/// that is empty, U gives back characters from its end until L matches.
fn upper_star_lower_plus(s: &str, i: usize) -> Option<usize> {
    let mut at = run(s, i, usize::MAX, is_upper_class);
    loop {
        let end = run(s, at, usize::MAX, is_lower_class);
        if end > at {
            return Some(end);
        }
        if at == i {
            return None;
        }
        at -= s[..at].chars().next_back().map_or(1, char::len_utf8);
    }
}

/// `U+L*` at `i`: a run of U, then any run of L.
fn upper_plus_lower_star(s: &str, i: usize) -> Option<usize> {
    let at = run(s, i, usize::MAX, is_upper_class);
    (at > i).then(|| run(s, at, usize::MAX, is_lower_class))
}

/// OpenAI's o200k (gpt-oss):
/// `[^\r\n\p{L}\p{N}]?U*L+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
/// [^\r\n\p{L}\p{N}]?U+L*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// with U = `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`, L = `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`.
fn o200k(s: &str, i: usize) -> usize {
    let c0 = s[i..].chars().next().unwrap_or(' ');
    // The optional leading character: taken first, then left out.
    let lead = !is_newline(c0) && !is_letter(c0) && !is_number(c0);
    let starts = [lead.then_some(i + c0.len_utf8()), Some(i)];
    for word in [upper_star_lower_plus, upper_plus_lower_star] {
        for from in starts.into_iter().flatten() {
            if from < s.len() {
                if let Some(end) = word(s, from) {
                    return contraction(s, end, true).unwrap_or(end);
                }
            }
        }
    }
    if is_number(c0) {
        return run(s, i, 3, is_number);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
    if let Some(e) = space_then_run(s, i, is_other) {
        return run(s, e, usize::MAX, |c| is_newline(c) || c == '/');
    }
    // `\s*[\r\n]+`: up to and including the run's last newline.
    let ws_end = run(s, i, usize::MAX, is_space);
    if let Some(p) = s[i..ws_end].rfind(['\r', '\n']) {
        return i + p + 1;
    }
    whitespace(s, i)
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn gpt2(s: &str, i: usize) -> usize {
    if let Some(e) = contraction(s, i, false) {
        return e;
    }
    for f in [is_letter, is_number, is_other] {
        if let Some(e) = space_then_run(s, i, f) {
            return e;
        }
    }
    whitespace(s, i)
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,digits}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
fn llama3(s: &str, i: usize, digits: usize) -> usize {
    if let Some(e) = contraction(s, i, true) {
        return e;
    }
    let mut chars = s[i..].chars();
    let c0 = chars.next().unwrap_or(' ');
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if is_letter(c0) {
        return run(s, i, usize::MAX, is_letter);
    }
    if !is_newline(c0) && !is_number(c0) && chars.next().is_some_and(is_letter) {
        return run(s, i + c0.len_utf8(), usize::MAX, is_letter);
    }
    // \p{N}{1,digits}
    if is_number(c0) {
        return run(s, i, digits, is_number);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    if let Some(e) = space_then_run(s, i, is_other) {
        return run(s, e, usize::MAX, is_newline);
    }
    // `\s*[\r\n]+`: up to and including the run's last newline.
    let ws_end = run(s, i, usize::MAX, is_space);
    if let Some(p) = s[i..ws_end].rfind(['\r', '\n']) {
        return i + p + 1;
    }
    whitespace(s, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces<'a>(rule: SplitRule, s: &'a str, out: &mut [&'a str; 32]) -> usize {
        let (mut i, mut n) = (0, 0);
        while i < s.len() {
            let e = next_piece(rule, s, i);
            assert!(e > i && s.is_char_boundary(e));
            out[n] = &s[i..e];
            n += 1;
            i = e;
        }
        n
    }

    #[test]
    fn gpt2_splits_like_its_regex() {
        let mut out = [""; 32];
        let n = pieces(SplitRule::Gpt2, "Hello world's  end!!\n\n 123 ", &mut out);
        assert_eq!(
            &out[..n],
            &["Hello", " world", "'s", " ", " end", "!!", "\n\n", " 123", " "]
        );
    }

    #[test]
    fn llama3_splits_like_its_regex() {
        let mut out = [""; 32];
        let n = pieces(SplitRule::Llama3, "I'M 12345 (x)\n\n  y", &mut out);
        assert_eq!(
            &out[..n],
            &["I", "'M", " ", "123", "45", " (", "x", ")\n\n", " ", " y"]
        );
        let n = pieces(SplitRule::Qwen2, "a 12", &mut out);
        assert_eq!(&out[..n], &["a", " ", "1", "2"]);
        let n = pieces(SplitRule::Llama3, "a \n b", &mut out);
        assert_eq!(&out[..n], &["a", " \n", " b"]);
    }

    #[test]
    fn o200k_cuts_words_by_case() {
        let mut out = [""; 32];
        let n = pieces(
            SplitRule::O200k,
            "HELLOworld helloWORLD McDONALD's I'M",
            &mut out,
        );
        assert_eq!(
            &out[..n],
            &["HELLOworld", " hello", "WORLD", " Mc", "DONALD's", " I'M"]
        );
        let n = pieces(SplitRule::O200k, "a/b\n/c 12345 \u{301}x", &mut out);
        assert_eq!(
            &out[..n],
            &["a", "/b", "\n", "/c", " ", "123", "45", " \u{301}x"]
        );
    }

    #[test]
    fn letters_table_covers_scripts() {
        for c in ['é', 'ß', 'Ω', 'ж', '你', 'ひ', '한', 'ا'] {
            assert!(is_letter(c), "{c}");
        }
        for c in ['1', '٣', ' ', '!', '🙂', '\u{301}', '²'] {
            assert!(!is_letter(c), "{c}");
        }
        // Unicode 15 and 16 letters, which tokenizers' Oniguruma knows.
        for c in ['\u{1E030}', '\u{2EBF0}', '\u{A7CB}', '\u{10D50}'] {
            assert!(is_letter(c), "{c}");
        }
        // o200k's classes: capitals, small letters, caseless letters and marks.
        assert!(is_upper_class('\u{A7CB}') && !is_lower_class('\u{A7CB}'));
        assert!(is_lower_class('ß') && !is_upper_class('ß'));
        assert!(is_upper_class('ǅ') && !is_lower_class('ǅ'));
        for c in ['\u{2EBF0}', '\u{1E030}', '\u{301}', '中'] {
            assert!(is_upper_class(c) && is_lower_class(c), "{c}");
        }
    }
}
