"""Makes tests/fixtures/dalle/tokenizers.json: DALLE-pytorch 1.6.6's tokenizer outputs on awkward captions.

Run once (the outputs are committed), with the upstream package and its tokenizer's dependencies:
    pip install --target /tmp/dalle-ref-pkgs --no-deps dalle-pytorch==1.6.6 einops \
        rotary-embedding-torch==0.2.3 axial-positional-embedding==0.2.1 ftfy regex wcwidth tokenizers
    # youtokentome builds only with Cython < 3, without build isolation:
    pip install 'cython<3' && pip install --target /tmp/dalle-ref-pkgs --no-build-isolation youtokentome
    PYTHONPATH=/tmp/dalle-ref-pkgs python tools/make_dalle_tokenizer_fixtures.py

For each kind (CLIP's BPE, a small Hugging Face tokenizers file and a small YouTokenToMe
model, both trained here and written beside the JSON) it records upstream's `tokenize`
at a short context length with truncation, whether each caption is refused without it,
`tokenize` at 256 (trailing padding left out), and `decode` of the truncated rows.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dalle_fixtures import OUT, stub_unused_imports  # noqa: E402

CONTEXT = 12
CAPTIONS = [
    "a red square",
    "An oil painting of a FOX, sitting in the snow; at dusk!!",
    "it's a dog's life -- isn't it? (yes) [no] {maybe} 50% off @ $3.99",
    "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve pi\u00f1ata, \u00c5ngstr\u00f6m",
    "\u65e5\u672c\u8a9e\u306e\u30ad\u30e3\u30d7\u30b7\u30e7\u30f3 and "
    "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442",
    "emoji \U0001f98a\U0001f332 and symbols \u2122 \u00a9 \u2192 \u221e",
    "html &amp; entities &lt;b&gt;bold&lt;/b&gt; &amp;amp; &quot;quoted&quot; &#39;single&#39; &eacute;",
    "  tabs\tand\nnewlines\r\n and\u00a0no-break\u3000ideographic   spaces  ",
    "mojibake: caf\u00c3\u00a9 and \u00e2\u20ac\u0153smart quotes\u00e2\u20ac\u009d",
    "special <|startoftext|> and <|endoftext|> and <start_of_text> tokens",
    "numbers 1234567 and 3.14159 and 10,000",
    "a very long caption " + " ".join(f"word{i}" for i in range(40)),
    "",
    "   ",
]


def _train_hf(corpus: list[str], path: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<pad>"])
    tokenizer.save(str(path))


def _train_yttm(corpus: list[str], path: Path) -> None:
    import youtokentome

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as file:
        file.write("\n".join(corpus))
    youtokentome.BPE.train(data=file.name, model=str(path), vocab_size=120, coverage=1.0)


def _decode(tokenizer, ids, **kwargs):
    """Upstream's decode; its YouTokenToMe decode returns a list of one string per row given."""
    text = tokenizer.decode(ids, **kwargs)
    return text[0] if isinstance(text, list) else text


def _strip_padding(row: list[int]) -> list[int]:
    while row and row[-1] == 0:
        row = row[:-1]
    return row


def _record(tokenizer) -> dict:
    import torch

    refused = []
    for caption in CAPTIONS:
        try:
            tokenizer.tokenize(caption, CONTEXT)
            refused.append(False)
        except RuntimeError:
            refused.append(True)
    truncated = tokenizer.tokenize(CAPTIONS, CONTEXT, truncate_text=True)
    return {
        "truncated": truncated.tolist(),
        "refused": refused,
        "full": [_strip_padding(row) for row in tokenizer.tokenize(CAPTIONS, 256).tolist()],
        "decoded": [_decode(tokenizer, row) for row in truncated],
        "vocab_size": int(tokenizer.vocab_size),
        "padding_decoded": _decode(tokenizer, torch.tensor(truncated[0].tolist() + [5]), pad_tokens={5}),
    }


def main() -> None:
    stub_unused_imports()
    sys.modules.setdefault("transformers", types.ModuleType("transformers"))
    sys.modules["transformers"].BertTokenizer = object  # the Chinese tokenizer downloads its vocabulary; unused
    from dalle_pytorch.tokenizer import HugTokenizer, SimpleTokenizer, YttmTokenizer

    corpus = CAPTIONS * 3 + ["the quick brown fox jumps over the lazy dog"] * 5
    hf_path, yttm_path = OUT / "tokenizer_hf.json", OUT / "tokenizer_yttm.model"
    _train_hf(corpus, hf_path)
    _train_yttm(corpus, yttm_path)
    fixtures = {
        "context_length": CONTEXT,
        "captions": CAPTIONS,
        "clip": _record(SimpleTokenizer()),
        "hf": {"file": hf_path.name, **_record(HugTokenizer(hf_path))},
        "yttm": {"file": yttm_path.name, **_record(YttmTokenizer(yttm_path))},
    }
    (OUT / "tokenizers.json").write_text(json.dumps(fixtures, indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {OUT / 'tokenizers.json'}, {hf_path.name}, {yttm_path.name}")


if __name__ == "__main__":
    main()
