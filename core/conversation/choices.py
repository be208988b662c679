"""Conversation settings: the mode, model and spoken replies a conversation uses, chosen with
``/mode``, ``/model`` and ``/voice``, and ``/reset`` for a fresh conversation."""

from __future__ import annotations

from dataclasses import replace

from core.clock import Clock
from core.conversation.messages import Conversation, ConversationKey
from core.conversation.store import ConversationStore
from core.conversation.turns import TurnRunner
from core.errors import UserInputError
from core.models.lifecycle import live
from core.models.registry import ModelSpec, ModeSpec, Registry


class ConversationChoices:
    """Reads and changes what a conversation uses; new threads inherit their place's."""

    def __init__(
        self,
        store: ConversationStore,
        registry: Registry,
        turns: TurnRunner,
        clock: Clock,
        *,
        can_speak: bool,
        can_talk: bool = False,
    ) -> None:
        self.registry = registry
        self._clock = clock
        self._store = store
        self._turns = turns
        self._can_speak = can_speak
        self._can_talk = can_talk

    async def set_mode(self, key: ConversationKey, name: str | None) -> ModeSpec:
        """Choose the mode of ``key``'s conversation; raises ``UnknownChoice``."""
        mode = self.registry.mode(name)
        conversation = await self._store.active_conversation(key)
        await self._store.set_mode(conversation.id, mode.id)
        return mode

    async def set_model(self, key: ConversationKey, name: str | None) -> ModelSpec:
        """Choose the model of ``key``'s conversation (a retired one's successor); raises
        ``UnknownChoice``."""
        model = live(self.registry.models, self.registry.model(name), self._clock.now().date())
        conversation = await self._store.active_conversation(key)
        await self._store.set_model(conversation.id, model.id)
        return model

    async def set_voice(self, key: ConversationKey, on: bool, *, talk: bool = False) -> None:
        """Make replies in ``key`` arrive also as speech (``/voice on``), or not; with
        ``talk``, voice notes are answered voice-to-voice (``/voice talk``)."""
        if on and not self._can_speak:
            raise UserInputError("Spoken replies are not set up on this bot.")
        if talk and not self._can_talk:
            raise UserInputError("Voice-to-voice talk needs a realtime speech model on this bot.")
        conversation = await self._store.active_conversation(key)
        await self._store.set_voice(conversation.id, on, talk=talk)

    async def voice_enabled(self, key: ConversationKey) -> bool:
        """Whether replies in ``key`` are also spoken."""
        conversation = await self._store.find_active(key)
        return conversation is not None and conversation.voice

    async def voice_talking(self, key: ConversationKey) -> bool:
        """Whether voice notes in ``key`` are answered voice-to-voice."""
        conversation = await self._store.find_active(key)
        return conversation is not None and conversation.voice_talk

    async def current(self, key: ConversationKey) -> tuple[ModeSpec, ModelSpec]:
        """The mode and model that the next reply in ``key`` will use."""
        return self.resolve(await self._store.active_conversation(key))

    def resolve(self, conversation: Conversation) -> tuple[ModeSpec, ModelSpec]:
        """The mode and model ``conversation`` uses."""
        mode = self.registry.mode(conversation.mode)
        return mode, self.registry.model(conversation.model or mode.model)

    async def reset(self, key: ConversationKey) -> Conversation:
        """Start a new conversation for ``key`` (stopping its reply in progress); the old
        one stays stored."""
        self._turns.cancel(key)
        return await self._store.start_conversation(key)

    async def has_conversation(self, key: ConversationKey) -> bool:
        """Whether ``key`` has an open conversation (a Slack thread the bot takes part in)."""
        return await self._store.find_active(key) is not None

    async def for_turn(self, key: ConversationKey) -> Conversation:
        """``key``'s active conversation; a new thread first takes the mode, model and
        spoken-reply choice made for its place (a Slack channel, a Telegram forum's general
        chat), so ``/mode`` or ``/voice on`` there applies to new threads."""
        conversation = await self._store.active_conversation(key)
        if conversation.last_message_id is not None or not key.thread:
            return conversation
        if conversation.mode is not None or conversation.model is not None or conversation.voice:
            return conversation
        place = await self._store.find_active(replace(conversation.key, thread=""))
        if place is None or (place.mode is None and place.model is None and not place.voice):
            return conversation
        if place.mode is not None:
            await self._store.set_mode(conversation.id, place.mode)
        if place.model is not None:
            await self._store.set_model(conversation.id, place.model)
        if place.voice:
            await self._store.set_voice(conversation.id, True, talk=place.voice_talk)
        return replace(
            conversation,
            mode=place.mode,
            model=place.model,
            voice=place.voice,
            voice_talk=place.voice_talk,
        )
