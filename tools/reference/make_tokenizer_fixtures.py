#!/usr/bin/env python3
"""Train tiny tokenizers and write encode/decode conformance fixtures for `mote`.

Run from the repo root:

    python3 tools/reference/make_tokenizer_fixtures.py [--out tests/fixtures/tokenizers]
                                                     [--check-transformers]

Writes, under <out>/, one folder per tokenizer kind:

  gpt2-bytelevel/        BPE, pre_tokenizer ByteLevel(add_prefix_space=false,
                         use_regex=true) (GPT-2 regex), decoder ByteLevel,
                         post_processor ByteLevel (no-op for ids, as in GPT-2's
                         file), no normalizer. Special `<|endoftext|>` and one
                         NON-special added token `<|pad|>` (ids after the vocab).
  llama3-bytelevel/      BPE with ignore_merges=true (vocab also holds the
                         merge-less whole words "hello", " world",
                         "Tokenizers" so it matters), pre_tokenizer
                         Sequence[Split(Regex(LLAMA3_PATTERN), Isolated),
                         ByteLevel(use_regex=false)], decoder ByteLevel,
                         post_processor Sequence[ByteLevel, TemplateProcessing
                         "<|begin_of_text|> $A"] as in Llama-3's file. Specials
                         `<|begin_of_text|>`, `<|end_of_text|>`.
  qwen2-bytelevel/       normalizer NFC, pre_tokenizer Sequence[Split(Regex(
                         QWEN2_PATTERN), Isolated), ByteLevel(use_regex=false)],
                         decoder ByteLevel, post_processor ByteLevel (no BOS).
                         Specials `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
  starcoder-digits-bytelevel/
                         Granite/StarCoder style: pre_tokenizer Sequence[Digits(
                         individual), ByteLevel(use_regex=true)], decoder and
                         post_processor ByteLevel. Specials `<|end_of_text|>`,
                         `<|start_of_role|>`, `<|end_of_role|>`.
  o200k-bytelevel/       gpt-oss (o200k_harmony) style, as openai/gpt-oss-20b's
                         tokenizer.json: BPE with ignore_merges=true, no
                         normalizer, pre_tokenizer Sequence[Split(Regex(
                         O200K_PATTERN), Isolated, invert=false), ByteLevel(
                         add_prefix_space=false, trim_offsets=true,
                         use_regex=false)], decoder ByteLevel, post_processor
                         ByteLevel(trim_offsets=false) (no BOS). Specials
                         `<|startoftext|>`, `<|endoftext|>`, `<|return|>`. Its
                         cases.json adds O200K_CASES (case classes Lu/Lt/Lm/Lo/
                         Ll/M, contraction suffixes, `/` after punctuation).
  llama2-sentencepiece/  legacy Llama-2/Mixtral style: BPE byte_fallback=true,
                         fuse_unk=true, unk `<unk>`; vocab <unk>=0 <s>=1 </s>=2,
                         <0x00>..<0xFF> = 3..258, then learned `▁` pieces.
                         normalizer Sequence[Prepend("▁"), Replace(" ", "▁")],
                         pre_tokenizer null, decoder Sequence[Replace("▁", " "),
                         ByteFallback, Fuse, Strip(" ", 1, 0)], post_processor
                         TemplateProcessing "<s> $A".
  mistral-metaspace/     the same vocab/merges as llama2-sentencepiece but the
                         legacy=false style: normalizer null, pre_tokenizer
                         Metaspace("▁", prepend_scheme="first", split=false),
                         decoder Sequence[Metaspace("▁", "first", split=false),
                         ByteFallback, Fuse], post_processor "<s> $A".

Each folder holds tokenizer.json, a minimal tokenizer_config.json
(tokenizer_class PreTrainedTokenizerFast so transformers uses tokenizer.json
as is; clean_up_tokenization_spaces false) and cases.json:

  {"kind": ..., "cases": [{"text", "ids", "ids_with_special", "decoded"}, ...],
   "decode_cases": [{"ids", "skip_special_tokens", "decoded", "note"}, ...]}

  ids              = tok.encode(text, add_special_tokens=False).ids
  ids_with_special = tok.encode(text, add_special_tokens=True).ids
  decoded          = tok.decode(ids, skip_special_tokens=True)
  decode_cases     hand-picked id lists: byte tokens that split multi-byte
                   UTF-8 characters (incomplete/invalid sequences decode to
                   U+FFFD: one per maximal invalid subpart for ByteLevel, one
                   per byte token for ByteFallback), and decodes keeping
                   special tokens.

Why: the Rust tokenizer re-implements HF `tokenizers` (added-token splitting,
normalizers, Split/ByteLevel/Metaspace pre-tokenizers, BPE with byte fallback
and ignore_merges, post-processor templates, decoders) and must reproduce
these ids and strings exactly; the texts cover whitespace runs, newlines,
contractions in both cases, digit grouping, accents and combining marks,
CJK/Hangul/Arabic/Devanagari/Greek, emoji ZWJ sequences, code, URLs, and the
special/added token strings embedded in text.

Training text: docstrings of stdlib modules string, textwrap, json, argparse,
collections, re (module + public callables, sorted) and the Zen of Python,
plus one line of accented words so é/à/ñ/ü/ç are in the SentencePiece vocab
while ï/ö/Ü, CJK and emoji go through byte fallback. Training is single
threaded and deterministic: re-running with the same Python/tokenizers
versions gives byte-identical files (the docstrings depend on the Python
version, so other versions may give other vocabularies).

--check-transformers additionally loads every folder with
transformers.AutoTokenizer and checks it reproduces ids/ids_with_special.
"""

