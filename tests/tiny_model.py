"""A tiny, randomly initialised Llama-style model and a word-level tokenizer with a chat
template, built offline and saved to a folder, so tests load it through `from_pretrained`."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = ("the a fox grapes tortoise hare ant grasshopper moral story slow steady wins race we scorn "
         "what cannot have write one line morals and of to is in it you be brief make rhyme . , : ? !"
         " hello world question answer User System Assistant").split()
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def build_tiny_model(folder: Path, chat_template: bool = True) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + sorted(set(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIAL)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- a chat model whose tokenizer round-trips text exactly, for the provider's output mapping ---

#: a Qwen3-like template: tools, tool calls and tool turns, reasoning of earlier turns, and a
#: generation prompt that opens `<think>` unless `enable_thinking` is false
THINK_TEMPLATE = (
    "{%- if tools %}<|system|>tools:{% for t in tools %} {{ t.function.name }}{% endfor %}</s>{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}<|assistant|>"
    "{%- if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content or '' }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>{{ {'name': c.function.name, 'arguments': c.function.arguments}"
    " | tojson }}</tool_call>{% endfor %}</s>"
    "{%- elif m.role == 'tool' %}<|tool|>{{ m.tool_call_id }} {{ m.name }}:{{ m.content }}</s>"
    "{%- else %}<|{{ m.role }}|>{{ m.content }}</s>{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>"
    "{%- if enable_thinking is defined and not enable_thinking %}<think></think>{% else %}<think>{% endif %}{% endif %}"
)
#: a template that knows nothing of tools, thinking or any other variable
SIMPLE_TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{% endfor %}"
                   "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CHAT_SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|end|>"]
MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
CHAT_WORDS = WORDS + ("I think so maybe yes no weather Paris city get_weather name arguments sunny "
                      "tools call_0 18C").split()
PIECES = [" ", "  ", "\n", "\n\n", *'{}[]":,.?!_-']


def build_chat_model(folder: Path, template: str | None = THINK_TEMPLATE, markers_special: bool = False,
                     eos: tuple[str, ...] = ("</s>", "<|end|>"), pad: bool = True,
                     script: dict[tuple[str, ...], float] | None = None) -> Path:
    """A tiny model whose tokenizer splits text into words, single punctuation marks and runs of
    whitespace, and decodes by joining them (so text survives encode/decode exactly).

    `markers_special`: `<think>`, `</think>`, `<tool_call>`, `</tool_call>` as special tokens
    (dropped by `skip_special_tokens`) rather than plain added tokens (as in Qwen3).
    `eos`: the tokens of `generation_config.eos_token_id` (the tokenizer's eos is `</s>`).
    `pad`: whether the tokenizer has a pad token (without one the provider pads with eos).
    `script`: token sequences and the bias the generation config adds to the last token of each
    when the others precede it (`sequence_bias`), so a random model says what a test needs."""
    import torch
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(dict.fromkeys(CHAT_SPECIAL + MARKERS + PIECES + sorted(CHAT_WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s+|\w+|[^\w\s]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, normalized=False) for t in CHAT_SPECIAL])
    markers = [AddedToken(t, special=markers_special, normalized=False) for t in MARKERS]
    backend.add_special_tokens(markers) if markers_special else backend.add_tokens(markers)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>" if pad else None, bos_token="<s>",
        eos_token="</s>", clean_up_tokenization_spaces=False,
    )
    if template is not None:
        tokenizer.chat_template = template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=vocab["<pad>"] if pad else None, bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=vocab["<s>"], pad_token_id=vocab["<pad>"] if pad else None,
        eos_token_id=[vocab[t] for t in eos] if len(eos) > 1 else vocab[eos[0]],
        sequence_bias=[[[vocab[t] for t in seq], bias] for seq, bias in (script or {}).items()] or None,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
