"""A local model through Hugging Face transformers: real batches, one `generate` per batch.

`model` in shaping.toml is a local path (or a hub id, if you allow downloads). Conversations
are rendered with the tokenizer's chat template (`add_generation_prompt=True`), or as plain
`System:/User:/Assistant:` text when it has none; prompts are left-padded and the batch runs in
a worker thread so the event loop keeps serving other models. Only the new tokens come back.
A request with no temperature (or 0) decodes greedily.

Needs the `local` extra: `pip install 'shaping[local]'`.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from shaping.errors import ConfigError
from shaping.providers.base import Provider
from shaping.requests import LLMRequest, ModelResponse, Usage

DTYPES = ("auto", "float32", "float16", "bfloat16")


class TransformersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(default=None, description="cuda, cuda:1, cpu...; default cuda when present")
    dtype: str = Field(default="auto", pattern="^(auto|float32|float16|bfloat16)$")
    trust_remote_code: bool = False
    max_tokens: int = Field(default=256, gt=0, description="new tokens when a request gives no max_tokens")


def render_plain(request: LLMRequest) -> str:
    """The fallback for tokenizers without a chat template."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    turns = [f"{names[m.role]}: {m.content}" for m in request.messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


class TransformersProvider(Provider):
    default_batch_size = 16
    default_concurrency = 1
    Options = TransformersOptions

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._load)

    def _load(self) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise ConfigError(
                f"model '{self.name}': the transformers provider needs torch and transformers "
                f"({exc.name} is missing): pip install 'shaping[local]'"
            ) from None
        hf_logging.disable_progress_bar()  # it would draw over the run's own progress display
        self._torch = torch
        path = self.config.model
        self.device = self.options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.options.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.options.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=getattr(torch, dtype), trust_remote_code=self.options.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"model '{self.name}': cannot load '{path}' with transformers: {first_line}") from None
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    async def aclose(self) -> None:
        self.model = None
        torch = getattr(self, "_torch", None)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def render(self, request: LLMRequest) -> str:
        """The exact prompt text the model sees for this conversation."""
        if self.has_chat_template:
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return render_plain(request)

    async def generate_batch(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        return await anyio.to_thread.run_sync(self._generate_all, requests)

    def _generate_all(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        """Requests with the same generation settings share one `generate` call."""
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(self._settings(request.params), sort_keys=True), []).append(i)
        responses: list[ModelResponse] = [None] * len(requests)  # type: ignore[list-item]
        for key, indexes in groups.items():
            settings = json.loads(key)
            for i, response in zip(indexes, self._generate([requests[i] for i in indexes], settings)):
                responses[i] = response
        return responses

    def _settings(self, params: dict[str, Any]) -> dict[str, Any]:
        temperature = params.get("temperature")
        stop = params.get("stop")
        return {
            "max_new_tokens": int(params.get("max_tokens") or self.options.max_tokens),
            "temperature": float(temperature) if temperature else None,
            "top_p": params.get("top_p"),
            "seed": params.get("seed"),
            "stop": [stop] if isinstance(stop, str) else stop,
        }

    def _generate(self, requests: list[LLMRequest], settings: dict[str, Any]) -> list[ModelResponse]:
        torch, tokenizer = self._torch, self.tokenizer
        prompts = [self.render(r) for r in requests]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True,
                            add_special_tokens=not self.has_chat_template).to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": settings["max_new_tokens"],
                                  "pad_token_id": tokenizer.pad_token_id}
        if settings["temperature"]:
            kwargs.update(do_sample=True, temperature=settings["temperature"])
            if settings["top_p"] is not None:
                kwargs["top_p"] = settings["top_p"]
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings["seed"] is not None:
            torch.manual_seed(int(settings["seed"]))
        with torch.inference_mode():
            output = self.model.generate(**encoded, **kwargs)
        new_tokens = output[:, encoded["input_ids"].shape[1]:].tolist()
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        eos = tokenizer.eos_token_id
        responses = []
        for tokens, prompt_tokens in zip(new_tokens, prompt_lengths):
            finish = "length"
            if eos is not None and eos in tokens:
                tokens = tokens[: tokens.index(eos) + 1]
                finish = "stop"
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            for stop in settings["stop"] or ():
                if stop and stop in text:
                    text, finish = text[: text.index(stop)], "stop"
            responses.append(ModelResponse(
                text=text, model=self.config.model, finish_reason=finish,
                usage=Usage(prompt_tokens=int(prompt_tokens), completion_tokens=len(tokens)),
            ))
        return responses
