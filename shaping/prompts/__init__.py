"""Prompt generation: templates expanded by weight, curated collections, and their mix."""

from shaping._lazy import lazy_exports

__all__ = ["Area", "CuratedPrompt", "PromptGenerator", "PromptRecord", "Template", "TemplateFile",
           "load_curated", "load_templates"]
__getattr__ = lazy_exports(globals(), {
    **{name: "shaping.prompts.generator" for name in ("Area", "PromptGenerator", "PromptRecord")},
    **{name: "shaping.prompts.sources" for name in ("CuratedPrompt", "Template", "TemplateFile",
                                                    "load_curated", "load_templates")}})
