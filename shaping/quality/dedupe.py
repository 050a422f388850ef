"""Duplicate samples: which to remove, and which earlier sample each one duplicates.

What is compared (the same for single- and multi-turn samples):

- **prompt**: the text of every user turn, in order (text parts of a list content; an image
  counts by its URL, a data: URL by its bytes). System and tool turns are not part of it: a
  shared system prompt would make every prompt look alike.
- **response**: the last assistant turn's answer (inline `<think>` blocks taken out) and its
  tool calls as `name(arguments)` lines. Reasoning (`reasoning_content`) is not counted.

`on` chooses what makes a duplicate: "pair" (the default: a sample goes when its prompt *and*
its response duplicate one earlier kept sample's: the same conversation, or nearly), "both" (its
prompt *or* its response duplicates an earlier kept sample's), "prompt" or "response". Data
with several answers to one prompt (preferences, honesty levels) keeps them under "pair". An
empty side never counts as a duplicate (an empty answer is the empty-turn check's business).

- **exact**: the texts with case folded and whitespace collapsed, hashed (blake2b). Reasons:
  `exact_pair` (prompt and response both match one earlier sample), `exact_prompt`,
  `exact_response`; `similarity` is 1.0.
- **near** (`near=THRESHOLD`, needs `datasketch`: `pip install 'shaping[dedupe]'`): MinHash
  over word 3-grams (words: runs of letters, digits and `_`, case folded; a text of 3 or fewer
  words is one shingle), NUM_PERM=128 permutations, SEED=1, shingles hashed with CRC-32 (fast
  and the same on every machine), so a result never changes between runs. Candidates come from
  a MinHash LSH index (tuned for min(threshold, 0.9): datasketch cannot band higher with 128
  permutations; weighted for recall, see LSH_WEIGHTS) and are confirmed when the estimated
  Jaccard similarity is >= the threshold.
  Reasons: `near_pair`, `near_prompt`, `near_response`; `similarity` is the estimate (for a
  pair, the lower of the two). One word changed in a 40-word answer is about 0.85.

Input order decides: the first occurrence is kept, and a sample is only ever compared with the
samples kept before it, so `duplicate_of` always names a sample that stays in the output.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shaping.errors import ShapingError
from shaping.quality.turns import calls_text, split_think, tool_calls_of

ON = ("pair", "both", "prompt", "response")
SHINGLE = 3  # words a shingle (shingles() spells out the three)
NUM_PERM = 128
SEED = 1
#: the LSH index bands for at most this similarity (datasketch: b >= 2 with 128 permutations)
LSH_CEILING = 0.9
#: (false positive, false negative) weights of the LSH bands: recall first, since every
#: candidate is confirmed by its estimate anyway; a pair 0.05 over the threshold is a
#: candidate >= 99% of the time (datasketch's default 0.5/0.5: about 70%)
LSH_WEIGHTS = (0.05, 0.95)
INSTALL = "near-duplicate removal needs datasketch: pip install 'shaping[dedupe]'"

WORDS = re.compile(r"\w+")


# -- settings -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DedupeSettings:
    #: the near-duplicate threshold (estimated Jaccard similarity), or None for exact only
    near: float | None = None
    on: str = "pair"

    def __post_init__(self) -> None:
        if self.on not in ON:
            raise ValueError(f"on must be one of {', '.join(ON)}, got {self.on!r}")
        if self.near is not None:
            if isinstance(self.near, bool) or not isinstance(self.near, (int, float)) or not 0 < self.near <= 1:
                raise ValueError(f"near must be a number in (0, 1], got {self.near!r}")
            object.__setattr__(self, "near", float(self.near))

    @classmethod
    def parse(cls, value: Any) -> "DedupeSettings":
        """A pipeline's `dedupe` option: "exact", or {"near": 0.9, "on": "pair"} (both keys
        optional; without "near", exact only). Raises ValueError saying what is wrong."""
        if isinstance(value, DedupeSettings):
            return value
        if value == "exact":
            return cls()
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"near", "on"})
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: 'near', 'on')")
            return cls(near=value.get("near"), on=value.get("on", "pair"))
        raise ValueError(f'expected "exact" or a dict such as {{"near": 0.9, "on": "pair"}}, got {value!r}')

    def describe(self) -> str:
        where = "" if self.on == "pair" else " on prompts or responses" if self.on == "both" else f" on {self.on}s"
        return (f"exact and near >= {self.near:g}" if self.near is not None else "exact") + where


def require_datasketch() -> None:
    try:
        import datasketch  # noqa: F401
    except ImportError as exc:
        raise ShapingError(INSTALL) from exc


def has_datasketch() -> bool:
    try:
        require_datasketch()
    except ShapingError:
        return False
    return True


# -- what is compared -------------------------------------------------------------------------

def _user_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif isinstance(part, dict) and part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(f"[image {url}]")
    return "".join(parts)


def _messages(sample: dict[str, Any]) -> list[dict]:
    messages = sample.get("messages") if isinstance(sample, dict) else None
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def prompt_text(sample: dict[str, Any]) -> str:
    """Every user turn's text, one turn a line."""
    return "\n".join(_user_text(m.get("content")) for m in _messages(sample) if m.get("role") == "user")


