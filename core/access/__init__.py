"""Access: who may use the bot and who administers it, and the arguments of admin commands."""
