"""Local data sets, read from files only (nothing is fetched from a hub)."""

from shaping._lazy import lazy_exports

__all__ = ["ConversationRecord", "first_user_turn", "load_conversations"]
__getattr__ = lazy_exports(globals(), {name: "shaping.datasets.conversations" for name in __all__})
