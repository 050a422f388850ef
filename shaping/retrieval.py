"""Ranking text by relevance to a query: BM25 (rank-bm25) over simple word tokens.

    index = DocumentIndex.from_folder(project.root / "identity")
    for passage in index.search("who made the assistant", k=3):
        print(passage.source, passage.score, passage.text)

Documents are split into paragraphs (blank-line separated); each is a passage. The same
`Ranker` serves `shaping.feedback` for "the most similar successful examples".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset("a an and are as at be by for from has have in is it its of on or that the this to was "
                      "were will with you your i me my we our".split())


def tokenize(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOPWORDS]


class Ranker:
    """BM25 over a fixed list of texts; `top(query, k)` gives (index, score), best first, among
    the texts that share at least one word with the query.

    BM25+ rather than Okapi: on small collections Okapi's IDF turns negative for words in more
    than half the texts, and the best match can score below zero."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._tokens = [tokenize(t) or ["_"] for t in texts]
        self._words = [set(t) for t in self._tokens]
        self._bm25 = None
        if self._tokens:
            from rank_bm25 import BM25Plus  # it imports numpy (0.17 s): only where texts are ranked

            self._bm25 = BM25Plus(self._tokens)

    def top(self, query: str, k: int = 3) -> list[tuple[int, float]]:
        words = tokenize(query)
        if self._bm25 is None or not words or k < 1:
            return []
        scores = self._bm25.get_scores(words)
        wanted = set(words)
        matching = [i for i, doc in enumerate(self._words) if doc & wanted]
        matching.sort(key=lambda i: (-scores[i], i))
        return [(i, float(scores[i])) for i in matching[:k]]


@dataclass(frozen=True)
class Passage:
    source: str
    text: str
    score: float


class DocumentIndex:
    def __init__(self, passages: list[tuple[str, str]]) -> None:
        self.passages = passages  # (source, text)
        self._ranker = Ranker([text for _, text in passages])

    @classmethod
    def from_folder(cls, folder: Path | str, patterns: Sequence[str] = ("*.md", "*.txt")) -> "DocumentIndex":
        folder = Path(folder)
        passages = []
        for pattern in patterns:
            for path in sorted(folder.rglob(pattern)):
                for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
                    if paragraph.strip():
                        passages.append((str(path.relative_to(folder)), paragraph.strip()))
        return cls(passages)

    def search(self, query: str, k: int = 3) -> list[Passage]:
        return [Passage(self.passages[i][0], self.passages[i][1], score) for i, score in self._ranker.top(query, k)]

    def context(self, query: str, k: int = 3) -> str:
        """The best passages, ready to paste into a prompt."""
        return "\n\n".join(f"[{p.source}]\n{p.text}" for p in self.search(query, k))
