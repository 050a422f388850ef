"""Local data sets, read from files only (nothing is fetched from a hub)."""

from shaping.datasets.conversations import ConversationRecord, first_user_turn, load_conversations

__all__ = ["ConversationRecord", "first_user_turn", "load_conversations"]
