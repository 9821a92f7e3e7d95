"""Text handling every side shares, so each does the same work per request."""

import re

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text):
    return [s for s in SENTENCE_END.split(text.strip()) if s]
