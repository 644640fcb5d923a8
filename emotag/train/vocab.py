"""Build the WordPiece tokenizer of a from-scratch model (Chinese characters are single tokens).

Placeholders from normalisation (`<url>`, `<phone>` ...) and the most frequent Weibo emoticons
(`[哈哈]`, `[泪]` ...) become added tokens, so each reaches the encoder whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from emotag.text.normalize import EMOTICON, PLACEHOLDERS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 3, max_emoticons: int = 400
) -> Tokenizer:
    """Train a WordPiece vocabulary on already-normalised texts."""
    texts = list(texts)
    emoticons = Counter(m for t in texts for m in EMOTICON.findall(t))
    added = list(PLACEHOLDERS) + [e for e, c in emoticons.most_common(max_emoticons) if c >= min_frequency]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=50))
    # Text arrives normalised; BertNormalizer only isolates CJK characters (no lower-casing or accents).
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens(added)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return tok
