"""The topic ACL every connection to the embedded broker is held to (edge/mosquitto.acl is the same
matrix for mosquitto; docs/security.md).

Topics are `<prefix>/<market>/...`; a broker serves one prefix and a set of markets (`TopicScope`).
- every user: publish `orders/<user>`, `replay/request/<user>`, `replicas/<user>`,
  `recover/answer/<user>` of a market in scope; read `reports/<user>`, `replay/response/<user>`
  and the public `book`, `trades`, `snapshot`, `log`, `replicas/+`, `recover/request`;
- role `sequencer`: additionally publish `log`, `book`, `snapshot`, `trades`, `reports/+`,
  `replay/response/+`, `recover/request` and read `orders/+`, `replay/request/+`,
  `recover/answer/+` (a damaged journal tail's records, from the replicas: only the answering
  client may publish its answer, so the sequencer knows whose names an answer carries);
- retained only where the contract (docs/wire.md) has it: `book` and `snapshot` (the sequencer),
  `replicas/<user>` (the user's own status, at most MAX_RETAINED_STATUS bytes).
Publishing is bounded to the scope, so a user can keep at most one retained status per market:
before, `<anything>/<anything>/replicas/bob` let bob fill the broker's memory with retained messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastbook.wire.topics import DEFAULT_PREFIX

PUBLIC_TOPICS = frozenset({"book", "trades", "snapshot", "log"})

# The largest message a sequencer publishes is a snapshot: 75 bytes per resting order measured with
# 22-character client order ids (7.5 MB for 100,000 resting orders), about 120 with 64-character
# ones, so 64 MiB holds a book of about 550,000 resting orders. Also edge/mosquitto*.conf's limit.
MAX_SEQUENCER_MESSAGE = 64 << 20
# A trader's largest legitimate message is an order message: the sequencer answers one over its
# max_payload (1 MiB) with PAYLOAD_TOO_LARGE, so the broker lets through twice that and cuts the
# connection beyond (the payload is never read into memory).
MAX_CLIENT_MESSAGE = 2 << 20
# A replica status is about 200 bytes; a larger retained one is not kept.
MAX_RETAINED_STATUS = 64 << 10


@dataclass(frozen=True, slots=True)
class TopicScope:
    """The topics a broker serves: one prefix, and the markets (None: any market name)."""

    prefix: str = DEFAULT_PREFIX
    markets: frozenset[str] | None = None

    def holds(self, prefix: str, market: str) -> bool:
        return prefix == self.prefix and (self.markets is None or market in self.markets)


# Any market under the default prefix: EmbeddedBroker's default (fastbook-broker names its markets).
ANY_MARKET = TopicScope()


def _levels(topic: str) -> list[str] | None:
    """Levels of `<prefix>/<market>/...` (at least 3), or None."""
    levels = topic.split("/")
    return levels if len(levels) >= 3 and all(levels[:2]) else None


def may_publish(user: str, role: str, topic: str, scope: TopicScope) -> bool:
    levels = _levels(topic)
    if levels is None or "+" in topic or "#" in topic or not scope.holds(levels[0], levels[1]):
        return False
    tail = levels[2:]
    if tail in (["orders", user], ["replay", "request", user], ["replicas", user],
                ["recover", "answer", user]):
        return True
    if role != "sequencer":
        return False
    if (len(tail) == 1 and tail[0] in PUBLIC_TOPICS) or tail == ["recover", "request"]:
        return True
    return (len(tail) == 2 and tail[0] == "reports") or (
        len(tail) == 3 and tail[:2] == ["replay", "response"])


def may_retain(user: str, role: str, topic: str, size: int, scope: TopicScope) -> bool:
    """Whether the broker keeps a retained publish (already allowed by may_publish) of `size` bytes."""
    if not may_publish(user, role, topic, scope):
        return False
    tail = topic.split("/")[2:]
    if tail == ["replicas", user]:
        return size <= MAX_RETAINED_STATUS
    return role == "sequencer" and tail in (["book"], ["snapshot"])


def is_retained_topic(topic: str) -> bool:
    """A topic the contract retains (for an open broker, which has no users to check)."""
    levels = _levels(topic)
    if levels is None:
        return False
    tail = levels[2:]
    return tail in (["book"], ["snapshot"]) or (len(tail) == 2 and tail[0] == "replicas")


def may_subscribe(user: str, role: str, topic_filter: str) -> bool:
    """A filter is allowed only if every topic it can match is readable: wildcards are allowed in
    the prefix and market levels only, and as the client level of replicas/+ (public). (Not bounded
    to the scope: nothing can be published outside it, so there is nothing to read there.)"""
    levels = _levels(topic_filter)
    if levels is None or "#" in topic_filter:
        return False
    tail = levels[2:]
    if any(level == "+" for level in tail):
        if tail == ["replicas", "+"]:
            return True
        if role != "sequencer":
            return False
        return tail in (["orders", "+"], ["replay", "request", "+"], ["reports", "+"],
                        ["replay", "response", "+"], ["recover", "answer", "+"])
    if (len(tail) == 1 and tail[0] in PUBLIC_TOPICS) or tail == ["recover", "request"]:
        return True
    if tail in (["reports", user], ["replay", "response", user]):
        return True
    if len(tail) == 2 and tail[0] == "replicas":
        return True
    return role == "sequencer" and (
        (len(tail) == 2 and tail[0] in ("orders", "reports"))
        or (len(tail) == 3
            and tail[:2] in (["replay", "request"], ["replay", "response"], ["recover", "answer"]))
    )


def may_receive(user: str, role: str, topic: str) -> bool:
    """Delivery of one message on `topic` (a concrete topic; same rules as subscribing to it)."""
    return "+" not in topic and "#" not in topic and may_subscribe(user, role, topic)
