"""Servers only the tests use: a Hugging Face Hub stand-in (hub.py) and `transformers serve`
(transformers_serve.py). The fault-injecting OpenAI/Anthropic servers are shaping.testing."""
