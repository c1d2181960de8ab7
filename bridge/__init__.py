"""chat-bridge: the platform-free core (chat domain, streaming responder, edit scheduler)."""

__version__ = "0.1.0"