import argparse
import codecs
import collections
import contextlib
import inspect
import io
import json
import os
import re
import string
import textwrap

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from tokenizers import (  # noqa: E402
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tiktoken's o200k_base pat_str (tiktoken_ext/openai_public.py, shared by
# o200k_harmony, i.e. gpt-oss): the exact string of openai/gpt-oss-20b's
# tokenizer.json Split pattern.
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
SPIECE = "\u2581"
# Appended to the llama3 vocab without merges (ByteLevel spelling, Ġ = space).
IGNORE_MERGES_WORDS = ["hello", "Ġworld", "Tokenizers"]

BYTELEVEL_MERGES = 700  # learned tokens beyond the 256 byte symbols
SP_VOCAB = 800  # learned pieces (alphabet + merges), before the 259 fixed ids

ACCENT_LINE = "café résumé déjà voilà señor niño über Müller façade garçon"

LONG = (
    "Tokenizers split text into pieces before a model ever sees it. In 2026, "
    "a runtime like mote must agree with the reference byte for byte: spaces, "
    "tabs\tand newlines\nmatter, as do contractions (don't, I'M), numbers such "
    "as 1,234,567.89, accents (naïve café), CJK (漢字), and emoji 🙂. "
    "If any id differs, generation diverges — so we test it all!"
)

CASES = [
    "",
    " ",
    "hello",
    "Hello world",
    " Hello",
    "The quick brown fox jumps over the lazy dog.",
    "  two  spaces  ",
    "trailing space ",
    "   leading three",
    "a\tb\t\tc",
    "\t indented with tab",
    "\n",
    "\n\n",
    "a\nb",
    "line one\r\nline two",
    "   \n  x",
    "para one\n\n\npara two\n",
    "carriage\rreturn",
    "Hello, world!!! ...?",
    "Wait... what?!? (yes) [no] {maybe} <tag/> #hash @at $5 %p ^&*_~ `tick` | \\ /",
    "I'm here, you'll see, we've done it, they'd go, it's fine, they're set.",
    "DON'T STOP, I'M HERE, YOU'LL SEE, WE'VE, THEY'D, IT'S",
    "she'S He'Ll wE'rE",
    "\"double quotes\" and 'single quotes' and ``backticks''",
    "1234567",
    "3.14159",
    "a1b22c333",
    "2026-11-29",
    "Version 10.0.19045 costs $1,234.56 (about 12%)",
    "café naïve résumé Ünïcödé",
    "e\u0301",
    "caf\u00e9 vs cafe\u0301",
    "你好，世界",
    "日本語のテキスト",
    "안녕하세요 세계",
    "🙂👍🏽 family: 👨\u200d👩\u200d👧",
    "mixed: Hello 世界 Привет مرحبا 🙂!",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Γειά σου Κόσμε",
    "∑ x² ≤ ∞",
    'fn main() { println!("hi"); }',
    "def f(x):\n    return x ** 2  # square\n",
    "https://example.com/path?query=1&b=two#frag",
    "user@example.org",
    "non\u00a0breaking\u3000ideographic",
    "zero\u200bwidth",
    "nul\x00byte",
    "already" + SPIECE + "metaspace " + SPIECE + SPIECE + "x",
    "a<|endoftext|>b",
    "<|endoftext|>",
    "x <|endoftext|> y",
    "<|pad|> padded <|pad|>",
    "<|begin_of_text|>Hello<|end_of_text|>",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<s> hi </s>",
    "a<s>b</s>c",
    "<unk>",
    LONG,
]

# Extra texts for o200k-bytelevel only: the pattern's case classes (upper-ish
# [Lu Lt Lm Lo M] then lower-ish [Ll Lm Lo M]), contraction suffixes, digit
# groups, the `/` tail after punctuation, and texts starting with a mark.
O200K_CASES = [
    "HELLOworld",
    "helloWORLD",
    "HeLLo WoRLD",
    "McDONALD's",
    "DON'T",
    "I'M",
    "ÀÉÎõü ÉCOLE école",
    "ǄǅǆǇ ǈ",  # Lu Lt Ll Lu, Lt: titlecase digraphs
    "ʰʱʲ ˆ",  # Lm (ˆ U+02C6 is Lm too)
    "e\u0301te\u0301 E\u0301TE\u0301",  # combining acute (Mn)
    "नमस्ते दुनिया",  # Lo with Mn/Mc marks (also in CASES)
    "中文字符 日本語",  # Lo
    "١٢٣٤ 12345678",  # Arabic-Indic digits (Nd), groups of three
    "a/b\n/c\r\n//",
    "  \n\n  x",
    "'s 'S 'Ll",
    "-HELLO",
    "\u0301abc",  # a text starting with a lone combining mark
    "x\u0301Y",
    "ß ẞ",
    "ﬁ ǅ",
]
EXTRA_CASES = {"o200k-bytelevel": O200K_CASES}


# ---------------------------------------------------------------- training text


def training_docs():
    """Deterministic stdlib text: a list of documents (strings)."""
    docs = []
    for mod in (string, textwrap, json, argparse, collections, re):
        docs.append(inspect.getdoc(mod) or "")
        for name in sorted(dir(mod)):
            if name.startswith("_"):
                continue
            obj = getattr(mod, name)
            if callable(obj):
                doc = inspect.getdoc(obj)
                if doc:
                    docs.append(doc)
    with contextlib.redirect_stdout(io.StringIO()):
        import this  # noqa: F401  (prints the Zen on import)
    docs.append(codecs.decode(this.s, "rot13"))
    docs.append(ACCENT_LINE)
    return docs


# ---------------------------------------------------------------- builders


def bytelevel_dec():
    return decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)


