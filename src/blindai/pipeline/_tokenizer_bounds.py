"""What a ``tokenizer.json`` can make of a text, bounded before the tokenizers library runs.

The library applies a file's normalizers to the whole text in Rust, where nothing can stop it
or cap its memory: a ``Replace`` of ``"a"`` by 1000 characters turned 100 KB of text into 100
MB (3.2 GB of memory, 10 s), and a ``TemplateProcessing`` can add any number of special ids to
every text. So, at upload, :func:`bound_of` reads the file's normalizer (every kind the library
has; an unknown one is refused) into an :class:`Expansion`: a text of ``n`` bytes normalizes to
at most ``factor * n + extra`` bytes (UTF-8: every token the model and pre-tokenizer make
covers one byte at least, a byte-level tokenizer's one byte exactly); and its post-processor
into the number of ids it adds. The text step then refuses a text whose normalized form could
pass the pipeline limits' ``max_text_bytes`` times :data:`EXPANSION_BUDGET` bytes (a tokenizer
that expands a text at most that many times, BERT's included, still takes texts of up to
``max_text_bytes``; only those that expand more take less), and the upload refuses a
post-processor that adds more ids than ``max_sequence_length``.

The factors are the worst case per byte: Unicode normalization (NFC 3, NFD 4, NFKC/NFKD 18:
code points from one, which bound bytes from a byte too: Python's ``unicodedata`` gives 3,
3 and 11), lowercasing 3 (1.5 in bytes), ``BertNormalizer`` 3 for a CJK character (a space
each side), else its accent stripping times lowercasing (12 at most), a ``Replace`` by a
string its content's bytes over its pattern's (a regular expression may match the empty
string: one content per byte and one more), ``Prepend`` its text's bytes once, ``ByteLevel``
4 (a byte to a character of 1 or 2 bytes), ``Precompiled`` (SentencePiece's character map) its
longest replacement's bytes. Counted in characters, a ``Replace`` of ``a`` by 16 emoji (64
bytes, 64 tokens of a byte-level tokenizer) was bounded at 16 and took 35% more memory than
its cost.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blindai._documents import loads_json
from blindai.errors import PipelineError
from blindai.pipeline._tokenizer_patterns import check_patterns

__all__ = [
    "EXPANSION_BUDGET",
    "MAX_LABEL_BYTES",
    "MAX_PIECE_CHARACTERS",
    "MAX_WORD_CHARACTERS",
    "Expansion",
    "added_ids",
    "bound_of",
    "check_model",
    "decoder_bound",
    "decoding",
    "expansion",
]

EXPANSION_BUDGET = 16
"""Bytes a text may normalize to, per byte of the server's ``max_text_bytes``."""

MAX_WORD_CHARACTERS = 200
"""Most ``max_input_chars_per_word`` a WordPiece model may have (BERT's and the library's
default: 100; a longer word is one unknown token). WordPiece tries every end of a word for
each piece it takes, in time more than the square of the word's length, in Rust, where
nothing can stop it: one word of 19 KB (``"a" + "ing" * 6400``) took 66 s of a worker; with
200, 1 MiB of such words takes about 7 s."""

MAX_LABEL_BYTES = 16 << 10
"""Longest label (UTF-8 bytes) a ``next_token`` output step may make of one token through the
tokenizer's decoder: its longest token times what the decoder can make of a byte. A
``Replace`` decoder expands as a normalizer does, and after the run, outside every memory
bound: three Replaces of 100 made each label of a 1 KB tokenizer.json a million characters."""

MAX_PIECE_CHARACTERS = 100
"""Longest piece a Unigram model may have (SentencePiece's default: 16). Its lattice holds, at
each character of a text, every piece starting there: time in the text's length times the
longest piece's (pieces of 1 to 1000 ``"a"``: 40 000 ``"a"`` took 8 s; of 1 to 100, 200 000
took 1.5 s)."""

_FIXED = {
    "NFC": 3,
    "NFD": 4,
    "NFKC": 18,
    "NFKD": 18,
    "Lowercase": 3,
    "Strip": 1,
    "StripAccents": 1,
    "Nmt": 1,
    "ByteLevel": 4,
}
_MAX_DEPTH = 8


