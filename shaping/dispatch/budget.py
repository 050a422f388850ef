"""A run's cost cap (`--max-cost USD`, `max_cost_usd` on the class).

Every request sent holds an estimate of its cost until its answer arrives (its prompt at about
four characters a token; its answer as long as the longest answer of that model so far, else
the request's max_tokens, else `UNKNOWN_ANSWER_TOKENS`), then what it really cost is counted.
Records are taken one at a time, each once the one before it has sent its first request (or
ended); from the first priced request until one record has been paid for to its end, no other
record starts (what a record costs is not known before); records that pay nothing (local
models, the cache) run side by side. A record is taken only while what is spent, plus what is in flight, plus what one more record is
expected to cost (a paid record's average so far; before one is done, a request's estimate)
stays within the cap, as does what the records running are yet expected to spend (what a record
costs on average, less what each has spent and holds). When it would not, no record is taken until what is in flight has
settled; if, with no record running, one more would still pass the cap, the run takes no more
records. Records already started finish, so the cap is passed by at most the cost of their
remaining steps. What the cache answers costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import anyio

from shaping.dispatch.stand_in import estimate_prompt_tokens, max_tokens_of
from shaping.prices import Prices
from shaping.requests import LLMRequest

T = TypeVar("T")

#: the answer length assumed for a request with no max_tokens, before its model has answered
UNKNOWN_ANSWER_TOKENS = 1024


class Budget:
    def __init__(self, cap_usd: float) -> None:
        self.cap = cap_usd
        self.spent = 0.0
        self.in_flight = 0.0
        #: why no more records are taken, once that is so
        self.stopped: str | None = None
        self._longest: dict[str, int] = {}
        self._paid_records = 0
        self._paid_cost = 0.0
        self._holds = 0
        self._held = 0.0
        self._used: dict[str, float] = {}  # each running record (taken, not done) -> what it has spent and holds
        # one record is taken at a time, each once the record before it has sent its first
        # request (or ended), so that its cost is in flight before the next is weighed
        self._lock = anyio.Lock()
        self._ready = anyio.Event()
        self._ready.set()
        self._watched: str | None = None
        self._changed = anyio.Event()  # set (and replaced) whenever what is spent or held changes

    def hold(self, model: str, prices: Prices, request: LLMRequest, record_id: str) -> float:
        """Count a request's estimated cost as in flight; returns what `settle` takes back."""
        limit = max_tokens_of(request.params)
        answer = self._longest.get(model) or limit or UNKNOWN_ANSWER_TOKENS
        estimate = prices.cost(estimate_prompt_tokens(request), min(answer, limit or answer))
        self.in_flight += estimate
        if record_id in self._used:
            self._used[record_id] += estimate
        self._holds += 1
        self._held += estimate
        return estimate

    def asked(self, record_id: str) -> None:
        """A record sent a request (any: priced, local or answered by the cache)."""
        if record_id == self._watched:
            self._release()

    def settle(self, model: str, record_id: str, held: float, cost: float | None, completion_tokens: int) -> None:
        self.in_flight = max(0.0, self.in_flight - held)
        self.spent += cost or 0.0
        if record_id in self._used:
            self._used[record_id] += (cost or 0.0) - held
        if completion_tokens > self._longest.get(model, 0):
            self._longest[model] = completion_tokens
        self._signal()

    def record_done(self, record_id: str, cost: float) -> None:
        self._used.pop(record_id, None)
        if cost > 0:  # a record the cache answered says nothing of what the next will cost
            self._paid_records += 1
            self._paid_cost += cost
        if record_id == self._watched:
            self._release()
        self._signal()

    def watch(self, record_id: str) -> None:
        """The record just taken: the next one is weighed once this one has sent (or ended)."""
        self._watched = record_id
        self._used[record_id] = 0.0

    def _release(self) -> None:
        self._watched = None
        self._ready.set()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def take(self, records: Iterator[T]) -> T | None:
        """The next of `records` while the cap allows one more; None when there is none left or
        the cap is reached (and from then on). Call `watch` with the record's id after."""
        async with self._lock:
            await self._ready.wait()
            item = next(records, None)
            while item is not None and self.stopped is None and not self._fits():
                if not self._used:  # nothing left to settle: the next record would pass the cap
                    self.stopped = (f"stopped at the cost cap of ${self.cap:,.2f} (${self.spent:,.4f} spent; "
                                    f"the next record was expected to cost ${self._next_record():,.4f})")
                else:
                    await self._changed.wait()
            if item is None or self.stopped is not None:
                return None
            self._ready = anyio.Event()
            return item

    def _next_record(self) -> float:
        if self._paid_records:
            return self._paid_cost / self._paid_records
        return self._held / self._holds if self._holds else 0.0

    def _fits(self) -> bool:
        """Spent, in flight, what the running records are yet expected to spend (beyond what
        they hold) and one more record: within the cap. Once a priced request is out and until a
        record has paid for all its steps, what a record costs is not known: no other starts."""
        if not self._paid_records and self._used and self._holds:
            return False
        per_record = self._next_record()
        to_come = sum(max(0.0, per_record - used) for used in self._used.values())
        return self.spent + self.in_flight + to_come + per_record <= self.cap
