#!/usr/bin/env python3
"""Writes the small tokenizers the tokenizer tests use, one directory each with a
tokenizer.json and a tokenizer_config.json laid out as their model families lay them out:

  gpt2-mini     byte-level BPE, ByteLevel pre-tokenizer with GPT-2's split
  llama3-mini   byte-level BPE, Split with Llama 3's regex, ignore_merges, BOS template
  qwen2-mini    byte-level BPE, NFC normalizer, Split with Qwen2's regex, merges as pairs
  smollm-mini   byte-level BPE, Digits (individual) then ByteLevel
  llama2-mini   SentencePiece-style BPE: Prepend/Replace normalizer, byte fallback, <s> template
  mistral-mini  SentencePiece-style BPE: Metaspace (prepend first), Metaspace decoder,
                added tokens with lstrip/rstrip, add_bos_token in tokenizer_config.json

The merges are learnt here by plain BPE counting over TRAINING (a few paragraphs of prose,
code, digits and other scripts), so the vocabularies are tiny (~300-900 tokens) but exercise
every rule: multi-step merges, byte fallback for the characters they never saw, added tokens.

  python3 tests/model/tokenizers/make_fixtures.py    # rewrites the directories beside it
Deterministic: the same files every run.
"""
import collections
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))

TRAINING = """
The quick brown fox jumps over the lazy dog. It's a test of the tokenizer, and we'll see
whether they're right: I've said it before, you'd know. THE END? Not quite; there's more.
Tokenization splits text into pieces, then merges the most frequent pairs of symbols.
In 2024 there were 365 days, 12 months and 52 weeks; 3.14159 is pi and 2.71828 is e.
def encode(text, add_special_tokens=True):
    ids = [bos_id] if add_special_tokens else []
    for piece in split(text):
        ids.extend(bpe(piece))
    return ids  # the token ids
if (x != nullptr && y >= 0) { return x->value + y; } else { return -1; }
for (int i = 0; i < n; i++) printf("%d\\n", a[i]);
Der schnelle braune Fuchs springt über den faulen Hund. Größe, Übung, schön.
Le renard brun rapide saute par-dessus le chien paresseux. Été, café, naïve, à bientôt.
El rápido zorro marrón salta sobre el perro perezoso. ¿Dónde está? ¡Aquí!
Быстрая коричневая лиса прыгает через ленивую собаку. Привет, мир!
Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.
快速的棕色狐狸跳过了懒狗。你好，世界！日本語のテキストです。東京は大きい。
안녕하세요 세계. 한국어 문장입니다.
Emoji: 🎉 🚀 👍🏽 ❤️ 😀 — and more text after them.
    Indented lines,\tтабы\tand\ttabs.
Line one
Line two\r\nLine three

Numbers: 1234567890 0.5 100% $19.99 #42 @user https://example.com/path?q=1&r=2
"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def learn_merges(words, n_merges, skip=frozenset()):
    """Plain BPE: words is a Counter of tuples of symbols; returns the merges in order. Symbols
    holding a character of skip never merge (they have no token of their own)."""
    words = {tuple(w): c for w, c in words.items()}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                if not skip.intersection(a + b):
                    pairs[a, b] += c
        if not pairs:
            break
        # Most frequent, ties by the pair itself: deterministic.
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append((a, b))
        merged = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        words = merged
    return merges


def byte_level_words(text):
    """Roughly GPT-2's split (the merges need not follow it exactly to be valid)."""
    out = collections.Counter()
    for piece in re.findall(r"'\w+| ?\w+| ?[^\w\s]+|\s+", text):
        out[tuple(B2U[b] for b in piece.encode())] += 1
    return out


def byte_level_vocab(merges, extra=()):
    vocab = {}
    for b in range(256):
        vocab.setdefault(B2U[b], len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for tok in extra:
        vocab.setdefault("".join(B2U[x] for x in tok.encode()), len(vocab))
    return vocab


def added(id_, content, special=True, normalized=False, lstrip=False, rstrip=False):
    return {"id": id_, "content": content, "single_word": False, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": normalized, "special": special}


def write(name, tok, config):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
        f.write("\n")


def bpe_model(vocab, merges, pairs=False, **kw):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
         "ignore_merges": False, "vocab": vocab,
         "merges": [[a, b] for a, b in merges] if pairs else ["%s %s" % m for m in merges]}
    m.update(kw)
    return m


def byte_level_tokenizer(pre, merges, specials, normalizer=None, post=None, extra=(), **kw):
    vocab = byte_level_vocab(merges, extra)
    added_tokens = []
    for content in specials:
        added_tokens.append(added(len(vocab) + len(added_tokens), content))
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
            "normalizer": normalizer, "pre_tokenizer": pre,
            "post_processor": post or {"type": "ByteLevel", "add_prefix_space": True,
                                       "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": bpe_model(vocab, merges, **kw)}


LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
            "invert": False}


