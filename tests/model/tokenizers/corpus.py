"""The parity corpus: a few thousand strings, the same for a given seed, built to reach every
rule of the tokenizers — prose with contractions in every case, whitespace runs of every kind
(White_Space and near misses), digit runs in several scripts, code, emoji sequences, CJK,
Hangul (precomposed and as jamo), combining marks and NFC's hard cases, added tokens and near
misses, and random assigned code points.

Characters are drawn among those assigned in the Unicode version of Python's unicodedata (the
one zmix's tables come from): a character assigned later is unassigned for zmix and may be a
letter for a reference built on newer tables.
"""
import random
import sys
import unicodedata

WORDS = ["the", "The", "THE", "quick", "brown", "fox", "tokenization", "merges", "hello", "world",
         "Hello", "over", "lazy", "dog", "text", "pieces", "encode", "return", "größe", "naïve",
         "café", "schön", "привет", "мир", "γρήγορη", "東京", "日本語", "한국어", "x", "a", "I",
         "tokenizer", "split", "12345", "ids", "bpe"]
CONTRACTIONS = ["don't", "I'm", "we'll", "they're", "It's", "IT'S", "you'VE", "he'D", "'s", "'ll",
                "'RE", "'Ve", "'M", "'t", "'T", "O'Neil", "rock'n'roll", "'", "''", "'ſ", "'K",
                "'st", "'llama", "x's", "X'S"]
WHITESPACE = [" ", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028",
              "\u2029", "\u0085", "\u000b", "\u000c", "\u2003", "\u202f", "\u1680", "\u200b",
              "\ufeff", "\u180e", "\u001c", "\u001f"]
DIGITS = "0123456789"
OTHER_DIGITS = ["٣", "٤٥", "０１２", "²", "½", "Ⅻ", "৩", "१२३", "𝟙𝟚", "⑩"]
CODE = ["def f(x):\n    return x**2\n", "if (a && b) { c++; }", "for i in range(10):",
        "#include <stdio.h>", "x = [1, 2, 3]  # list", "printf(\"%d\\n\", n);", "a->b->c",
        "SELECT * FROM t WHERE id=42;", "<div class=\"x\">hi</div>", "λx. x + 1", "$HOME/.cache",
        "    indented\n\tand tabbed", "https://example.com/a?b=1&c=2", "foo_bar_baz = None"]
EMOJI = ["🎉", "🚀", "👍🏽", "❤️", "😀", "👨‍👩‍👧‍👦", "🇫🇷", "1️⃣", "🏳️‍🌈", "🤖", "✨", "🧪"]
SCRIPT_RANGES = [(0x4E00, 0x9FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xD7A3),
                 (0x1100, 0x11FF), (0x0400, 0x04FF), (0x0370, 0x03FF), (0x0600, 0x06FF),
                 (0x05D0, 0x05EA), (0x0900, 0x097F), (0x0E00, 0x0E7F), (0x00C0, 0x024F),
                 (0x1E00, 0x1EFF), (0x20000, 0x2A6DF), (0xFF00, 0xFFEF)]
NFC_CASES = ["\u212b", "\u2126", "e\u0301", "E\u0301\u0327", "\u1100\u1161\u11a8", "\u1100\u1161",
             "\uac00\u11a8", "\u0958", "\ufb2c", "\U0001d160", "\u0344", "q\u0307\u0323",
             "\u1e0b\u0323", "a\u0328\u0301", "o\u0308\u0304", "\u0340", "A\u030a", "\u00c5",
             "\u0e40\u0e2a", "\u09c7\u09be", "\u0b47\u0b3e", "i\u0307\u0301", "\u0300a"]


_ASSIGNED = []


def assigned_chars():
    """Assigned code points (not surrogates, not NUL) of Python's Unicode version."""
    if _ASSIGNED:
        return _ASSIGNED
    out = _ASSIGNED
    for cp in range(1, 0x30000):
        cat = unicodedata.category(chr(cp))
        if cat not in ("Cn", "Cs"):
            out.append(chr(cp))
    return out


def make(seed, n, specials):
    rng = random.Random(seed)
    pool = assigned_chars()
    near = []
    for s in specials:
        near += [s, s[:-1], s[1:], " " + s, s + " ", "  " + s + "  ", s + s, s.upper()]

    def script_text():
        lo, hi = rng.choice(SCRIPT_RANGES)
        return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8)))

    def combining():
        base = rng.choice("aeiouAEOnsczgkq" + "αβяж")
        marks = [chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(1, 3))]
        return base + "".join(marks)

    def digits():
        s = "".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.3:
            s = s[: len(s) // 2] + rng.choice([",", ".", " ", "_", "-"]) + s[len(s) // 2:]
        if rng.random() < 0.2:
            s += rng.choice(OTHER_DIGITS)
        return s

    def prose():
        ws = [rng.choice(WORDS + CONTRACTIONS) for _ in range(rng.randint(1, 6))]
        sep = [rng.choice([" ", " ", " ", ", ", ". ", "! ", "? ", ": ", "-", " (", ") "])
               for _ in ws]
        return "".join(w + s for w, s in zip(ws, sep)).rstrip()

    fragments = [
        (prose, 6),
        (lambda: "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 6))), 4),
        (digits, 3),
        (lambda: rng.choice(CODE), 2),
        (lambda: rng.choice(EMOJI) * rng.randint(1, 2), 2),
        (script_text, 3),
        (combining, 2),
        (lambda: rng.choice(NFC_CASES), 2),
        (lambda: "".join(rng.choice(pool) for _ in range(rng.randint(1, 5))), 3),
        (lambda: rng.choice(near) if near else "", 3),
        (lambda: rng.choice(CONTRACTIONS), 2),
        (lambda: rng.choice(["▁", "▁▁", "▁x", "<0x41>", "<0xE2>", "ſ", "\u2581 "]), 1),
    ]
    weights = [w for _, w in fragments]
    out = ["", " ", "  ", "\n", "a", "A", "'", "'s", "▁", "<", "0", "12345678", "\r\n\r\n",
           "Hello world", " Hello world", "Hello world ", "hello  world", "tokenization"]
    out += specials
    while len(out) < n:
        k = rng.choice([1, 1, 2, 2, 3, 4, 6])
        parts = [rng.choices(fragments, weights)[0][0]() for _ in range(k)]
        s = "".join(p + rng.choice(["", "", " ", "\n"]) for p in parts)
        if rng.random() < 0.15:
            s = rng.choice([" ", "  ", "\n", "\t"]) + s
        out.append(s)
    return out


if __name__ == "__main__":
    import json
    json.dump(make(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]), sys.stdout,
              ensure_ascii=False)
