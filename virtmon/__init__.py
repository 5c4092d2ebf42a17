"""virtmon: an asyncio event-driven monitoring daemon for libvirt hosts."""

__version__ = "0.1.0"
