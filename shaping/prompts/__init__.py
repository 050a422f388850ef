"""Prompt generation: templates expanded by weight, curated collections, and their mix."""

from shaping._lazy import lazy_exports

__all__ = ["CuratedPrompt", "PromptGenerator", "PromptRecord", "Template", "TemplateFile",
           "load_curated", "load_templates"]
__getattr__ = lazy_exports(globals(), {
    "PromptGenerator": "shaping.prompts.generator", "PromptRecord": "shaping.prompts.generator",
    **{name: "shaping.prompts.sources" for name in ("CuratedPrompt", "Template", "TemplateFile",
                                                    "load_curated", "load_templates")}})
