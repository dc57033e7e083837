"""``hep2pcap info``: what a HEP capture holds, and whether it is complete.

Owns: the health report over the pipeline's accepted messages (time range, agents,
versions, payload types, transports, directions, SIP methods and responses, calls) and
the warnings a person must see: SIP transactions mirrored from one side only, per agent
and transport (the FreeSWITCH FS-9657 signature: a sender that does not mirror what it
receives over TLS), dialogs seen in one direction only, packets mirrored by several agents,
packets received more than once from the same agent, an input with no HEP message (and,
for a capture, what it held instead), SIP messages shorter than their Content-Length, and
time going backwards per agent. Must never: do I/O or read clocks; memory stays bounded
(per-dialog and per-transaction tracking stop at a cap, and say so).

Why transactions and not 5-tuples (issue 11): the HEP addresses of TCP/TLS legs do not pair
up — a proxy reports its listening port as the source of connections it opened, replies
name the Via address rather than the connection's, connections are reused — so "flows seen
in one direction only" fires on complete captures and cannot see a missing half. A request
and its responses share the top Via branch and the CSeq method on every hop, however the
addresses are reported.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import sip
from .dialogs import keys_of
from .errors import Reason
from .frames import proto_name
from .hep import PAYLOAD_TYPE_NAMES, HepMessage, PayloadType
from .pcapng import InterfaceStatistics
from .repair import CopyFinder, is_truncated
from .sip import top_via_branch
from .split import CallIndex
from .stats import Stats

#: Dialogs tracked for the one-direction check; past this they are counted only.
MAX_DIALOGS = 500_000
#: Flows tracked for the directions list.
MAX_FLOWS = 100_000
#: Transactions tracked for the one-sided check; past this they are counted only.
MAX_TRANSACTIONS = 500_000
#: An (agent, transport) is reported when at least this many of its transactions, and at
#: least half of them, were seen from one side only (one lost datagram is not a pattern).
ONE_SIDED_MIN = 2
_REQUEST, _RESPONSE = 1, 2
#: A backwards step in one agent's HEP time this large is a warning (smaller ones are
#: the usual jitter of multi-threaded senders and are only counted).
BACKWARDS_WARN_US = 1_000_000
#: Directions listed (busiest first).
TOP_DIRECTIONS = 20
#: Gaps between a packet and its copy from the same agent kept for the "usual spacing".
MAX_COPY_GAPS = 10_000


Endpoint = tuple[bytes, int]


@dataclass(slots=True)
class _Agent:
    messages: int = 0
    nodes: set[str] = field(default_factory=set)
    last_ts: int | None = None
    backwards: int = 0
    max_backwards_us: int = 0


@dataclass(slots=True)
class _Dialog:
    agent: int | None
    ip_proto: int
    src: Endpoint
    dst: Endpoint
    messages: int = 0
    reverse: bool = False  # a message went dst -> src
    invite: bool = False


def _endpoint(ep: Endpoint) -> str:
    addr = ipaddress.ip_address(ep[0])
    return f"{addr}:{ep[1]}" if addr.version == 4 else f"[{addr}]:{ep[1]}"


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat(timespec="microseconds")


class Report:
    """Collects one capture's facts; :meth:`to_dict` and :meth:`to_text` render them."""

    def __init__(self, dedup_window_us: int = 200_000) -> None:
        self.first_us: int | None = None
        self.last_us: int | None = None
        self.messages = 0
        self.agents: dict[int | None, _Agent] = {}
        self.versions: Counter[int] = Counter()
        self.payload_types: Counter[str] = Counter()
        self.transports: Counter[str] = Counter()
        self.directions: Counter[tuple[str, Endpoint, Endpoint]] = Counter()
        self.requests: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.not_sip = 0
        self.truncated = 0
        self.duplicates = 0
        self.duplicate_agents: set[int | None] = set()
        self.same_agent_copies = 0  # one packet received again from the same agent
        self.same_agent_copy_agents: set[int | None] = set()
        self._copy_gaps: list[int] = []  # µs, the first MAX_COPY_GAPS
        self._copies = CopyFinder(dedup_window_us)
        self.dialogs: dict[tuple[int | None, str], _Dialog] = {}
        self.dialogs_untracked = 0
        #: (agent, transport, Call-ID, branch, CSeq, CSeq method) -> _REQUEST | _RESPONSE bits
        self.transactions: dict[tuple[int | None, str, str, str, int, str], int] = {}
        self.transactions_untracked = 0
        self.calls = CallIndex()  # B2BUA legs linked by correlation id are one call
        #: the Interface Statistics Blocks of the inputs (pcapng), as to_dict shows them
        self.capture_statistics: list[dict[str, Any]] = []

    def add_statistics(
        self, name: str, entries: list[tuple[int, str, InterfaceStatistics]]
    ) -> None:
        """Add what an input's Interface Statistics Blocks say (in file order)."""
        for iface, iface_name, st in entries:
            self.capture_statistics.append(
                {
                    "file": name,
                    "interface": iface,
                    "name": iface_name,
                    "start": _iso(st.start_us),
                    "end": _iso(st.end_us),
                    "received": st.received,
                    "kernel_drops": st.kernel_drops,
                    "filter_accept": st.filter_accept,
                    "our_drops": st.our_drops,
                    "delivered": st.delivered,
                    "comment": st.comment,
                }
            )

    def observe(self, ts_us: int, msg: HepMessage) -> None:
        """Count one accepted message (in arrival order)."""
        self.messages += 1
        if self.first_us is None or ts_us < self.first_us:
            self.first_us = ts_us
        if self.last_us is None or ts_us > self.last_us:
            self.last_us = ts_us
        agent = self.agents.get(msg.capture_id)
        if agent is None:
            agent = self.agents[msg.capture_id] = _Agent()
        agent.messages += 1
        if msg.node_name:
            agent.nodes.add(msg.node_name)
        if agent.last_ts is not None and ts_us < agent.last_ts:
            agent.backwards += 1
            agent.max_backwards_us = max(agent.max_backwards_us, agent.last_ts - ts_us)
        agent.last_ts = ts_us
        self.versions[msg.version] += 1
        ptype = msg.payload_type
        self.payload_types[
            "none" if ptype is None else PAYLOAD_TYPE_NAMES.get(ptype, str(ptype))
        ] += 1
        proto = proto_name(msg.ip_proto)
        self.transports[proto] += 1
        src, dst = (msg.src_ip, msg.src_port), (msg.dst_ip, msg.dst_port)
        flow = (proto, src, dst)
        if flow in self.directions or len(self.directions) < MAX_FLOWS:
            self.directions[flow] += 1
        copy, gap = self._copies.check(ts_us, msg)
        if copy:
            self.duplicates += 1
            self.duplicate_agents.add(msg.capture_id)
        elif gap is not None:
            self.same_agent_copies += 1
            self.same_agent_copy_agents.add(msg.capture_id)
            if len(self._copy_gaps) < MAX_COPY_GAPS:
                self._copy_gaps.append(gap)
        keys = keys_of(msg)
        self.calls.observe(ts_us, msg, keys)
        head = keys.head
        if ptype not in (PayloadType.SIP, None):
            return
        if head is None:
            self.not_sip += 1
            return
        if head.method is not None:
            self.requests[head.method] += 1
        elif head.status is not None:
            self.responses[head.status] += 1
        if is_truncated(msg.payload):
            self.truncated += 1
        if head.call_id:
            self._dialog(msg, head, src, dst)
            self._transaction(msg, head, proto)

    def _transaction(self, msg: HepMessage, head: sip.SipHead, proto: str) -> None:
        method = head.cseq_method
        if method is None or head.cseq is None or method == "ACK":  # ACK is never answered
            return
        branch = top_via_branch(msg.payload, head.head_len) or ""
        key = (msg.capture_id, proto, head.call_id or "", branch, head.cseq, method)
        seen = self.transactions.get(key)
        if seen is None and len(self.transactions) >= MAX_TRANSACTIONS:
            self.transactions_untracked += 1
            return
        self.transactions[key] = (seen or 0) | (_REQUEST if head.method else _RESPONSE)

    def _dialog(self, msg: HepMessage, head: sip.SipHead, src: Endpoint, dst: Endpoint) -> None:
        key = (msg.capture_id, head.call_id or "")
        d = self.dialogs.get(key)
        if d is None:
            if len(self.dialogs) >= MAX_DIALOGS:
                self.dialogs_untracked += 1
                return
            d = self.dialogs[key] = _Dialog(msg.capture_id, msg.ip_proto, src, dst)
        d.messages += 1
        if src != d.src:
            d.reverse = True
        if head.method == "INVITE" or head.cseq_method == "INVITE":
            d.invite = True

    # -- rendering ---------------------------------------------------------------------
    def one_way_dialogs(self) -> dict[tuple[int | None, str], tuple[int, int, _Dialog | None]]:
        """Per (agent, transport): (dialogs seen one way, dialogs with ≥ 2 messages, an
        example of a one-way dialog)."""
        out: dict[tuple[int | None, str], tuple[int, int, _Dialog | None]] = {}
        for d in self.dialogs.values():
            if d.messages < 2:
                continue
            k = (d.agent, proto_name(d.ip_proto))
            one, total, example = out.get(k, (0, 0, None))
            if not d.reverse:
                one, example = one + 1, example or d
            out[k] = (one, total + 1, example)
        return out

    def one_sided(self) -> dict[tuple[int | None, str], dict[str, int]]:
        """Per (agent, transport): transactions, those seen as a request only and as
        responses only, dialogs, and dialogs with a one-sided transaction."""
        out: dict[tuple[int | None, str], dict[str, int]] = {}
        dialogs: dict[tuple[int | None, str], set[str]] = {}
        bad: dict[tuple[int | None, str], set[str]] = {}
        for (agent, proto, call_id, _, _, _), seen in self.transactions.items():
            k = (agent, proto)
            row = out.get(k)
            if row is None:
                row = out[k] = {"transactions": 0, "requests_only": 0, "responses_only": 0}
                dialogs[k], bad[k] = set(), set()
            row["transactions"] += 1
            dialogs[k].add(call_id)
            if seen == _REQUEST:
                row["requests_only"] += 1
                bad[k].add(call_id)
            elif seen == _RESPONSE:
                row["responses_only"] += 1
                bad[k].add(call_id)
        for k, row in out.items():
            row["dialogs"], row["one_sided_dialogs"] = len(dialogs[k]), len(bad[k])
        return out

    def usual_copy_spacing_us(self) -> int | None:
        """The median time between a packet and its copy from the same agent."""
        gaps = sorted(self._copy_gaps)
        return gaps[len(gaps) // 2] if gaps else None

    def _one_sided_warnings(self) -> tuple[list[str], set[tuple[int | None, str]]]:
        out, flagged = [], set()
        for (agent, proto), row in sorted(self.one_sided().items(), key=lambda kv: str(kv[0])):
            one = row["requests_only"] + row["responses_only"]
            if one < ONE_SIDED_MIN or 2 * one < row["transactions"]:
                continue
            flagged.add((agent, proto))
            req, resp = row["requests_only"], row["responses_only"]
            if proto in ("TLS", "TCP"):
                meaning = (
                    f"the sender does not mirror the {proto} messages it receives "
                    "(the FreeSWITCH FS-9657 signature); the capture is missing that half"
                )
            elif resp and not req:
                meaning = "the requests of these transactions were never mirrored"
            elif req and not resp:
                meaning = "no response was mirrored (unanswered, or responses not mirrored)"
            else:
                meaning = "one side of each of these transactions was never mirrored"
            out.append(
                f"agent {_agent(agent)}: {one} of {row['transactions']} {proto} transactions in "
                f"{row['one_sided_dialogs']} of {row['dialogs']} dialogs were mirrored from one "
                f"side only ({resp} responses without their request, {req} requests without a "
                f"response): {meaning}"
            )
        return out, flagged

    def warnings(self, stats: Stats) -> list[str]:
        """What a person must see, most important first."""
        out = []
        if not self.messages:
            out.append(
                "no HEP messages"
                + (f" accepted ({stats.read} read)" if stats.read else " in the input")
            )
        one_sided, flagged = self._one_sided_warnings()
        out.extend(one_sided)
        for (agent, proto), (one, total, ex) in sorted(
            self.one_way_dialogs().items(), key=lambda kv: (-kv[1][0], str(kv[0]))
        ):
            if one and ex is not None and (agent, proto) not in flagged:
                out.append(
                    f"agent {_agent(agent)}: {one} of {total} {proto} dialogs have messages "
                    f"in one direction only (e.g. {_endpoint(ex.src)} -> {_endpoint(ex.dst)}); "
                    "the capture is missing the other half"
                )
        if self.duplicates:
            agents = ", ".join(sorted(map(_agent, self.duplicate_agents)))
            out.append(
                f"{self.duplicates} messages were mirrored again by another agent "
                f"(copies sent by agent {agents}; --dedup keeps one copy)"
            )
        if self.same_agent_copies:
            agents = ", ".join(sorted(map(_agent, self.same_agent_copy_agents)))
            out.append(
                f"{self.same_agent_copies} messages are exact copies of a packet the same agent "
                f"sent just before (agent {agents}; usually "
                f"{_spacing(self.usual_copy_spacing_us())} apart): the packet was received more "
                "than once; --dedup keeps them, it drops copies from other agents only"
            )
        if self.truncated:
            out.append(
                f"{self.truncated} SIP messages are shorter than their Content-Length "
                "(written as they are, noted sip_truncated)"
            )
        for agent_id, a in sorted(self.agents.items(), key=lambda kv: str(kv[0])):
            if a.max_backwards_us >= BACKWARDS_WARN_US:
                out.append(
                    f"agent {_agent(agent_id)}: HEP time went backwards {a.backwards} "
                    f"times, by up to {a.max_backwards_us / 1e6:.3f} s"
                )
        if stats.dropped:
            out.append(f"{stats.dropped_total} messages dropped as malformed or unauthorised")
        if stats.input_problems:
            out.append(f"{sum(stats.input_problems.values())} problems reading the input")
        if self.dialogs_untracked:
            out.append(f"{self.dialogs_untracked} messages past {MAX_DIALOGS} dialogs not checked")
        kernel = sum(e["kernel_drops"] or 0 for e in self.capture_statistics)
        ours = sum(e["our_drops"] or 0 for e in self.capture_statistics)
        if kernel or ours:
            out.append(
                f"the capture's statistics blocks count {kernel + ours} messages lost while "
                f"capturing ({kernel} dropped by the kernel, {ours} by the capturing program)"
            )
        if self.capture_statistics and not self.messages and stats.input_problems:
            out.append(
                "no HEP found, but statistics blocks: this looks like a capture hep2pcap "
                "wrote (its frames are the SIP itself; open it in Wireshark or sngrep)"
            )
        if self.transactions_untracked:
            out.append(
                f"{self.transactions_untracked} messages past {MAX_TRANSACTIONS} transactions "
                "not checked"
            )
        out.extend(stats.no_hep)
        return out

    def to_dict(self, stats: Stats) -> dict[str, Any]:
        """Everything, as JSON-ready data (see info-schema.json)."""
        calls = sum(1 for c in self.calls.calls.values() if c.method == "INVITE")
        first, last = self.first_us, self.last_us
        return {
            "time": {
                "first": _iso(first) if first is not None else None,
                "last": _iso(last) if last is not None else None,
                "duration_s": (last - first) / 1e6 if first is not None and last else 0.0,
            },
            "messages": {
                "read": stats.read,
                "accepted": self.messages,
                "skipped": stats.skipped_total,
                "dropped": stats.dropped_total,
            },
            "agents": [
                {
                    "id": agent_id,
                    "nodes": sorted(a.nodes),
                    "messages": a.messages,
                    "time_backwards": a.backwards,
                    "max_backwards_s": a.max_backwards_us / 1e6,
                }
                for agent_id, a in sorted(self.agents.items(), key=lambda kv: str(kv[0]))
            ],
            "versions": {f"HEPv{v}": n for v, n in sorted(self.versions.items())},
            "payload_types": dict(self.payload_types.most_common()),
            "transports": dict(self.transports.most_common()),
            "directions": [
                {"transport": p, "src": _endpoint(s), "dst": _endpoint(d), "messages": n}
                for (p, s, d), n in self.directions.most_common(TOP_DIRECTIONS)
            ],
            "directions_total": len(self.directions),
            "sip": {
                "requests": dict(self.requests.most_common()),
                "responses": {str(c): n for c, n in sorted(self.responses.items())},
                "not_sip": self.not_sip,
                "dialogs": len({cid for _, cid in self.dialogs}),
                "calls": calls,
                "truncated": self.truncated,
            },
            "duplicates": self.duplicates,
            "same_agent_copies": {
                "messages": self.same_agent_copies,
                "agents": sorted(self.same_agent_copy_agents, key=str),
                "usual_spacing_s": (
                    None if (gap := self.usual_copy_spacing_us()) is None else gap / 1e6
                ),
            },
            "one_way_dialogs": [
                {"agent": agent, "transport": proto, "one_way": one, "dialogs": total}
                for (agent, proto), (one, total, _) in sorted(
                    self.one_way_dialogs().items(), key=lambda kv: str(kv[0])
                )
            ],
            "one_sided_transactions": [
                {"agent": agent, "transport": proto, **row}
                for (agent, proto), row in sorted(
                    self.one_sided().items(), key=lambda kv: str(kv[0])
                )
            ],
            "skipped": _reasons(stats.skipped),
            "dropped": _reasons(stats.dropped),
            "input_problems": _reasons(stats.input_problems),
            "repairs": _reasons(stats.warnings),
            "capture_statistics": self.capture_statistics,
            "warnings": self.warnings(stats),
        }

    def to_text(self, stats: Stats) -> str:
        """The report for a person."""
        d = self.to_dict(stats)
        t, m, s = d["time"], d["messages"], d["sip"]
        lines = [
            f"time:        {t['first'] or '-'} .. {t['last'] or '-'} ({t['duration_s']:.1f} s)",
            f"messages:    read {m['read']}, accepted {m['accepted']}, "
            f"skipped {m['skipped']}, dropped {m['dropped']}",
            "agents:      "
            + (
                ", ".join(
                    f"{_agent(a['id'])}"
                    + (f" ({'/'.join(a['nodes'])})" if a["nodes"] else "")
                    + f"={a['messages']}"
                    for a in d["agents"]
                )
                or "-"
            ),
            f"versions:    {_kv(d['versions'])}",
            f"payload:     {_kv(d['payload_types'])}",
            f"transports:  {_kv(d['transports'])}",
            f"requests:    {_kv(s['requests'])}",
            f"responses:   {_kv(s['responses'])}",
            f"dialogs:     {s['dialogs']} Call-IDs, {s['calls']} calls (INVITE; B2BUA legs "
            "linked by correlation id count once)",
        ]
        dirs = d["directions"]
        if dirs:
            lines.append(f"directions:  {d['directions_total']} (busiest first)")
            lines.extend(
                f"  {x['src']} -> {x['dst']} {x['transport']}: {x['messages']}" for x in dirs
            )
        for name in ("skipped", "dropped", "input_problems", "repairs"):
            if d[name]:
                lines.append(f"{name.replace('_', ' ') + ':':13}{_kv(d[name])}")
        if d["capture_statistics"]:
            lines.append("capture statistics (the files' Interface Statistics Blocks):")
            for e in d["capture_statistics"]:
                counts = ", ".join(
                    f"{label} {e[key]}" for key, label in _ISB_LABELS if e[key] is not None
                )
                lines.append(
                    f"  {e['file']} #{e['interface']} {e['name'] or '-'}: "
                    f"{e['start']} .. {e['end']}" + (f": {counts}" if counts else "")
                )
                if e["comment"]:
                    lines.append(f"    {e['comment']}")
        warnings = d["warnings"]
        lines.append(f"warnings:    {len(warnings) or 'none'}")
        lines.extend(f"  ! {w}" for w in warnings)
        return "\n".join(lines)


def _spacing(us: int | None) -> str:
    if us is None:
        return "-"
    return f"{us} µs" if us < 1000 else f"{us / 1000:.1f} ms"


#: How the text report names the ISB counters (pcapng option names in parentheses).
_ISB_LABELS = (
    ("received", "received (ifrecv)"),
    ("kernel_drops", "kernel drops (ifdrop)"),
    ("filter_accept", "filter accepted (filteraccept)"),
    ("our_drops", "dropped by the capture (osdrop)"),
    ("delivered", "written (usrdeliv)"),
)


def _agent(agent: int | None) -> str:
    return "none" if agent is None else str(agent)


def _kv(data: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in data.items()) or "-"


def _reasons(counter: Counter[Reason]) -> dict[str, int]:
    return {r.value: n for r, n in sorted(counter.items(), key=lambda kv: kv[0].value)}