def response_text(sample: dict[str, Any]) -> str:
    """The last assistant turn: its answer without inline reasoning, then its tool calls."""
    last = next((m for m in reversed(_messages(sample)) if m.get("role") == "assistant"), None)
    if last is None:
        return ""
    answer, _ = split_think(_user_text(last.get("content")))
    return "\n".join(t for t in (answer, calls_text(tool_calls_of(last))) if t)


def exact_key(text: str) -> bytes | None:
    """The hash exact duplicates share (case folded, whitespace collapsed); None for no text."""
    normal = " ".join(text.casefold().split())
    return hashlib.blake2b(normal.encode("utf-8"), digest_size=16).digest() if normal else None


def shingles(text: str) -> set[bytes]:
    words = WORDS.findall(text.casefold())
    if len(words) <= SHINGLE:
        return {" ".join(words).encode("utf-8")} if words else set()
    return {f"{a} {b} {c}".encode("utf-8") for a, b, c in zip(words, words[1:], words[2:])}


# -- the result -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Duplicate:
    """A removed sample: its position in the input, its id, the kept sample it duplicates."""

    index: int
    id: str
    duplicate_of: str
    #: exact_pair | exact_prompt | exact_response | near_pair | near_prompt | near_response
    reason: str
    #: 1.0 for exact; for near, the estimated Jaccard similarity
    similarity: float
    of_index: int = -1

    @property
    def exact(self) -> bool:
        return self.reason.startswith("exact")

    def fields(self) -> dict[str, Any]:
        """What a line of the removed file adds to the sample (always str, str, float)."""
        return {"duplicate_of": self.duplicate_of, "reason": self.reason, "similarity": self.similarity}

    def describe(self) -> str:
        how = self.reason.replace("_", " ")
        return (f"sample {self.id}: {how} of sample {self.duplicate_of}"
                + ("" if self.exact else f" (similarity {self.similarity:.2f})"))


@dataclass
class DedupeResult:
    settings: DedupeSettings
    total: int
    removed: list[Duplicate] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.total - len(self.removed)

    @property
    def exact(self) -> int:
        return sum(1 for d in self.removed if d.exact)

    @property
    def near(self) -> int:
        return len(self.removed) - self.exact

    def removed_at(self) -> dict[int, Duplicate]:
        return {d.index: d for d in self.removed}

    def summary(self) -> str:
        return f"kept {self.kept}, removed {len(self.removed)}: {self.exact} exact, {self.near} near"


# -- finding them -------------------------------------------------------------------------------

class _Near:
    """The kept samples' MinHashes for one side, in an LSH index."""

    def __init__(self, threshold: float) -> None:
        import zlib

        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        self.minhash = MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=zlib.crc32)  # one, reused
        self.lsh = MinHashLSH(threshold=min(threshold, LSH_CEILING), num_perm=NUM_PERM, weights=LSH_WEIGHTS)
        self.sketches: dict[int, Any] = {}  # index -> the hash values of a kept sample

    def sketch(self, text: str) -> Any:
        """The text's MinHash hash values (None for a text without words)."""
        grams = shingles(text)
        if not grams:
            return None
        self.minhash.clear()
        self.minhash.update_batch(grams)
        return self.minhash.hashvalues  # a new array each update: safe to keep

    def _as_minhash(self, values: Any) -> Any:
        self.minhash.hashvalues = values  # what the index reads of a MinHash
        return self.minhash

    def matches(self, values: Any) -> dict[int, float]:
        """Kept samples at least `threshold` alike: {index: estimated similarity}."""
        found = {}
        for index in self.lsh.query(self._as_minhash(values)):
            similarity = float((values == self.sketches[index]).mean())
            if similarity >= self.threshold:
                found[index] = similarity
        return found

    def add(self, index: int, values: Any) -> None:
        self.sketches[index] = values
        self.lsh.insert(index, self._as_minhash(values), check_duplication=False)


