"""sovnet: content-addressed, signed model weights shared between trusted peers.

Importing this package loads nothing heavy (no libtorrent, no llama.cpp, no
aiohttp); each entry point imports what it needs.
"""

__all__: list[str] = []
