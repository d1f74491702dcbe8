"""A word-level tokenizer built offline, for tiny recipes and tests.

A fresh clone has no hub access and therefore no tokenizer; tiny offline
recipes build this one from the words of their data and save it next to the
tiny backbone so that ``AutoTokenizer.from_pretrained(folder)`` reloads it.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK, BOS = "<pad>", "</s>", "<unk>", "<s>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, UNK, BOS)  # ids 0, 1, 2, 3


def build_toy_tokenizer(
    words: Iterable[str], out_dir: str | None = None
) -> PreTrainedTokenizerFast:
    """Word-level fast tokenizer: <pad>=0, </s>=1, <unk>=2, <s>=3, then ``words``.

    Entries may be words or whole texts: each is split with the ``Whitespace``
    pre-tokenizer (``\\w+|[^\\w\\s]+``) and the pieces keep their first-seen order
    (deduplicated), so ids are stable across runs.
    Encoding appends ``</s>`` (as T5 does); decoding joins words with spaces.
    When ``out_dir`` is given the tokenizer is saved there with ``save_pretrained``.
    """
    pre = pre_tokenizers.Whitespace()
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        # Pre-tokenize each entry the way encoding will, so "it's" or whole
        # sentences never map to <unk> at encode time.
        for piece, _ in pre.pre_tokenize_str(w):
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, vocab[EOS])]
    )
    # WordPiece decoder with an impossible prefix = "join with spaces", no subword merging.
    tok.decoder = decoders.WordPiece(prefix="\x00", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        bos_token=BOS,
        model_max_length=1_000_000,
    )
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast
