"""A local model through Hugging Face transformers: real batches, one `generate` per batch.

`model` in shaping.toml is a local path (or a hub id, if you allow downloads). Prompts are
left-padded and each batch runs in a worker thread so the event loop keeps serving other models.
Needs the `local` extra: `pip install 'shaping[local]'`.

In (what the model sees):
- Messages go to `tokenizer.apply_chat_template(messages, tools=..., add_generation_prompt=True,
  **chat_template_kwargs)` with all their fields: `reasoning_content`, `tool_calls` (arguments
  given to the template as an object, as vLLM does), `tool_call_id`, `name`; text parts are joined
  with newlines. Image parts are refused (this provider is text-only).
- `tools` go as `tools=` (refused when the template does not render tools); `tool_choice` "auto"
  offers them, "none" leaves them out; a forced choice is refused.
- `chat_template_kwargs` (e.g. `{enable_thinking = false}`): from `[models.X.options]` and the
  request, the request winning per key; a key the template never reads is refused.
  `reasoning_effort` is passed to templates that read it (gpt-oss) and refused by others.
- Without a chat template: plain `System:/User:/Assistant:/Tool (id name):` turns, an assistant's
  reasoning as `<think>...</think>` and its calls as `<tool_call>{...}</tool_call>`; tools,
  template kwargs and reasoning_effort are refused.

Generation: `max_tokens` (or `max_completion_tokens`), `temperature` (none or 0: greedy; above 0:
sampling with `top_p`, `top_k`, `min_p`, the model's generation_config filling those not given),
`repetition_penalty`, `seed` (torch.manual_seed before the batch), `stop` (strings; generation
stops at them and the text ends before them), `n` (1 only). Any other param, and
`response_format`, is refused by name (`UnsupportedRequest`: the record fails with
`unsupported_request`, nothing is generated).

Out: every id of `generation_config.eos_token_id` and the tokenizer's eos stop a sequence
(`finish_reason` "stop"; "length" only at max_tokens). Usage counts the real prompt tokens (no
padding) and the new tokens up to and including the one that stopped it. Output is decoded without
special tokens except the markers below (found even when they are special tokens): a leading
`<think>...</think>` block (or everything up to `</think>` when the prompt opened `<think>`, as
Qwen3's template does) becomes `reasoning`, its tokens `usage.reasoning_tokens`; with tools offered,
Hermes/Qwen `<tool_call>{"name", "arguments"}</tool_call>` blocks become `tool_calls` (ids call_0,
call_1, ...) and finish_reason "tool_calls". `chat_template_fingerprint` hashes the template and
the options' template kwargs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from shaping.error_types import ErrorType
from shaping.errors import ConfigError
from shaping.providers.base import Provider, UnsupportedRequest
from shaping.requests import FunctionCall, ImagePart, LLMMessage, LLMRequest, ModelResponse, ToolCall, Usage

DTYPES = ("auto", "float32", "float16", "bfloat16")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
MARKERS = (THINK_OPEN, THINK_CLOSE, "<tool_call>", "</tool_call>")
TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: every param this provider takes: what it must be, and a check
PARAMS: dict[str, tuple[str, Any]] = {
    "max_tokens": ("an integer > 0", lambda v: _integer(v) and v > 0),
    "max_completion_tokens": ("an integer > 0", lambda v: _integer(v) and v > 0),
    "temperature": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "top_p": ("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    "top_k": ("an integer >= 0", lambda v: _integer(v) and v >= 0),
    "min_p": ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "repetition_penalty": ("a number > 0", lambda v: _number(v) and v > 0),
    "seed": ("an integer", _integer),
    "stop": ("a string or a list of strings",
             lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v))),
    "n": ("1 (one answer per request)", lambda v: v == 1),
    "tools": ("a list of {type: function, function: {name, ...}}", lambda v: isinstance(v, list) and all(
        isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict) for t in v)),
    "tool_choice": ('"auto" or "none" (a local model cannot be made to call a tool)', lambda v: v in ("auto", "none")),
    "chat_template_kwargs": ("a table of chat template variables", lambda v: isinstance(v, dict)),
    "reasoning_effort": ("a string", lambda v: isinstance(v, str)),
}
#: template arguments the provider sets itself
RESERVED_KWARGS = ("messages", "tools", "documents", "add_generation_prompt", "continue_final_message",
                   "chat_template", "tokenize")
#: names a template reads that are functions, not variables to set
TEMPLATE_GLOBALS = ("raise_exception", "strftime_now", "namespace", "range", "dict", "lipsum", "cycler", "joiner")


class TransformersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(default=None, description="cuda, cuda:1, cpu...; default cuda when present")
    dtype: str = Field(default="auto", pattern="^(auto|float32|float16|bfloat16)$")
    trust_remote_code: bool = False
    max_tokens: int = Field(default=256, gt=0, description="new tokens when a request gives no max_tokens")
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="chat template variables for every request (the request's win)")


def _unsupported(message: str) -> UnsupportedRequest:
    return UnsupportedRequest(f"transformers provider: {message}")


@functools.lru_cache(maxsize=16)
def template_variables(template: str) -> frozenset[str] | None:
    """The variables a Jinja chat template reads, or None when it cannot be parsed here."""
    import jinja2
    import jinja2.meta

    source = re.sub(r"{%-?\s*(?:end)?generation\s*-?%}", "", template)  # transformers' own tag
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(
            jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(source)))
    except jinja2.TemplateSyntaxError:
        return None


def _check_images(request: LLMRequest) -> None:
    for i, m in enumerate(request.messages):
        if isinstance(m.content, list) and any(isinstance(p, ImagePart) for p in m.content):
            raise _unsupported(f"messages[{i}] has an image part; image parts are not supported by this "
                               f"text-only provider")


def _text(m: LLMMessage) -> str:
    return m.content if isinstance(m.content, str) else "\n".join(p.text for p in m.content or ())


def _call_json(call: ToolCall) -> dict[str, Any]:
    """A call as chat templates want it: arguments as an object when they are JSON."""
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except ValueError:
        arguments = call.function.arguments
    return {"name": call.function.name, "arguments": arguments}


def _template_message(m: LLMMessage) -> dict[str, Any]:
    message = m.model_dump()
    if isinstance(m.content, list):
        message["content"] = _text(m)
    if m.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": c.type, "function": _call_json(c)} for c in m.tool_calls]
    return message


def render_plain(request: LLMRequest) -> str:
    """The fallback for tokenizers without a chat template."""
    labels = {"system": "System", "user": "User", "assistant": "Assistant"}
    turns = []
    for m in request.messages:
        text = _text(m)
        if m.role == "assistant":
            think = [f"{THINK_OPEN}\n{m.reasoning_content}\n{THINK_CLOSE}"] if m.reasoning_content else []
            calls = [f"<tool_call>{json.dumps(_call_json(c), ensure_ascii=False)}</tool_call>"
                     for c in m.tool_calls or ()]
            text = "\n".join([*think, *([text] if text else []), *calls])
        label = labels.get(m.role) or f"Tool ({' '.join(filter(None, [m.tool_call_id, m.name]))})"
        turns.append(f"{label}: {text}")
    return "\n\n".join(turns) + "\n\nAssistant:"


def split_reasoning(raw: str, opened: bool) -> tuple[str | None, str, str]:
    """(reasoning, answer, the think block as generated) of a decoded output. `opened`: the
    prompt ended inside a `<think>` block. Only a think block at the start counts."""
    start = 0
    head, sep, _ = raw.partition(THINK_OPEN)
    if not opened and sep and not head.strip():
        opened, start = True, len(head) + len(sep)
    if not opened:
        return None, raw, ""
    close = raw.find(THINK_CLOSE, start)
    if close == -1:  # cut off (or stopped) while thinking
        return raw[start:].strip() or None, "", raw
    end = close + len(THINK_CLOSE)
    return raw[start:close].strip() or None, raw[end:].strip(), raw[:end]


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Hermes/Qwen `<tool_call>{"name", "arguments"}</tool_call>` blocks out of the text; a block
    that is not such JSON leaves the text as it is, with no calls."""
    calls = []
    for n, match in enumerate(TOOL_CALL.finditer(text)):
        try:
            call = json.loads(match.group(1))
        except ValueError:
            return text, []
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return text, []
        arguments = call.get("arguments", call.get("parameters", {}))
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall(id=f"call_{n}", function=FunctionCall(name=call["name"], arguments=arguments)))
    return (TOOL_CALL.sub("", text).strip(), calls) if calls else (text, [])


#: files at most this large are hashed whole; larger ones (weights) by size and mtime
HASH_WHOLE_BYTES = 32 * 1024 * 1024


def local_files_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
        stat = path.stat()
        if stat.st_size <= HASH_WHOLE_BYTES:
            digest.update(f"{path.relative_to(folder).as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
        else:
            digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class TransformersProvider(Provider):
    local = True
    loads_weights = True
    default_batch_size = 16
    default_concurrency = 1
    Options = TransformersOptions
    tokenizer: Any = None

    @classmethod
    def fingerprint_parts(cls, config: Any) -> dict[str, Any]:
        """Options, and for a local folder its files: config, generation config, tokenizer and
        chat template hashed whole; weights (large) by name, size and modification time."""
        parts = super().fingerprint_parts(config)
        folder = Path(config.model).expanduser()
        if folder.is_dir():
            parts["files"] = local_files_fingerprint(folder)
        return parts

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._load)

    def _libraries(self) -> tuple[Any, Any]:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise ConfigError(
                f"model '{self.name}': the transformers provider needs torch and transformers "
                f"({exc.name} is missing): pip install 'shaping[local]'"
            ) from exc
        transformers.utils.logging.disable_progress_bar()  # it would draw over the run's own progress display
        return torch, transformers

    def _cannot_load(self, exc: Exception) -> ConfigError:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ConfigError(f"model '{self.name}': cannot load '{self.config.model}' with transformers: {first_line}")

    def _get_tokenizer(self) -> Any:
        """The tokenizer, loaded on first use (the model loads in `open`)."""
        if self.tokenizer is not None:
            return self.tokenizer
        _, transformers = self._libraries()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                self.config.model, trust_remote_code=self.options.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise self._cannot_load(exc) from exc
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        self._hidden_ids = special - {vocab[m] for m in MARKERS if m in vocab}
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.tokenizer = tokenizer
        try:
            self._check_template({})
        except UnsupportedRequest as exc:
            raise ConfigError(f"shaping.toml: models.{self.name}.options: {exc}") from exc
        return tokenizer

    def _load(self) -> None:
        torch, transformers = self._libraries()
        self._torch = torch
        tokenizer = self._get_tokenizer()
        self.device = self.options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.options.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.config.model, dtype=getattr(torch, dtype), trust_remote_code=self.options.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise self._cannot_load(exc) from exc
        self.model = model.to(self.device).eval()
        eos = model.generation_config.eos_token_id
        self.eos_ids = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}

    async def aclose(self) -> None:
        self.model = None
        torch = getattr(self, "_torch", None)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def chat_template_fingerprint(self) -> str:
        """sha256 of the chat template and the options' template kwargs (sorted)."""
        template = self._get_tokenizer().chat_template or ""
        if isinstance(template, dict):  # named templates
            template = json.dumps(template, sort_keys=True)
        kwargs = json.dumps(self.options.chat_template_kwargs, sort_keys=True, default=str)
        return hashlib.sha256(f"{template}\n{kwargs}".encode()).hexdigest()

    # -- params ------------------------------------------------------------------------------

    def prepare_params(self, params: dict[str, Any]) -> dict[str, Any]:
        if "response_format" in params:
            raise _unsupported("param 'response_format' is not supported (use response_model=: the schema "
                               "goes into the prompt and the answer is validated)")
        for key, value in params.items():
            if key not in PARAMS:
                raise _unsupported(f"param {key!r} is not supported (supported: {', '.join(PARAMS)})")
            what, ok = PARAMS[key]
            if not ok(value):
                raise _unsupported(f"param {key!r} must be {what}, got {value!r:.80}")
        out = {k: v for k, v in params.items() if k not in ("n", "max_completion_tokens")}
        if "max_completion_tokens" in params:
            out["max_tokens"] = params["max_completion_tokens"]
        self._check_template(out)
        return out

    @staticmethod
    def _tools(params: dict[str, Any]) -> list[dict[str, Any]] | None:
        return (params.get("tools") or None) if params.get("tool_choice") != "none" else None

    def _template_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(self.options.chat_template_kwargs)
        if "reasoning_effort" in params:
            kwargs["reasoning_effort"] = params["reasoning_effort"]
        return {**kwargs, **(params.get("chat_template_kwargs") or {})}

    def _check_template(self, params: dict[str, Any]) -> None:
        """Refuse what the chat template (or the plain fallback) would not render."""
        self._get_tokenizer()
        tools, kwargs = self._tools(params), self._template_kwargs(params)
        if not self.has_chat_template:
            if tools or kwargs:
                given = "tools" if tools else f"chat template variable(s) {', '.join(sorted(kwargs))}"
                raise _unsupported(f"this model has no chat template, so {given} cannot be sent "
                                   f"(the plain User:/Assistant: prompt has no place for them)")
            return
        if reserved := sorted(set(kwargs) & set(RESERVED_KWARGS)):
            raise _unsupported(f"chat_template_kwargs: {', '.join(reserved)} is set by the provider")
        names = template_variables(self.tokenizer.get_chat_template(None, tools))
        if names is None:  # a template we cannot read: it decides
            return
        if tools and "tools" not in names:
            raise _unsupported("this model's chat template does not render tools; tools cannot be offered")
        if unused := sorted(set(kwargs) - names):
            what = ("reasoning_effort (for thinking on/off try chat_template_kwargs={'enable_thinking': ...})"
                    if unused == ["reasoning_effort"] else f"chat_template_kwargs {', '.join(unused)}")
            readable = sorted(n for n in names
                              if n not in RESERVED_KWARGS + TEMPLATE_GLOBALS and not n.endswith("_token"))
            raise _unsupported(f"{what}: not read by this model's chat template (it reads: "
                               f"{', '.join(readable) or 'no other variables'})")

    # -- generation --------------------------------------------------------------------------

    def render(self, request: LLMRequest) -> str:
        """The exact prompt text the model sees for this conversation."""
        _check_images(request)
        self._check_template(request.params)
        if not self.has_chat_template:
            return render_plain(request)
        import jinja2

        messages = [_template_message(m) for m in request.messages]
        try:
            return self.tokenizer.apply_chat_template(
                messages, tools=self._tools(request.params), tokenize=False, add_generation_prompt=True,
                **self._template_kwargs(request.params))
        except jinja2.TemplateError as exc:  # the template's raise_exception(...): a conversation it refuses
            raise _unsupported(f"the chat template refused this conversation: {exc}") from exc

    def count_prompt_tokens(self, request: LLMRequest) -> int | None:
        """The rendered prompt's tokens, with the model's own tokenizer (loaded, not the weights)."""
        tokenizer = self._get_tokenizer()
        try:
            prompt = self.render(request)
        except UnsupportedRequest:
            return None
        return len(tokenizer(prompt, add_special_tokens=not self.has_chat_template).input_ids)

    async def generate_batch(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        return await anyio.to_thread.run_sync(self._generate_all, requests)

    def _generate_all(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        """Render each request (a conversation the template refuses fails alone); requests with
        the same generation settings share one `generate` call."""
        responses: list[ModelResponse] = [None] * len(requests)  # type: ignore[list-item]
        groups: dict[str, list[tuple[int, str]]] = {}
        for i, request in enumerate(requests):
            try:
                prompt = self.render(request)
            except UnsupportedRequest as exc:
                responses[i] = ModelResponse.failure(ErrorType.UNSUPPORTED, f"model '{self.name}': {exc}",
                                                     model=self.config.model)
                continue
            groups.setdefault(json.dumps(self._settings(request.params), sort_keys=True), []).append((i, prompt))
        for key, items in groups.items():
            batch = [requests[i] for i, _ in items]
            for (i, _), response in zip(items, self._generate(batch, [p for _, p in items], json.loads(key))):
                responses[i] = response
        return responses

    def _settings(self, params: dict[str, Any]) -> dict[str, Any]:
        stop = params.get("stop")
        limit = params.get("max_completion_tokens") or params.get("max_tokens") or self.options.max_tokens
        settings: dict[str, Any] = {
            "max_new_tokens": int(limit),
            "stop": [s for s in ([stop] if isinstance(stop, str) else stop or []) if s],
            "seed": params.get("seed"),
        }
        if "repetition_penalty" in params:
            settings["repetition_penalty"] = float(params["repetition_penalty"])
        if params.get("temperature"):
            settings.update(do_sample=True, temperature=float(params["temperature"]),
                            **{k: params[k] for k in ("top_p", "top_k", "min_p") if k in params})
        else:  # greedy, whatever sampling the model's generation_config asks for
            settings.update(do_sample=False, temperature=None, top_p=None, top_k=None, min_p=None)
        return settings

    def _decode(self, ids: list[int]) -> str:
        """Text without special tokens, but with the think and tool-call markers."""
        return self.tokenizer.decode([t for t in ids if t not in self._hidden_ids], skip_special_tokens=False)

    def _stop_criteria(self, stops: list[str], width: int) -> Any:
        from transformers import StoppingCriteria, StoppingCriteriaList

        torch, window = self._torch, 2 * max(map(len, stops)) + 8  # tokens enough to hold any stop

        class StopStrings(StoppingCriteria):
            def __call__(inner, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                tails = [self._decode(row) for row in input_ids[:, max(width, input_ids.shape[1] - window):].tolist()]
                return torch.tensor([any(s in t for s in stops) for t in tails], device=input_ids.device)

        return StoppingCriteriaList([StopStrings()])

    def _generate(self, requests: list[LLMRequest], prompts: list[str],
                  settings: dict[str, Any]) -> list[ModelResponse]:
        torch, tokenizer = self._torch, self.tokenizer
        encoded = tokenizer(prompts, return_tensors="pt", padding=True,
                            add_special_tokens=not self.has_chat_template).to(self.device)
        width = encoded["input_ids"].shape[1]
        stops, seed = settings.pop("stop"), settings.pop("seed")
        kwargs = {**settings, "eos_token_id": sorted(self.eos_ids), "pad_token_id": tokenizer.pad_token_id}
        if stops:
            kwargs["stopping_criteria"] = self._stop_criteria(stops, width)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            output = self.model.generate(**encoded, **kwargs)
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        return [self._response(request, prompt, tokens, int(n), stops)
                for request, prompt, tokens, n in zip(requests, prompts, output[:, width:].tolist(), prompt_lengths)]

    def _response(self, request: LLMRequest, prompt: str, tokens: list[int], prompt_tokens: int,
                  stops: list[str]) -> ModelResponse:
        finish = "length"
        end = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        if end is not None:  # what follows the stop token is padding
            tokens, body, finish = tokens[: end + 1], tokens[:end], "stop"
        else:
            body = tokens
        raw = self._decode(body)
        found = [(raw.index(s), s) for s in stops if s in raw]
        if found:  # the text ends before the stop string, the count at the token that completed it
            at, stop = min(found)
            low, high = 1, len(body)
            while low < high:
                mid = (low + high) // 2
                low, high = (low, mid) if stop in self._decode(body[:mid]) else (mid + 1, high)
            raw, tokens, finish = raw[:at], body[:low], "stop"
        opened = prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)
        reasoning, text, block = split_reasoning(raw, opened)
        reasoning_tokens = len(self.tokenizer(block, add_special_tokens=False)["input_ids"]) if block else 0
        calls: list[ToolCall] = []
        if self._tools(request.params):
            text, calls = parse_tool_calls(text)
            if calls and finish == "stop":
                finish = "tool_calls"
        return ModelResponse(
            text=text, reasoning=reasoning, tool_calls=calls or None, model=self.config.model, finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(tokens),
                        reasoning_tokens=min(reasoning_tokens, len(tokens))),
        )
