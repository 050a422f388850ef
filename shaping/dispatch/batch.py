"""Batch mode: a model's `run_task` requests go through its provider's batch API, round by round.

A model is in batch mode when its shaping.toml table says `batch = true`, or the run was asked
for `--batch`, its provider has a batch API (`shaping.providers.batch.BatchAPI`) and it is
served by that provider's own API or is local (`shaping.providers.batch.batched`). Its
`query()` calls stay online. Nothing here knows which provider it talks to.

Rounds. Every record of the run is taken at once (up to `BATCH_RECORDS`, or `workers` if more)
and runs until it waits on an answer. A request to a batch model waits in its model's
`BatchChannel`. A round is formed when the run waits for nothing else (`Activity.idle`): every
record taken is waiting on a batch answer, no more records can be taken, and no batch is in
flight (every batch submitted has ended and its results have been handed over). Then every
batch model with waiting requests submits them (split by the provider's limits: requests and
bytes per batch). As a batch's results are read, each answer is committed to the request cache,
then handed to its record, whose generator runs on and yields its next request, which waits for
the next round. So a pipeline of N steps takes N rounds, plus one for each round of retries.
Two things form a round sooner: a full batch's worth of waiting requests (it goes at once), and
a request that has waited `batch_gather_s` (default 60 s) for its round. The second is a trade:
where the batches of one round end hours apart (a round split by the limits, two providers), the
records of the first to end go on after a minute instead of waiting for the last, in more,
smaller batches (which cost the same); where records also wait on online models, what they
yield goes in batches a minute apart. A large `batch_gather_s` keeps the rounds strict.

Failures. An item that errored in a way a retry may fix (a 5xx or 429 inside the batch, an
overloaded or rate-limited result), that expired, or that is missing from the results goes
into the next round, up to the model's `max_retries`; then it is the record's error, with the
provider's message. Items the API refuses outright (a 400) fail at once, as online; a batch
that failed validation naming its bad lines fails only those, and the rest go into the next
round. A batch someone cancelled fails its unanswered items (`batch_cancelled`), unless it was
an earlier run's: then they are simply asked again. A batch whose status or results cannot be
read (after retries, or an answer the provider cannot parse) fails its waiting requests with
the reason and stays open: the next run reads it. A second request for a key already waiting
(the same record and step asked twice) shares the first one's answer; a batch never holds a
custom_id twice.

Resume. Before a batch is submitted its tag and every request's custom_id (the request's cache
key) are committed to training/.cache/batches.sqlite (shaping.dispatch.batch_store), and the
provider's batch id right after it is created, before the run waits. A run started later loads
the model's open batches: a request whose custom_id is in one of them waits on that batch
(it is polled, its results read into the cache) instead of going into a new one. A request is
never in two open batches, and nothing is paid twice. A submission killed between the
provider's answer and the commit of its id is looked up by its tag where the API keeps
metadata (OpenAI); otherwise the run warns and asks those requests again. Likewise a create
whose answer was lost (a timeout, a reset) is looked up by its tag before it is tried again;
where the API cannot look one up (Anthropic), only a create that provably made nothing (no
connection, or an HTTP error answer) is tried again, and the others fail their requests with
the reason rather than risk paying twice. Answers are marked read only once committed: a
results stream that breaks is read again from the start, skipping what was taken.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from shaping.error_types import ErrorType
from shaping.dispatch.batch_store import SUBMITTING, BatchStore, ItemRow
from shaping.dispatch.cache import RequestCache, request_text, text_row
from shaping.dispatch.channel import cost_of
from shaping.dispatch.stats import BatchInfo, RunStats
from shaping.prices import Prices
from shaping.providers.base import Provider, UnsupportedRequest
from shaping.providers.batch import BatchAPI, BatchCallError, BatchState, item_error
from shaping.requests import LLMMessage, LLMRequest, ModelResponse, ResponseError

#: records worked on at once in batch mode (when `workers` is lower): a round holds them all
BATCH_RECORDS = 100_000
#: results committed and handed to their records this many at a time
READ_CHUNK = 1_000
#: room left in a batch's byte limit for what wraps the items
BYTES_MARGIN = 1024
#: a submission with no batch id this old was interrupted (a younger one of another pipeline
#: may be under way in another process; this pipeline's own runs hold its RunLock)
ABANDONED_S = 3600.0
#: the status of a batch whose status or results could not be read: it stays open
UNREADABLE = "unreadable"


class Activity:
    """Whether the current round can form (`idle`): the run waits for nothing else.

    `live` counts workers (each holds at most one record); a record is `blocked` while every
    answer it waits for is a batch's. `busy` counts batches whose results are being handed to
    their records. Batches in flight are counted by round: those of earlier rounds will answer
    records that then ask for more, which belongs in the round being gathered (`current`); a
    batch of the current round itself (a full batch that went early) does not hold it back.
    """

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats
        self.live = 0
        self.blocked = 0
        self.busy = 0
        self._waits: dict[str, list[int]] = {}  # record -> [answers in flight, of which a batch's]
        self._idle = anyio.Event()
        self._idle.set()
        self.epoch = 0  # how many times the run has become idle
        self.current = 1  # the round being gathered
        self._closed: dict[int, int] = {}  # idle epoch -> the round its cuts closed
        self._flying: dict[int, int] = {}  # round (0: an earlier run's batch) -> batches in flight
        self._in_flight = 0

    @property
    def idle(self) -> bool:
        return (self.busy == 0 and self.live == self.blocked
                and not any(n for r, n in self._flying.items() if r < self.current))

    def _changed(self, was_idle: bool) -> None:
        idle = self.idle
        if idle and not was_idle:
            self.epoch += 1
            self._idle.set()
        elif was_idle and not idle:
            self._idle = anyio.Event()

    async def wait_idle(self) -> None:
        while not self.idle:
            await self._idle.wait()

    def round(self) -> int:
        """The round of a batch formed now: when idle, the current one, which this idle spell
        closes (every model cutting now shares it); else (a full batch, the gather window) the
        current one, still open."""
        if not self.idle:
            number = self.current
        else:
            number = self._closed.get(self.epoch)
            if number is None:
                number = self._closed[self.epoch] = self.current
                self.current += 1
        self.stats.batch_rounds = max(self.stats.batch_rounds, number)
        return number

    # workers and records
    def add_live(self, n: int = 1) -> None:
        was = self.idle
        self.live += n
        self._changed(was)

    def _move(self, record_id: str, answers: int, batch: int) -> None:
        was = self.idle
        counts = self._waits.get(record_id)
        if counts is None:
            counts = self._waits[record_id] = [0, 0]
        before = counts[0] > 0 and counts[0] == counts[1]
        counts[0] += answers
        counts[1] += batch
        after = counts[0] > 0 and counts[0] == counts[1]
        if counts[0] <= 0:
            del self._waits[record_id]
        self.blocked += after - before
        self._changed(was)

    def answer_started(self, record_id: str) -> None:
        self._move(record_id, 1, 0)

    def answer_done(self, record_id: str) -> None:
        self._move(record_id, -1, 0)

    def wait_started(self, record_id: str) -> None:
        self._move(record_id, 0, 1)

    def wait_done(self, record_id: str) -> None:
        self._move(record_id, 0, -1)

    def add_busy(self, n: int) -> None:
        was = self.idle
        self.busy += n
        self._changed(was)

    def batch_in_flight(self, round_: int | None, n: int) -> None:
        """A batch of round `round_` (None: an earlier run's) is submitted (1) or read (-1);
        the time with at least one in flight is the time waiting on batches."""
        was = self.idle
        key = round_ or 0
        self._flying[key] = self._flying.get(key, 0) + n
        self._in_flight += n
        self._changed(was)
        stats = self.stats
        if self._in_flight > 0 and stats.batch_waiting_since is None:
            stats.batch_waiting_since = time.monotonic()
        elif self._in_flight == 0 and stats.batch_waiting_since is not None:
            stats.batch_wait_s += time.monotonic() - stats.batch_waiting_since
            stats.batch_waiting_since = None


@dataclass(eq=False)
class _Item:
    """One request waiting on a batch answer."""

    key: str  # the cache key, sent as the custom_id
    record_id: str
    step: int
    request: str  # request_text: what the cache row keeps
    queued_at: float
    llm: LLMRequest | None = None  # what goes into a batch, encoded as `line` when first queued
    line: bytes = b""
    attempts: int = 0
    response: ModelResponse | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    cancelled: bool = False  # its record stopped waiting
    #: later requests for the same key, which share this one's answer (it is asked once)
    twins: list["_Item"] = field(default_factory=list)


@dataclass(eq=False)
class _Batch:
    """A submitted batch this run follows (or may re-attach to)."""

    tag: str
    info: BatchInfo
    pipeline: str  # whose requests it holds (an answer no record waits on is cached as theirs)
    keys: list[str]
    waiters: dict[str, _Item] = field(default_factory=dict)
    #: answers committed to the cache (or failures handed over): never taken twice
    read: set[str] = field(default_factory=set)
    state: BatchState | None = None
    reattached: bool = False
    following: bool = False
    #: its items as stored (an earlier run's answers no record waits on): loaded once, while read
    stored: dict[str, ItemRow] | None = None

    @property
    def id(self) -> str | None:
        return self.info.id


class BatchChannel:
    """One batch-mode model: queues requests, forms its rounds, submits, follows and reads batches."""

    def __init__(self, name: str, provider: Provider, pipeline: str, stats: RunStats, task_group: TaskGroup,
                 activity: Activity, store: BatchStore, cache: RequestCache, prices: Prices | None,
                 on_store: Callable[[], None]) -> None:
        assert isinstance(provider, BatchAPI)
        self.name = name
        self.provider = provider
        self.api: BatchAPI = provider
        self.config = provider.config
        self.pipeline = pipeline
        self.stats = stats
        self.activity = activity
        self.store = store
        self.cache = cache
        self.prices = prices
        self._on_store = on_store
        self._tg = task_group
        limits = provider.batch_limits
        self._max_requests = limits.max_requests
        self._max_bytes = limits.max_bytes - BYTES_MARGIN
        self._pending: list[_Item] = []
        self._pending_bytes = 0
        self._arrived = anyio.Event()
        self._oldest = 0.0  # when the first request waiting now was queued
        self._batches: dict[str, _Batch] = {}  # custom_id -> the open batch it is in
        self._live: dict[str, _Item] = {}  # custom_id -> the item asking for it (queued or in a batch)

    async def open(self) -> None:
        """Load this model's open batches (an earlier run's), confirming any submission that
        was killed before its id was recorded; then start forming rounds."""
        for row in self.store.batches(model=self.name):
            batch_id = row.batch_id
            if row.state == SUBMITTING:
                batch_id = await self._confirm(row.tag, row.created_at)
                if (batch_id is None and row.pipeline != self.pipeline
                        and time.time() - row.created_at < ABANDONED_S):
                    continue  # another pipeline's run may be submitting it now: its own to record
                if batch_id is None:
                    self.store.drop(row.tag)
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.created_at))
                    self.stats.warnings.append(
                        f"model '{self.name}': a batch of {row.requests:,} requests submitted at {when} by an earlier "
                        f"run was interrupted before its id was recorded; if the provider created it, its requests "
                        f"were asked again (check the provider's batch list)")
                    continue
                self.store.submitted(row.tag, batch_id, row.status)
            info = BatchInfo(model=self.name, tag=row.tag, requests=row.requests, round=None, id=batch_id,
                             status=row.status, succeeded=row.succeeded, failed=row.failed, reattached=True)
            batch = _Batch(row.tag, info, row.pipeline, self.store.keys(row.tag), reattached=True)
            for key in batch.keys:
                self._batches[key] = batch
        self._tg.start_soon(self._rounds, name=f"batch-rounds:{self.name}")

    async def _confirm(self, tag: str, since: float) -> str | None:
        try:
            return await self.api.find_batch(tag, since)
        except BatchCallError:
            return None

    # -- requests in ------------------------------------------------------------------------

    async def submit(self, request: LLMRequest, key: str, messages: list[LLMMessage], params: dict,
                     record_id: str, step: int) -> ModelResponse:
        """The answer to `request` from a batch: this run's next round, or an open batch that
        already holds it. Committed to the request cache before it returns."""
        item = _Item(key, record_id, step, request_text(messages, params), time.monotonic(), request)
        self.activity.wait_started(record_id)
        try:
            live = self._live.get(key)
            batch = self._batches.get(key)
            if live is not None:  # asked already, not yet answered: one answer for both
                live.twins.append(item)
            elif batch is not None and key not in batch.read:  # in an open batch (not yet committed)
                item.attempts = 1
                self._live[key] = item
                batch.waiters[key] = item
                if not batch.following:
                    batch.following = True
                    self.stats.batches[batch.tag] = batch.info
                    self._tg.start_soon(self._follow, batch)
            else:
                self._queue(item)
            await item.done.wait()
        finally:
            if item.response is None:  # cancelled while waiting
                self._abandon(item)
                self.activity.wait_done(record_id)
        response = item.response
        self.stats.record_response(self.name, response, batch=response.is_success)
        return response

    def _abandon(self, item: _Item) -> None:
        """`item`'s record stopped waiting: it leaves the queue (or its batch's waiters), unless
        it carries a twin's request."""
        item.cancelled = True
        leader = self._live.get(item.key)
        if leader is not None and item in leader.twins:
            leader.twins.remove(item)
            if not leader.cancelled:
                return
            item = leader
        if item.twins:
            return
        if self._live.get(item.key) is item:
            del self._live[item.key]
        if item in self._pending:
            self._pending.remove(item)
            self._pending_bytes -= len(item.line) + 1
        batch = self._batches.get(item.key)
        if batch is not None and batch.waiters.get(item.key) is item:
            del batch.waiters[item.key]  # its answer, when it comes, is kept all the same

    def _queue(self, item: _Item) -> None:
        if item.cancelled and not item.twins:
            return
        self._live[item.key] = item
        if not item.line:
            try:
                item.line = self.api.batch_item(item.key, item.llm)
            except UnsupportedRequest as exc:  # never sent: the same request would fail every time
                self._deliver(item, ModelResponse.failure(ErrorType.UNSUPPORTED, f"model '{self.name}': {exc}",
                                                          model=self.config.model))
                return
            if len(item.line) + 1 > self._max_bytes:
                self._deliver(item, ModelResponse.failure(
                    ErrorType.BAD_REQUEST, f"model '{self.name}': the request is {len(item.line):,} bytes, more than one "
                    f"batch may hold", model=self.config.model))
                return
        size = len(item.line) + 1
        if self._pending and (len(self._pending) >= self._max_requests or self._pending_bytes + size > self._max_bytes):
            self._cut()  # a full batch goes at once
        if not self._pending:
            self._oldest = anyio.current_time()
        self._pending.append(item)
        self._pending_bytes += size
        self._arrived.set()

    def _finish(self, item: _Item, response: ModelResponse) -> None:
        """The fields a response gets here: attempts (batches it went into), latency (from its
        request to its answer), the model."""
        response.attempts = max(1, item.attempts)
        if response.is_success:
            response.latency_s = time.monotonic() - item.queued_at
        if not response.model:
            response.model = self.config.model

    def _deliver(self, item: _Item, response: ModelResponse) -> None:
        """The answer to `item`'s request: to its record and to its twins' (as a cache hit would
        be: paid once)."""
        if item.response is not None:
            return
        if self._live.get(item.key) is item:
            del self._live[item.key]
        twins, item.twins = item.twins, []
        for twin in twins:
            copy = response.model_copy(deep=True)
            copy.cached = copy.is_success
            twin.attempts = item.attempts
            self._hand(twin, copy)
        if item.cancelled:
            item.response = response
        else:
            self._hand(item, response)

    def _hand(self, item: _Item, response: ModelResponse) -> None:
        if item.response is not None:
            return
        self._finish(item, response)
        item.response = response
        self.activity.wait_done(item.record_id)
        item.done.set()

    def _retry_or_fail(self, item: _Item, batch: _Batch, response: ModelResponse) -> None:
        error = response.error
        if error.type == ErrorType.BATCH_CANCELLED and batch.reattached:  # an earlier run's batch: ask again
            item.attempts = max(0, item.attempts - 1)
            self._queue(item)
        elif error.retryable and item.attempts <= self.config.max_retries:
            self._queue(item)
        else:
            if item.attempts > 1:
                error.message = f"{error.message} (gave up after {item.attempts} attempts)"
            self._deliver(item, response)

    # -- rounds -----------------------------------------------------------------------------

    async def _rounds(self) -> None:
        while True:
            if not self._pending:
                self._arrived = anyio.Event()
                await self._arrived.wait()
            while self._pending and not self.activity.idle:
                # from the oldest request waiting now (a full batch that went early took the others)
                remaining = self._oldest + self.config.batch_gather_s - anyio.current_time()
                if remaining <= 0:
                    break
                with anyio.move_on_after(remaining):
                    await self.activity.wait_idle()
            if self._pending:
                self._cut()
            await anyio.lowlevel.checkpoint()

    def _cut(self) -> None:
        """Submit what waits, in as many batches as the provider's limits want."""
        items, self._pending, self._pending_bytes = self._pending, [], 0
        round_ = self.activity.round()
        chunk: list[_Item] = []
        size = 0
        for item in items:
            length = len(item.line) + 1
            if chunk and (len(chunk) >= self._max_requests or size + length > self._max_bytes):
                self._tg.start_soon(self._submit, chunk, round_)
                chunk, size = [], 0
            chunk.append(item)
            size += length
        if chunk:
            self._tg.start_soon(self._submit, chunk, round_)

    # -- a batch's life: submitted, polled, read ---------------------------------------------

    async def _submit(self, items: list[_Item], round_: int) -> None:
        unique: dict[str, _Item] = {}
        for item in items:  # a custom_id once per batch (a second item for a key shares the first's answer)
            if item.cancelled and not item.twins:
                continue  # no one waits on it any more
            first = unique.setdefault(item.key, item)
            if first is not item:
                first.twins += [item, *item.twins]
                item.twins = []
        items = list(unique.values())
        if not items:
            return
        tag = secrets.token_hex(8)
        since = time.time()
        for item in items:
            item.attempts += 1
        info = BatchInfo(model=self.name, tag=tag, requests=len(items), round=round_)
        batch = _Batch(tag, info, self.pipeline, list(unique), unique, following=True)
        self.stats.batches[tag] = info
        self.store.begin(tag, self.pipeline, self.name, self.config.provider or "", round_,
                         [(i.key, i.record_id, i.step, i.request) for i in items])
        for key in batch.keys:
            self._batches[key] = batch
        self.activity.batch_in_flight(round_, 1)
        try:
            state, error, unsure = await self._create(tag, [i.line for i in items], since)
            if error is not None:  # not created (or not known to be): the requests fail with the reason
                if not unsure:
                    self.store.drop(tag)
                self._forget(batch)
                info.status, info.done = "not created", True
                for item in list(batch.waiters.values()):
                    self._deliver(item, ModelResponse(model=self.config.model, error=error.model_copy()))
                batch.waiters.clear()
                return
            info.id, info.status = state.id, state.status
            batch.state = state
            await self._follow(batch, counted=True)
        finally:
            if batch.state is None:  # not created (or cancelled while creating)
                self.activity.batch_in_flight(round_, -1)

    async def _create(self, tag: str, lines: list[bytes],
                      since: float) -> tuple[BatchState | None, ResponseError | None, bool]:
        """(state, None, False) once the batch is created and its id recorded; else (None, the
        error, whether the batch may exist all the same: its row is kept for the next run to
        look up). A create that got no answer may have made the batch: it is looked up by its
        tag before another try, or, where the API cannot look one up, not tried again."""
        tries = 0
        while True:
            tries += 1
            try:
                with anyio.CancelScope(shield=True):  # a batch created is a batch recorded
                    state = await self.api.create_batch(lines, tag)
                    self.store.submitted(tag, state.id, state.status)
                return state, None, False
            except BatchCallError as exc:
                error = exc.error
                # no connection, or an HTTP error answer: nothing was created
                maybe = not exc.unsent and error.status_code is None
            except Exception as exc:  # a provider bug (its answer unreadable?): as online, no retry
                error = ResponseError(type=ErrorType.PROVIDER, message=f"{type(exc).__name__}: {exc}")
                maybe = True
            if maybe:
                if not self.api.finds_batches:
                    error.retryable = False
                    error.message = (f"{error.message}; the batch may have been created all the same, so it is not "
                                     f"submitted again (that could pay twice): check the provider's batch list")
                    return None, error, False
                found, problem = await self._look_up(tag, since)
                if found is not None:  # it was created: the lost answer's batch is this run's
                    with anyio.CancelScope(shield=True):
                        self.store.submitted(tag, found, "submitted")
                    return BatchState(id=found, status="submitted"), None, False
                if problem is not None:
                    error.retryable = False
                    error.message = (f"{error.message}; whether the batch was created could not be looked up "
                                     f"({problem}): the next run looks it up by its tag")
                    return None, error, True
            if not error.retryable or tries > self.config.max_retries:
                if tries > 1:
                    error.message = f"{error.message} (gave up after {tries} attempts)"
                return None, error, False
            await anyio.sleep(self._backoff(tries, error.retry_after))

    async def _look_up(self, tag: str, since: float) -> tuple[str | None, str | None]:
        """(the id of the batch created with `tag`, None), (None, None) when there is none, or
        (None, why) when the provider could not say."""
        tries = 0
        while True:
            try:
                return await self.api.find_batch(tag, since), None
            except BatchCallError as exc:
                error = exc.error
            except Exception as exc:
                return None, f"{type(exc).__name__}: {exc}"
            tries += 1
            if not error.retryable or tries > self.config.max_retries:
                return None, error.message
            await anyio.sleep(self._backoff(tries, error.retry_after))

    def _backoff(self, tries: int, retry_after: float | None) -> float:
        config = self.config
        if retry_after is not None:
            return max(0.0, min(retry_after, config.retry_max_wait_s))
        wait = min(config.retry_backoff_s * 2 ** (tries - 1), config.retry_max_wait_s)
        return wait + random.uniform(0, config.retry_backoff_s)

    async def _follow(self, batch: _Batch, counted: bool = False) -> None:
        """Poll until the batch ends, then read its results. (`counted`: already in flight.)"""
        if not counted:
            self.activity.batch_in_flight(batch.info.round, 1)
        try:
            state = batch.state
            if state is None:  # an earlier run's: ask first, wait after
                state = await self._poll(batch)
            while not state.ended:
                self._note(batch, state)
                await anyio.sleep(self.provider.batch_poll_s)
                state = await self._poll(batch)
            self._note(batch, state)
            batch.state = state
            self.activity.add_busy(1)
            try:
                await self._read(batch, state)
            finally:
                self.activity.add_busy(-1)
        finally:
            batch.following = False  # a later waiter (of a batch left open) follows it again
            self.activity.batch_in_flight(batch.info.round, -1)

    async def _poll(self, batch: _Batch) -> BatchState:
        """The batch's state; a batch the provider no longer knows has ended with no results."""
        tries = 0
        while True:
            try:
                return await self.api.get_batch(batch.id)
            except BatchCallError as exc:
                error = exc.error
            except Exception as exc:  # an answer the provider cannot read: no poll will change it
                return BatchState(id=batch.id, status=UNREADABLE, ended=True, error=ResponseError(
                    type=ErrorType.PROVIDER, retryable=False,
                    message=f"model '{self.name}': the status of batch {batch.id} could not be read "
                            f"({type(exc).__name__}: {exc}); the batch stays open (isf batch list)"))
            if error.status_code == 404:
                return BatchState(id=batch.id, status="not found", ended=True, error=ResponseError(
                    type=ErrorType.BATCH_MISSING, retryable=True,
                    message=f"batch {batch.id} is not known to the provider: {error.message}"))
            if not error.retryable:  # 401, 403: no poll will change it; the batch stays open for a later run
                return BatchState(id=batch.id, status=UNREADABLE, ended=True, error=error)
            tries += 1
            await anyio.sleep(min(self.provider.batch_poll_s, self._backoff(tries, error.retry_after)))

    def _note(self, batch: _Batch, state: BatchState) -> None:
        info = batch.info
        if (info.status, info.succeeded, info.failed) != (state.status, state.succeeded, state.failed):
            info.status, info.succeeded, info.failed = state.status, state.succeeded, state.failed
            self.store.update(batch.tag, state.status, state.succeeded, state.failed)

    async def _read(self, batch: _Batch, state: BatchState) -> None:
        """Commit each answer to the cache and hand it to its record; what has no result is
        retried (or fails); then the batch is closed, unless its results could not be read:
        then it stays open for the next run."""
        failure = state.error
        keep_open = state.status == UNREADABLE
        if failure is not None and state.refused and self._refused(batch, state):
            failure = None  # only the lines named failed; nothing ran, nothing to read
        elif failure is None:
            error = await self._results(batch, state)
            if error is not None:
                keep_open = True
                failure = error.model_copy(update={"retryable": False, "message": (
                    f"model '{self.name}': the results of batch {batch.id} could not be read ({error.message}); the "
                    f"batch stays open: the next run reads them (isf batch list)")})
        batch.stored = None
        for key, item in list(batch.waiters.items()):  # (what was read was handed over: none of these)
            del batch.waiters[key]
            if failure is not None:
                response = ModelResponse(model=self.config.model, error=failure.model_copy())
            elif state.cancelled:
                response = item_error(ErrorType.BATCH_CANCELLED, f"batch {batch.id} was cancelled before this request ran",
                                      retryable=False)
            else:
                response = item_error(ErrorType.BATCH_MISSING, f"batch {batch.id}: no result for this request",
                                      retryable=True)
            self._retry_or_fail(item, batch, response)
        if not keep_open:
            self.store.close(batch.tag)
            self._forget(batch)
            batch.info.done = True

    async def _results(self, batch: _Batch, state: BatchState) -> ResponseError | None:
        """Read the batch's results, a chunk at a time; a stream that breaks is read again from
        the start (what was taken is skipped). The error that stopped it for good, if any."""
        tries = 0
        while True:
            results = aiter(self.api.batch_results(state))
            chunk: dict[str, ModelResponse] = {}
            error = None
            while True:
                try:
                    custom_id, response = await anext(results)
                except StopAsyncIteration:
                    break
                except BatchCallError as exc:
                    error = exc.error
                    break
                except Exception as exc:  # an answer the provider cannot read: it would be again
                    error = ResponseError(type=ErrorType.PROVIDER, message=f"{type(exc).__name__}: {exc}",
                                          retryable=False)
                    break
                if custom_id in batch.read or custom_id in chunk:
                    continue
                chunk[custom_id] = response
                if len(chunk) >= READ_CHUNK:
                    await self._take(batch, list(chunk.items()))
                    chunk = {}
            await self._take(batch, list(chunk.items()))  # what came before a break is good
            if error is None:
                return None
            tries += 1
            if not error.retryable or tries > self.config.max_retries:
                return error
            await anyio.sleep(self._backoff(tries, error.retry_after))

    def _refused(self, batch: _Batch, state: BatchState) -> bool:
        """A batch that failed validation naming its bad lines ran none of its requests: those
        named fail, the others go into the next round (this try not counted). False when no
        line named is one of its requests (then the batch as a whole failed)."""
        if not any(0 < line <= len(batch.keys) for line in state.refused):
            return False
        lines = {key: number for number, key in enumerate(batch.keys, 1)}
        for key, item in list(batch.waiters.items()):
            del batch.waiters[key]
            error = state.refused.get(lines.get(key, 0))
            if error is not None:
                self._deliver(item, ModelResponse(model=self.config.model, error=error.model_copy()))
            else:
                item.attempts = max(0, item.attempts - 1)
                self._queue(item)
        return True

    async def _take(self, batch: _Batch, chunk: list[tuple[str, ModelResponse]]) -> None:
        """A chunk of results: answers committed in one transaction, marked read, then handed
        over. (Until then a request for one of them waits on this batch.)"""
        if not chunk:
            return
        rows = []
        for custom_id, response in chunk:
            if not response.is_success:
                continue
            response.cost_usd = cost_of(self.prices, response.usage, batch=True)
            item = batch.waiters.get(custom_id)
            if item is not None:
                self._finish(item, response)
                rows.append(text_row(custom_id, self.pipeline, self.name, item.record_id, item.step, item.request,
                                     response))
                continue
            # no record of this run waits on it (an earlier run's request): kept all the same
            if batch.stored is None:
                batch.stored = self.store.items(batch.tag)
            known = batch.stored.get(custom_id)
            if known is not None:
                response.latency_s = 0.0
                rows.append(text_row(custom_id, batch.pipeline, self.name, known.record_id, known.step,
                                     known.request, response))
        if rows:
            self.cache.put_rows(rows)
            self._on_store()
        batch.read.update(custom_id for custom_id, _ in chunk)
        for custom_id, response in chunk:
            item = batch.waiters.pop(custom_id, None)
            if item is None:
                continue
            if response.is_success:
                self._deliver(item, response)
            else:
                if not response.model:
                    response.model = self.config.model
                self._retry_or_fail(item, batch, response)
        await anyio.lowlevel.checkpoint()  # the records it woke run before the next chunk

    def _forget(self, batch: _Batch) -> None:
        for key in batch.keys:
            if self._batches.get(key) is batch:
                del self._batches[key]