def bytelevel_post():
    return processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)


def train_bytelevel(docs, normalizer, pre_tokenizer):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=256 + BYTELEVEL_MERGES,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def model_json(tok):
    m = json.loads(tok.to_str())["model"]
    return m["vocab"], [tuple(p) if isinstance(p, list) else tuple(p.split(" ")) for p in m["merges"]]


def rebuild_bpe(tok, **kw):
    vocab, merges = model_json(tok)
    return models.BPE(vocab=vocab, merges=merges, **kw)


def special(content):
    return AddedToken(content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)


def build_gpt2(docs):
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trained = train_bytelevel(docs, None, pre)
    tok = Tokenizer(rebuild_bpe(trained, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre
    tok.decoder = bytelevel_dec()
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.add_special_tokens([special("<|endoftext|>")])
    tok.add_tokens([AddedToken("<|pad|>", special=False, normalized=True)])
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1024,
    }
    return tok, cfg


def build_starcoder(docs):
    """Granite / StarCoder style: single digits cut out first, then GPT-2's split."""
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    trained = train_bytelevel(docs, None, pre)
    tok = Tokenizer(rebuild_bpe(trained, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre
    tok.decoder = bytelevel_dec()
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.add_special_tokens([special("<|end_of_text|>"), special("<|start_of_role|>"), special("<|end_of_role|>")])
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|end_of_text|>",
        "eos_token": "<|end_of_text|>",
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
    }
    return tok, cfg


def split_bytelevel(pattern):
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )


def build_llama3(docs):
    trained = train_bytelevel(docs, None, split_bytelevel(LLAMA3_PATTERN))
    vocab, merges = model_json(trained)
    # Whole words with no merge path (as Llama-3's vocab has): only
    # ignore_merges=true turns these pre-tokens into a single id.
    for word in IGNORE_MERGES_WORDS:
        assert word not in vocab, word
        vocab[word] = len(vocab)
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False, ignore_merges=True)
    )
    tok.pre_tokenizer = split_bytelevel(LLAMA3_PATTERN)
    tok.decoder = bytelevel_dec()
    tok.add_special_tokens([special("<|begin_of_text|>"), special("<|end_of_text|>")])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A:0",
                pair="<|begin_of_text|>:0 $A:0 <|begin_of_text|>:1 $B:1",
                special_tokens=[("<|begin_of_text|>", bos)],
            ),
        ]
    )
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
    }
    return tok, cfg