@dataclass(frozen=True)
class Expansion:
    """A text of ``n`` bytes normalizes to at most ``factor * n + extra`` bytes (UTF-8)."""

    factor: int = 1
    extra: int = 0

    def then(self, after: Expansion) -> Expansion:
        """This normalization followed by ``after``."""
        return Expansion(self.factor * after.factor, after.factor * self.extra + after.extra)

    def largest_text(self, budget: int) -> int:
        """The longest text (bytes) whose normalized form fits in ``budget`` bytes."""
        return max(0, (budget - self.extra) // self.factor)


def _refuse(what: str) -> PipelineError:
    return PipelineError(f"tokenizer.json: {what}")


def _text(node: Mapping[str, Any], key: str) -> str:
    value = node.get(key)
    if not isinstance(value, str):
        raise _refuse(f"a {node.get('type')} normalizer without its {key} text")
    return value


def _parts(node: Mapping[str, Any], key: str) -> list[Any]:
    """A ``Sequence``'s list of normalizers or processors."""
    parts = node.get(key)
    if not isinstance(parts, list):
        raise _refuse(f"a Sequence without its list of {key}")
    return parts


def _replace(node: Mapping[str, Any]) -> Expansion:
    content = len(_text(node, "content").encode("utf-8", "replace"))
    pattern = node.get("pattern")
    if isinstance(pattern, Mapping) and isinstance(pattern.get("String"), str):
        found = len(pattern["String"].encode("utf-8", "replace"))
        if found == 0:  # matches between every two characters (fewer than bytes)
            return Expansion(1 + content, content)
        return Expansion(max(1, -(-content // found)))
    if isinstance(pattern, Mapping) and isinstance(pattern.get("Regex"), str):
        return Expansion(1 + content, content)  # it may match the empty string anywhere
    raise _refuse("a Replace normalizer without a String or Regex pattern")


def _precompiled(node: Mapping[str, Any]) -> Expansion:
    """SentencePiece's map: a 32-bit trie size, the trie, then NUL-ended replacements."""
    raw = node.get("precompiled_charsmap")
    if raw is None:
        return Expansion()
    try:
        blob = base64.b64decode(raw, validate=True) if isinstance(raw, str) else bytes(raw)
        (trie,) = struct.unpack_from("<I", blob)
    except (binascii.Error, struct.error, TypeError, ValueError):
        raise _refuse("a Precompiled normalizer whose character map does not read") from None
    pool = blob[4 + trie :]
    longest = max(map(len, pool.split(b"\0")), default=1)  # bytes
    return Expansion(max(1, longest))


def expansion(node: object, depth: int = 0) -> Expansion:
    """The bound of one normalizer (a ``tokenizer.json`` ``normalizer`` value)."""
    if node is None:
        return Expansion()
    if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
        raise _refuse("a normalizer that is not an object, or nested too deeply")
    kind = node.get("type")
    if isinstance(kind, str) and kind in _FIXED:
        return Expansion(_FIXED[kind])
    if kind == "BertNormalizer":
        # a CJK character gets a space each side (and has no decomposition or case); another
        # decomposes (NFD, when accents are stripped: lowercase implies it) and is lowercased
        accents = 4 if node.get("strip_accents") or node.get("lowercase") else 1
        lower = 3 if node.get("lowercase") else 1
        return Expansion(max(3 if node.get("handle_chinese_chars", True) else 1, accents * lower))
    if kind == "Replace":
        return _replace(node)
    if kind == "Prepend":
        return Expansion(1, len(_text(node, "prepend").encode("utf-8", "replace")))
    if kind == "Precompiled":
        return _precompiled(node)
    if kind == "Sequence":
        total = Expansion()
        for part in _parts(node, "normalizers"):
            total = total.then(expansion(part, depth + 1))
        return total
    raise _refuse(f"normalizer type {str(kind)[:40]!r} is not one this server can bound")


_SHRINKING_DECODERS = frozenset(
    {"WordPiece", "BPEDecoder", "Metaspace", "ByteFallback", "Fuse", "Strip"}
)
"""Decoders that make no more bytes of a token than it has (a prefix or suffix dropped, the
Metaspace character to a space, ``<0x41>`` to its byte, tokens joined, characters stripped)."""


def decoding(node: object, depth: int = 0) -> Expansion:
    """What a ``decoder`` can make of one token of ``n`` bytes: ``factor * n + extra`` bytes."""
    if node is None:
        return Expansion()
    if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
        raise _refuse("a decoder that is not an object, or nested too deeply")
    kind = node.get("type")
    if kind in _SHRINKING_DECODERS:
        return Expansion()
    if kind == "ByteLevel":  # a character to a byte; a byte that is not UTF-8 to U+FFFD
        return Expansion(3)
    if kind == "CTC":  # its word delimiter to a space: an empty one between every character
        return Expansion(2, 1)
    if kind == "Replace":
        return _replace(node)
    if kind == "Sequence":
        total = Expansion()
        for part in _parts(node, "decoders"):
            total = total.then(decoding(part, depth + 1))
        return total
    raise _refuse(f"decoder type {str(kind)[:40]!r} is not one this server can bound")


def decoder_bound(data: bytes) -> Expansion:
    """What a ``tokenizer.json``'s decoder can make of a token (:func:`decoding`)."""
    try:
        doc = loads_json(data)
    except ValueError:
        raise _refuse("not a JSON document") from None
    if not isinstance(doc, Mapping):
        raise _refuse("not a JSON object")
    return decoding(doc.get("decoder"))


def added_ids(node: object, depth: int = 0) -> int:
    """The most ids a ``post_processor`` adds to one text (or a pair)."""
    if node is None:
        return 0
    if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
        raise _refuse("a post_processor that is not an object, or nested too deeply")
    kind = node.get("type")
    if kind == "ByteLevel":
        return 0
    if kind in ("BertProcessing", "RobertaProcessing"):
        return 4  # [CLS] A [SEP] B [SEP], <s> A </s></s> B </s>
    if kind == "TemplateProcessing":
        return _template_ids(node)
    if kind == "Sequence":
        return sum(added_ids(part, depth + 1) for part in _parts(node, "processors"))
    raise _refuse(f"post_processor type {str(kind)[:40]!r} is not one this server can bound")


def _template_ids(node: Mapping[str, Any]) -> int:
    specials = node.get("special_tokens")
    if not isinstance(specials, Mapping):
        raise _refuse("a TemplateProcessing without its special_tokens")
    most = 0
    for key in ("single", "pair"):
        pieces = node.get(key, [])
        if not isinstance(pieces, list):
            raise _refuse(f"a TemplateProcessing whose {key} template is not a list")
        count = 0
        for piece in pieces:
            special = piece.get("SpecialToken") if isinstance(piece, Mapping) else None
            if isinstance(special, Mapping):
                entry = specials.get(special.get("id"))
                ids = entry.get("ids") if isinstance(entry, Mapping) else None
                count += len(ids) if isinstance(ids, list) else 1
        most = max(most, count)
    return most


def _longest_piece(node: Mapping[str, Any]) -> int:
    """Characters of a Unigram model's longest piece (its ``vocab``: ``[piece, score]`` pairs)."""
    vocab = node.get("vocab")
    if not isinstance(vocab, list):
        raise _refuse("a Unigram model without its list of pieces")
    pieces = (entry[0] if isinstance(entry, list) and entry else "" for entry in vocab)
    return max((len(p) for p in pieces if isinstance(p, str)), default=0)


def check_model(node: object) -> None:
    """Refuse a ``model`` whose time on a text this module cannot bound: a WordPiece taking
    words of more than :data:`MAX_WORD_CHARACTERS` characters, a Unigram with pieces of more
    than :data:`MAX_PIECE_CHARACTERS`."""
    if isinstance(node, Mapping) and node.get("type") == "Unigram":
        longest = _longest_piece(node)
        if longest > MAX_PIECE_CHARACTERS:
            raise _refuse(
                f"its Unigram model has a piece of {longest} characters, more than this "
                f"server takes ({MAX_PIECE_CHARACTERS}): the time it takes is the text's "
                "length times its longest piece's"
            )
    if not isinstance(node, Mapping) or node.get("type") != "WordPiece":
        return
    most = node.get("max_input_chars_per_word", 100)
    if isinstance(most, bool) or not isinstance(most, int) or most > MAX_WORD_CHARACTERS:
        shown = most if isinstance(most, int) else repr(most)[:20]
        raise _refuse(
            f"its WordPiece model's max_input_chars_per_word of {shown}, more than "
            f"this server takes ({MAX_WORD_CHARACTERS}): the time it takes grows faster than "
            "the square of a word's length"
        )


def bound_of(data: bytes, *, max_added: int) -> Expansion:
    """Read a ``tokenizer.json``'s bounds; PipelineError for a normalizer, post-processor or
    model this module cannot bound, a post-processor that adds more than ``max_added`` ids
    to a text, or a regular expression not known to run in linear time
    (:func:`~blindai.pipeline._tokenizer_patterns.check_patterns`)."""
    try:
        doc = loads_json(data)
    except ValueError:
        raise _refuse("not a JSON document") from None
    if not isinstance(doc, Mapping):
        raise _refuse("not a JSON object")
    check_patterns(doc)
    check_model(doc.get("model"))
    added = added_ids(doc.get("post_processor"))
    if added > max_added:
        raise _refuse(
            f"its post_processor adds up to {added} ids to a text, more than this server's "
            f"max_sequence_length ({max_added})"
        )
    return expansion(doc.get("normalizer"))