def byte_level_pre(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
            "use_regex": use_regex}


def sp_words(text):
    """SentencePiece's view: spaces as ▁, one ▁ before the text, a word per ▁."""
    text = "▁" + text.replace(" ", "▁")
    out = collections.Counter()
    for w in re.findall(r"▁?[^▁]+|▁", text):
        out[tuple(w)] += 1
    return out


def sp_vocab(words, merges):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    chars = collections.Counter()
    for w, c in words.items():
        for ch in w:
            chars[ch] += c
    # Characters seen at least twice get a token; the rest go through byte fallback.
    for ch, c in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        if c >= 2:
            vocab.setdefault(ch, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab


def main():
    words = byte_level_words(TRAINING)
    merges = learn_merges(words, 450)

    eot = "<|endoftext|>"
    write("gpt2-mini",
          byte_level_tokenizer(byte_level_pre(True), merges, [eot]),
          {"add_prefix_space": False, "bos_token": eot, "eos_token": eot, "unk_token": eot,
           "model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer"})

    llama3_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                       "<|end_header_id|>", "<|eot_id|>", "<|reserved_special_token_0|>"]
    vocab_size = len(byte_level_vocab(merges, [" tokenization", " merges", "12345"]))
    bos = vocab_size  # the first added token
    write("llama3-mini",
          byte_level_tokenizer(
              {"type": "Sequence", "pretokenizers": [split(LLAMA3_RE), byte_level_pre(False)]},
              merges, llama3_specials, ignore_merges=True,
              extra=[" tokenization", " merges", "12345"],
              post={"type": "Sequence", "processors": [
                  {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                   "use_regex": True},
                  {"type": "TemplateProcessing",
                   "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                              {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                            {"Sequence": {"id": "A", "type_id": 0}},
                            {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                            {"Sequence": {"id": "B", "type_id": 1}}],
                   "special_tokens": {"<|begin_of_text|>": {
                       "id": "<|begin_of_text|>", "ids": [bos],
                       "tokens": ["<|begin_of_text|>"]}}}]}),
          {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
           "clean_up_tokenization_spaces": True, "model_max_length": 131072,
           "tokenizer_class": "PreTrainedTokenizerFast"})

    write("qwen2-mini",
          byte_level_tokenizer(
              {"type": "Sequence", "pretokenizers": [split(QWEN2_RE), byte_level_pre(False)]},
              merges, [eot, "<|im_start|>", "<|im_end|>"], normalizer={"type": "NFC"},
              pairs=True),
          {"add_prefix_space": False, "bos_token": None, "eos_token": "<|im_end|>",
           "pad_token": eot, "errors": "replace", "model_max_length": 32768,
           "tokenizer_class": "Qwen2Tokenizer", "unk_token": None})

    write("smollm-mini",
          byte_level_tokenizer(
              {"type": "Sequence", "pretokenizers": [
                  {"type": "Digits", "individual_digits": True}, byte_level_pre(True)]},
              merges, [eot, "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>"]),
          {"add_prefix_space": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
           "model_max_length": 2048, "tokenizer_class": "GPT2Tokenizer"})

    sp = sp_words(TRAINING)
    char_counts = collections.Counter()
    for w, c in sp.items():
        for ch in w:
            char_counts[ch] += c
    rare = frozenset(ch for ch, c in char_counts.items() if c < 2)
    sp_merges = learn_merges(sp, 400, rare)
    vocab = sp_vocab(sp, sp_merges)
    sp_added = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]
    sp_decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    template = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<s>", "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    sp_config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                 "eos_token": "</s>", "unk_token": "<unk>", "legacy": True,
                 "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer"}
    write("llama2-mini",
          {"version": "1.0", "truncation": None, "padding": None, "added_tokens": sp_added,
           "normalizer": {"type": "Sequence", "normalizers": [
               {"type": "Prepend", "prepend": "▁"},
               {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
           "pre_tokenizer": None, "post_processor": template, "decoder": sp_decoder,
           "model": bpe_model(vocab, sp_merges, unk_token="<unk>", fuse_unk=True,
                              byte_fallback=True)},
          sp_config)

    n = len(vocab)
    mistral_added = sp_added + [added(n, "[INST]"), added(n + 1, "[/INST]"),
                                added(n + 2, "<mask>", special=False, lstrip=True),
                                added(n + 3, "<sep>", special=False, rstrip=True)]
    write("mistral-mini",
          {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": mistral_added, "normalizer": None,
           "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                             "split": False},
           "post_processor": template,
           "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                       "split": False},
           "model": bpe_model(vocab, sp_merges, unk_token="<unk>", fuse_unk=True,
                              byte_fallback=True)},
          dict(sp_config, legacy=False))


if __name__ == "__main__":
    main()