def build_o200k(docs):
    """gpt-oss style: what transformers' TikTokenConverter writes for o200k_harmony."""
    pre = split_bytelevel(O200K_PATTERN)
    trained = train_bytelevel(docs, None, pre)
    tok = Tokenizer(rebuild_bpe(trained, fuse_unk=False, byte_fallback=False, ignore_merges=True))
    tok.pre_tokenizer = pre
    tok.decoder = bytelevel_dec()
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.add_special_tokens([special("<|startoftext|>"), special("<|endoftext|>"), special("<|return|>")])
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
    }
    return tok, cfg


def build_qwen2(docs):
    trained = train_bytelevel(docs, normalizers.NFC(), split_bytelevel(QWEN2_PATTERN))
    tok = Tokenizer(rebuild_bpe(trained, fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = split_bytelevel(QWEN2_PATTERN)
    tok.decoder = bytelevel_dec()
    tok.post_processor = bytelevel_post()
    tok.add_special_tokens([special("<|endoftext|>"), special("<|im_start|>"), special("<|im_end|>")])
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
    }
    return tok, cfg


def train_sentencepiece_like(docs):
    """Learned `▁` pieces and merges, ids renumbered after <unk> <s> </s> and 256 bytes."""
    lines = []
    for d in docs:
        for line in d.replace("\t", " ").split("\n"):
            if line.strip():
                lines.append(line)
    tok = Tokenizer(models.BPE())
    # Whitespace-split words with a `▁` prefix, as SentencePiece learns them.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="always", split=True)
    alphabet = sorted(set("".join(lines).replace(" ", SPIECE)) | {SPIECE})
    trainer = trainers.BpeTrainer(
        vocab_size=SP_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        special_tokens=[],
    )
    tok.train_from_iterator(lines, trainer=trainer)
    learned, merges = model_json(tok)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for piece, _ in sorted(learned.items(), key=lambda kv: kv[1]):
        assert piece not in vocab, piece
        vocab[piece] = len(vocab)
    return vocab, merges


def sp_common(vocab, merges):
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token="<unk>",
            fuse_unk=True,
            byte_fallback=True,
            ignore_merges=False,
        )
    )
    tok.add_special_tokens([special("<unk>"), special("<s>"), special("</s>")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    return tok


def sp_cfg(legacy):
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": legacy,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
    }


def build_llama2(vocab, merges):
    tok = sp_common(vocab, merges)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)])
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tok, sp_cfg(True)


def build_mistral(vocab, merges):
    tok = sp_common(vocab, merges)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="first", split=False)
    # Metaspace must come first: it drops EVERY `▁` of the first token it sees
    # (not just a leading one), so after Fuse it would eat all the spaces.
    tok.decoder = decoders.Sequence(
        [
            decoders.Metaspace(replacement=SPIECE, prepend_scheme="first", split=False),
            decoders.ByteFallback(),
            decoders.Fuse(),
        ]
    )
    return tok, sp_cfg(False)


# ---------------------------------------------------------------- cases




