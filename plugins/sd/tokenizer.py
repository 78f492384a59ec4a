"""CLIP tokenizer files written from OpenAI's BPE merges, so no hub download is needed.

The merges file ships inside the ``open-clip-torch`` wheel. scripts/setup.sh takes it out
of the wheel into ``<venv>/share/clood-candy/`` without installing open_clip (which needs
torchvision, and would leave the venv with unmet requirements); an installed open_clip is
used too. Without either we fall back to a byte-level vocabulary: every byte is a token,
so token counts are not real CLIP counts (``is_real`` says which).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import sys
from pathlib import Path

from transformers.convert_slow_tokenizer import bytes_to_unicode

from clood_candy_plugins.sd.cache import build_once, cache_dir

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 49408  # SD1.x / SDXL text encoders


def clip_bpe_path() -> Path | None:
    """The real CLIP merges: ``$CLOOD_CLIP_BPE``, the copy setup.sh put in the venv, or an
    installed open-clip-torch's; None when there is none."""
    for candidate in (os.environ.get("CLOOD_CLIP_BPE"), Path(sys.prefix) / "share" / "clood-candy" / BPE_FILE):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BPE_FILE
        if path.is_file():
            return path
    return None


def _vocab_and_merges(bpe: Path | None) -> tuple[dict[str, int], list[str]]:
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    if bpe is not None:
        lines = gzip.open(bpe).read().decode("utf-8").split("\n")
        # The slice OpenAI's CLIP uses: 512 byte tokens + 48,894 merges + BOS/EOS = 49,408.
        merges = lines[1 : 49152 - 256 - 2 + 1]
        vocab += ["".join(m.split()) for m in merges]
    vocab += [BOS, EOS]
    return {token: i for i, token in enumerate(vocab)}, merges


def write_tokenizer(folder: Path, *, pad_token: str = EOS, bpe: Path | None = None) -> None:
    """vocab.json, merges.txt and the tokenizer configs a CLIPTokenizer loads."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges(bpe)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # No trailing newline: a blank last line makes transformers reject the merges file.
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
              "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token,
              "add_prefix_space": False, "clean_up_tokenization_spaces": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")


def tokenizer_folder(*, pad_token: str = EOS, require_real: bool = False) -> Path:
    """A cached folder of tokenizer files (real CLIP when the BPE file is installed)."""
    bpe = clip_bpe_path()
    if bpe is None and require_real:
        from clood_candy.errors import UserError

        raise UserError("this base needs the real CLIP tokenizer: pip install open-clip-torch (its BPE file is used)")
    kind = "clip" if bpe is not None else "bytes"
    name = f"tokenizer-{kind}-{'pad0' if pad_token == '!' else 'padeos'}"
    return build_once(cache_dir() / "tokenizers" / name, lambda tmp: write_tokenizer(tmp, pad_token=pad_token, bpe=bpe))


def is_real_clip(folder: Path) -> bool:
    return (folder / "merges.txt").stat().st_size > 100
