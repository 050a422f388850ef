"""Prompt generation: templates expanded by weight, curated collections, and their mix."""

from shaping.prompts.generator import PromptGenerator, PromptRecord
from shaping.prompts.sources import CuratedPrompt, Template, TemplateFile, load_curated, load_templates

__all__ = ["CuratedPrompt", "PromptGenerator", "PromptRecord", "Template", "TemplateFile",
           "load_curated", "load_templates"]