def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_ids(tok, kind, data):
    """Ids of the single-byte tokens spelling `data`."""
    if kind.endswith("bytelevel"):
        b2u = bytes_to_unicode()
        ids = [tok.token_to_id(b2u[b]) for b in data]
    else:
        ids = [tok.token_to_id(f"<0x{b:02X}>") for b in data]
    assert None not in ids, (kind, data)
    return ids


def decode_cases(tok, kind):
    def tid(s):
        i = tok.token_to_id(s)
        assert i is not None, (kind, s)
        return i

    sp = not kind.endswith("bytelevel")
    word = tid(SPIECE + "the") if sp else tid("the")
    space_word = tid(SPIECE + "the") if sp else tid("Ġthe")
    picks = [
        ("first byte of é (C3) alone", byte_ids(tok, kind, b"\xc3")),
        ("é as two byte tokens", byte_ids(tok, kind, "é".encode())),
        ("你 as three byte tokens", byte_ids(tok, kind, "你".encode())),
        ("你 missing its last byte", byte_ids(tok, kind, "你".encode()[:2])),
        ("你 missing its last byte, then a word", byte_ids(tok, kind, "你".encode()[:2]) + [word]),
        ("word, then 🙂's first two bytes", [space_word] + byte_ids(tok, kind, "🙂".encode()[:2])),
        ("🙂 split 2+2 around nothing", byte_ids(tok, kind, "🙂".encode())),
        ("lone continuation byte 0x80 then the piece 'a'", byte_ids(tok, kind, b"\x80") + [tid("a")]),
        ("byte token 'a' (0x61) after a lone 0x80", byte_ids(tok, kind, b"\x80a")),
        ("two leading space pieces then a word",
         [tid(SPIECE if sp else "Ġ")] * 2 + [space_word]),
        ("invalid byte 0xFF", byte_ids(tok, kind, b"\xff")),
        ("世 then 界's first byte then 界 whole", byte_ids(tok, kind, "世".encode() + b"\xe7" + "界".encode())),
        ("word between split halves of ü", byte_ids(tok, kind, b"\xc3") + [space_word] + byte_ids(tok, kind, b"\xbc")),
    ]
    text = "Hi 你好 🙂"
    enc = tok.encode(text, add_special_tokens=False).ids
    for cut in range(1, len(enc)):
        picks.append((f"prefix of encode({text!r}) of length {cut}", enc[:cut]))
    out = []
    for note, ids in picks:
        out.append({"ids": ids, "skip_special_tokens": True, "decoded": tok.decode(ids, skip_special_tokens=True),
                    "note": note})
    # Specials kept vs skipped.
    specials = {
        "gpt2-bytelevel": "a<|endoftext|>b<|pad|>",
        "llama3-bytelevel": "Hello<|end_of_text|>",
        "starcoder-digits-bytelevel": "<|start_of_role|>user<|end_of_role|>x 2026<|end_of_text|>",
        "qwen2-bytelevel": "<|im_start|>user\nhi<|im_end|>",
        "o200k-bytelevel": "<|startoftext|>Hi THERE<|endoftext|><|return|>",
        "llama2-sentencepiece": "<s> hi</s>",
        "mistral-metaspace": "<s> hi</s>",
    }[kind]
    ids = tok.encode(specials, add_special_tokens=True).ids
    for skip in (False, True):
        out.append({"ids": ids, "skip_special_tokens": skip, "decoded": tok.decode(ids, skip_special_tokens=skip),
                    "note": f"encode({specials!r}, add_special_tokens=True)"})
    return out


def make_cases(tok, kind):
    cases = []
    texts = CASES + [t for t in EXTRA_CASES.get(kind, []) if t not in CASES]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        ids_sp = tok.encode(text, add_special_tokens=True).ids
        cases.append({"text": text, "ids": ids, "ids_with_special": ids_sp,
                      "decoded": tok.decode(ids, skip_special_tokens=True)})
    return {"kind": kind, "cases": cases, "decode_cases": decode_cases(tok, kind)}


