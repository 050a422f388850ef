"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama (`/v1`), xAI, Together, any base_url.

The messages array goes as is; params (`max_tokens`, `temperature`, `top_p`, `stop`, `seed`,
`response_format`, ...) go as top-level fields.
"""

from __future__ import annotations

from typing import Any

from shaping.providers.http import HTTPProvider
from shaping.requests import LLMRequest, ModelResponse, Usage


class OpenAIProvider(HTTPProvider):
    default_base_url = "https://api.openai.com/v1"
    path = "/chat/completions"
    supports_response_format = True

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def body(self, request: LLMRequest) -> dict[str, Any]:
        return {
            **request.params,
            "model": self.config.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }

    def parse(self, data: Any) -> ModelResponse:
        choice = data["choices"][0]
        text = choice["message"].get("content")
        if text is not None and not isinstance(text, str):
            raise TypeError("message.content is not a string")
        usage = data.get("usage") or {}
        return ModelResponse(
            text=text or "",
            model=str(data.get("model") or self.config.model),
            finish_reason=choice.get("finish_reason"),
            usage=Usage(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                        completion_tokens=int(usage.get("completion_tokens") or 0)),
        )
