"""Which messages belong together: SIP dialogs, and the legs a B2BUA links.

Owns: a message's dialog keys (its SIP Call-ID and its HEP correlation id) and the
grouping of keys into calls: a message whose correlation id names another Call-ID links the
two legs, so a B2BUA call is one group. Must never: do I/O; grow without bound (groups
and keys are capped; what is past the cap is left ungrouped and counted).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import sip
from .hep import HepMessage, PayloadType

#: A correlation id that links more Call-IDs than this is not a call's (some senders put
#: a constant there): it no longer joins groups.
MAX_GROUP_KEYS = 64
#: Keys tracked at most (an hour of a busy server is far below this)…
MAX_KEYS = 2_000_000
#: …and bytes of key text (a Call-ID may be kilobytes long).
MAX_KEY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Keys:
    """What ties one message to a call."""

    head: sip.SipHead | None
    call_id: str | None
    correlation_id: str | None


def keys_of(msg: HepMessage) -> Keys:
    """The SIP head (for SIP payloads) and the dialog keys of one message."""
    head = sip.parse(msg.payload) if msg.payload_type in (PayloadType.SIP, None) else None
    corr = msg.correlation_id
    return Keys(
        head,
        head.call_id if head is not None and head.call_id else None,
        corr.decode("utf-8", "replace").strip() or None if corr else None,
    )


class Dialogs:
    """Union-find over dialog keys (Call-IDs and correlation ids share one name space)."""

    def __init__(self, max_keys: int = MAX_KEYS, max_group_keys: int = MAX_GROUP_KEYS) -> None:
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}
        self.max_keys = max_keys
        self.max_group_keys = max_group_keys
        self.max_key_bytes = MAX_KEY_BYTES
        self._key_bytes = 0
        #: keys not tracked because MAX_KEYS was reached
        self.untracked = 0

    def __len__(self) -> int:
        return len(self._parent)

    def find(self, key: str) -> str | None:
        """The group (its root key) of ``key``, or None if the key was never added."""
        parent = self._parent
        root = parent.get(key)
        if root is None:
            return None
        while parent[root] != root:
            root = parent[root]
        while parent[key] != root:  # path compression
            parent[key], key = root, parent[key]
        return root

    def add(self, key: str) -> str | None:
        """The group of ``key``, adding it as a group of its own if new (None past the cap)."""
        root = self.find(key)
        if root is not None:
            return root
        if len(self._parent) >= self.max_keys or self._key_bytes > self.max_key_bytes:
            self.untracked += 1
            return None
        self._key_bytes += len(key)
        self._parent[key] = key
        self._size[key] = 1
        return key

    def link(self, a: str, b: str) -> tuple[str, str | None]:
        """Put the groups of two added keys together.

        Returns:
            (root of the result, the root that was absorbed, or None when nothing
            changed: same group already, or the result would pass max_group_keys).
        """
        ra, rb = self.find(a), self.find(b)
        if ra is None or rb is None:
            raise KeyError("link() takes added keys")
        if ra == rb:
            return ra, None
        size = self._size
        if size[ra] + size[rb] > self.max_group_keys:
            return ra, None
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        size[ra] += size.pop(rb)
        return ra, rb

    def observe(self, keys: Keys) -> tuple[str | None, str | None]:
        """Add a message's keys and link them.

        Returns:
            (the message's group root or None if it has no key, an absorbed root or None).
        """
        cid, corr = keys.call_id, keys.correlation_id
        if cid is None and corr is None:
            return None, None
        if cid is None or corr is None or cid == corr:
            return self.add(cid or corr or ""), None
        ra, rb = self.add(cid), self.add(corr)
        if ra is None or rb is None:
            return ra or rb, None
        return self.link(cid, corr)

    def group_of(self, keys: Keys) -> str | None:
        """The group of a message already observed (no change to the groups)."""
        if keys.call_id is not None:
            root = self.find(keys.call_id)
            if root is not None:
                return root
        return self.find(keys.correlation_id) if keys.correlation_id is not None else None

    def members(self) -> dict[str, list[str]]:
        """Every group's keys, by root (for reports; O(keys))."""
        out: dict[str, list[str]] = {}
        for key in self._parent:
            root = self.find(key)
            assert root is not None
            out.setdefault(root, []).append(key)
        return out