def dump_cases(obj):
    """One case per line: small diffs, readable, deterministic."""
    lines = ["{", f'  "kind": {json.dumps(obj["kind"])},', '  "cases": [']
    for key in ("cases", "decode_cases"):
        if key != "cases":
            lines.append(f'  "{key}": [')
        items = [json.dumps(c, ensure_ascii=False) for c in obj[key]]
        lines += [f"    {s}," for s in items[:-1]] + [f"    {items[-1]}"]
        lines.append("  ]," if key == "cases" else "  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


# Files whose BPE merges are written in the older "left right" string form (as
# GPT-2's and Llama-2's hub files are); the others keep the [left, right] pair
# form `tokenizers` >= 0.20 saves. Both load in `tokenizers`.
STRING_MERGES = {"gpt2-bytelevel", "llama2-sentencepiece"}


def write_folder(out, kind, tok, cfg):
    d = os.path.join(out, kind)
    os.makedirs(d, exist_ok=True)
    raw = tok.to_str(pretty=True)
    if kind in STRING_MERGES:
        obj = json.loads(raw)
        merges = obj["model"]["merges"]
        assert all(" " not in a and " " not in b for a, b in merges), kind
        obj["model"]["merges"] = [f"{a} {b}" for a, b in merges]
        raw = json.dumps(obj, indent=2, ensure_ascii=False)
    # What we write must load back and be the same tokenizer.
    back = Tokenizer.from_str(raw)
    assert back.to_str() == tok.to_str(), kind
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(raw + ("\n" if not raw.endswith("\n") else ""))
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    cases = make_cases(back, kind)
    with open(os.path.join(d, "cases.json"), "w", encoding="utf-8") as f:
        f.write(dump_cases(cases))
    return back, cases


def check_transformers(out, kinds):
    from transformers import AutoTokenizer

    for kind in kinds:
        d = os.path.join(out, kind)
        with open(os.path.join(d, "cases.json"), encoding="utf-8") as f:
            cases = json.load(f)["cases"]
        t = AutoTokenizer.from_pretrained(d)
        bad = [c["text"] for c in cases
               if t.encode(c["text"], add_special_tokens=False) != c["ids"]
               or t.encode(c["text"], add_special_tokens=True) != c["ids_with_special"]]
        print(f"transformers {type(t).__name__} {kind}: {len(cases) - len(bad)}/{len(cases)} agree"
              + (f"; differ: {bad!r}" if bad else ""))


def write_long_text_checks(out, kinds):
    """Count and CRC32 of each tokenizer's ids for 160 KB of real English
    (tools/train/heldout.txt): a compact exact check on long text."""
    import zlib

    import numpy as np

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(root, "tools/train/heldout.txt"), encoding="utf-8").read()
    checks = {}
    for kind in kinds:
        tok = Tokenizer.from_file(os.path.join(out, kind, "tokenizer.json"))
        ids = tok.encode(text, add_special_tokens=False).ids
        checks[kind] = {"count": len(ids), "crc32": zlib.crc32(np.asarray(ids, dtype="<u4").tobytes())}
    with open(os.path.join(out, "heldout.json"), "w") as f:
        json.dump({"text": "tools/train/heldout.txt", "ids": checks}, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/tokenizers")
    ap.add_argument("--check-transformers", action="store_true")
    args = ap.parse_args()

    docs = training_docs()
    sp_vocab, sp_merges = train_sentencepiece_like(docs)
    builds = [
        ("gpt2-bytelevel", build_gpt2(docs)),
        ("llama3-bytelevel", build_llama3(docs)),
        ("qwen2-bytelevel", build_qwen2(docs)),
        ("starcoder-digits-bytelevel", build_starcoder(docs)),
        ("o200k-bytelevel", build_o200k(docs)),
        ("llama2-sentencepiece", build_llama2(sp_vocab, sp_merges)),
        ("mistral-metaspace", build_mistral(sp_vocab, sp_merges)),
    ]
    for kind, (tok, cfg) in builds:
        back, cases = write_folder(args.out, kind, tok, cfg)
        diff = [c["text"] for c in cases["cases"] if c["decoded"] != c["text"]]
        print(f"{kind}: vocab {back.get_vocab_size(with_added_tokens=True)}, {len(cases['cases'])} cases, "
              f"{len(diff)} decode(encode(text)) != text" + (f": {diff!r}" if diff else ""))
    write_long_text_checks(args.out, [k for k, _ in builds])
    if args.check_transformers:
        check_transformers(args.out, [k for k, _ in builds])


if __name__ == "__main__":
    main()