def _best(found: dict[int, float]) -> tuple[int, float]:
    """The most alike; of equals, the earliest."""
    return min(found.items(), key=lambda item: (-item[1], item[0]))


def _near_duplicate(index: int, sample_id: str, found: dict[str, dict[int, float]],
                    kept_ids: dict[int, str], pair_only: bool = False) -> Duplicate | None:
    """The kept sample this one is most alike, where one is alike enough: on both sides (a
    pair, judged by the lower similarity) before either side alone (unless `pair_only`)."""
    both = set(found.get("prompt", ())) & set(found.get("response", ()))
    if both:
        of_index, similarity = _best({i: min(found["prompt"][i], found["response"][i]) for i in both})
        reason = "near_pair"
    elif pair_only:
        return None
    else:
        best = [(side, *_best(f)) for side, f in found.items() if f]
        if not best:
            return None
        side, of_index, similarity = min(best, key=lambda b: (-b[2], b[1]))
        reason = f"near_{side}"
    return Duplicate(index, sample_id, kept_ids[of_index], reason, round(similarity, 4), of_index)


def find_duplicates(items: Iterable[tuple[str, str, str]], settings: DedupeSettings | None = None) -> DedupeResult:
    """`items`: (id, prompt, response) per sample, in input order (see prompt_text and
    response_text). Returns which to remove, each with the kept sample it duplicates."""
    settings = settings or DedupeSettings()
    sides = ("prompt", "response") if settings.on in ("pair", "both") else (settings.on,)
    counted = ("pair",) if settings.on == "pair" else ("pair", *sides)  # what alone makes a duplicate
    if settings.near is not None:
        require_datasketch()
        near = {side: _Near(settings.near) for side in sides}
    seen: dict[tuple[str, bytes], tuple[int, str]] = {}  # (side, key) -> (index, id) of the first kept
    kept_ids: dict[int, str] = {}  # for near: the kept samples' ids by index
    result = DedupeResult(settings, 0)
    for index, (sample_id, prompt, response) in enumerate(items):
        result.total += 1
        text = {"prompt": prompt, "response": response}
        keys = {side: exact_key(text[side]) for side in sides}
        if len(sides) == 2 and keys["prompt"] and keys["response"]:
            keys["pair"] = hashlib.blake2b(keys["prompt"] + keys["response"], digest_size=16).digest()
        duplicate = None
        for side in counted:
            if keys.get(side) and (side, keys[side]) in seen:
                of_index, of_id = seen[side, keys[side]]
                duplicate = Duplicate(index, sample_id, of_id, f"exact_{side}", 1.0, of_index)
                break
        sketches = {}
        if duplicate is None and settings.near is not None:
            sketches = {side: near[side].sketch(text[side]) for side in sides}
            found = {side: near[side].matches(s) for side, s in sketches.items() if s is not None}
            duplicate = _near_duplicate(index, sample_id, found, kept_ids, pair_only=settings.on == "pair")
        if duplicate is not None:
            result.removed.append(duplicate)
            continue
        for side, key in keys.items():
            if key:
                seen.setdefault((side, key), (index, sample_id))
        if settings.near is not None:
            kept_ids[index] = sample_id
            for side, sketch in sketches.items():
                if sketch is not None:
                    near[side].add(index, sketch)
    return result


def texts(samples: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    for sample in samples:
        yield str(sample.get("id") if isinstance(sample, dict) else None), prompt_text(sample), response_text(sample)


@dataclass(frozen=True)
class Removed:
    sample: dict[str, Any]
    duplicate: Duplicate


def dedupe(samples: list[dict[str, Any]], near: float | None = None,
           on: str = "pair") -> tuple[list[dict[str, Any]], list[Removed]]:
    """(the kept samples, the removed ones each with what it duplicates), in input order."""
    result = find_duplicates(texts(samples), DedupeSettings(near=near, on=on))
    removed = result.removed_at()
    kept = [s for i, s in enumerate(samples) if i not in removed]
    return kept, [Removed(samples[d.index], d) for d in result.removed]
