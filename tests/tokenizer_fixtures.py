"""Where the real tokenizers are: T5's ships with the tests (Apache-2.0,
licence beside it); Llama-3's licence does not let us ship it, so the tests
that need it read $DTVG_LLAMA3_TOKENIZER (a folder with its tokenizer.json)
and skip with LLAMA3_SKIP otherwise."""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
T5_DIR = FIXTURES / "t5-tokenizer"
LLAMA3_ENV = "DTVG_LLAMA3_TOKENIZER"
LLAMA3_SKIP = (f"no Llama-3 tokenizer: set {LLAMA3_ENV} to a folder with its tokenizer.json "
               "(meta-llama/Meta-Llama-3-8B; licence-gated, so not shipped with the tests)")


def llama3_dir() -> Path:
    return Path(os.environ.get(LLAMA3_ENV) or FIXTURES / "llama3-tokenizer")
