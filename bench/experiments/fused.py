"""Prototype (not the package): one fused loop for raw HEPv3 -> pcapng, same bytes out.

What it tries, each switchable so its gain can be measured on its own:

* ``--no-fast-decode``: use ``hep2pcap.hep.decode`` for every message instead of the fast path.
  The fast path learns the chunk layout of the first message (one ``struct`` call reads all
  fixed-size chunk headers and values; the headers are compared as one tuple, so a message
  that differs in any header takes the package decoder), reads values by position (no dict,
  no HepMessage), and checks the same things the decoder checks for these chunks (known
  proto, address family, plausible time, non-empty SIP payload). Any doubt: package decoder.
* ``--sorter heap|sort``: the package's heap, or a windowed timsort: append, and every
  SORT_EVERY messages sort the pending list (nearly sorted: timsort runs in C at ~O(n)) and
  write everything at or before ``newest - window``. Same order as the heap unless a message
  arrives later than the window (then this is the better-sorted of the two).
* Per-direction header templates: MACs, addresses, ports, the constant parts of the IPv4 and
  UDP/TCP checksums are computed once per direction; per frame one ``int.from_bytes`` of the
  payload, one pack of the Ethernet+IP+L4 stack and one of the EPB header.
* ``--write-batch N``: blocks are joined and written N at a time through a 1 MiB buffer.

The output must be byte-identical to ``hep2pcap convert IN -w OUT`` (same SHB/IDB/EPB bytes,
comments, IP ids, TCP sequence numbers); ``--check`` converts with both and compares.

Usage: python bench/experiments/fused.py IN.hep OUT.pcapng [--check] [--sorter sort]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import struct
import subprocess
import sys
import time
from bisect import bisect_right
from heapq import heappop, heappush
from operator import itemgetter
from pathlib import Path
from typing import Any

from hep2pcap import frames as F
from hep2pcap import hep, pcapng, pipeline

HEP3 = struct.Struct("!4sH")
CHUNK = struct.Struct("!HHH")
EPB_HEAD = struct.Struct("<IIIIIII")
ETH_IP4_UDP = struct.Struct("!6s6sH BBHHHBBH4s4s HHHH")
ETH_IP6_UDP = struct.Struct("!6s6sH IHBB16s16s HHHH")
ETH_IP4_TCP = struct.Struct("!6s6sH BBHHHBBH4s4s HHIIBBHHH")
ETH_IP6_TCP = struct.Struct("!6s6sH IHBB16s16s HHIIBBHHH")
READ_SIZE = 1 << 22
SORT_EVERY = 4096
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_VALUE = {1: "B", 2: "H", 4: "I", 8: "Q"}
_ADDR = {0x0003, 0x0004, 0x0005, 0x0006}
_MAX_TS_S = hep.NTP_EPOCH_OFFSET_S
_MIN_TS_S = hep.MIN_PLAUSIBLE_S
_TCP_PROTOS = frozenset(int(p) for p in F.TCP_PROTOS)
_KNOWN_PROTOS = hep.KNOWN_IP_PROTOS


class PackageInterfaces:
    """Interface numbers and IDB bytes exactly as the package's own PcapngWriter makes them.

    The prototypes must write what ``hep2pcap convert`` writes, and how interfaces are
    numbered is the package's business (it changes: e.g. interface 0 up front). So a real
    PcapngWriter writes into memory; for a new agent one empty packet is written through it,
    and the blocks before that packet (new IDBs) and its interface number are taken.
    """

    def __init__(self, linktype: int = F.LINKTYPE_ETHERNET) -> None:
        self._sink = io.BytesIO()
        self._writer = pcapng.PcapngWriter(self._sink, linktype)
        self.header = self._take()  # SHB and any interfaces written up front

    def _take(self) -> bytes:
        data = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return data

    def get(self, agent: int | None, node: str | None) -> tuple[int, bytes]:
        """(interface number of ``agent``, blocks to write before its first packet)."""
        self._writer.write_packet(agent, node, 0, b"", None)
        data = self._take()
        pos = last = 0
        while pos < len(data):
            last = pos
            pos += struct.unpack_from("<I", data, pos + 4)[0]
        return struct.unpack_from("<I", data, last + 8)[0], data[:last]


class Layout:
    """The fixed-size chunk run at the start of a message, read with one struct call."""

    def __init__(self, data: bytes) -> None:
        chunks = []
        pos = 6
        total = HEP3.unpack_from(data)[1]
        while pos < total:
            vendor, ctype, clen = CHUNK.unpack_from(data, pos)
            if vendor or ctype not in hep._FIXED_SIZE or clen - 6 != hep._FIXED_SIZE[ctype]:
                break
            chunks.append((ctype, clen - 6))
            pos += clen
        fmt = "!" + "".join("6s" + (f"{n}s" if t in _ADDR else _VALUE[n]) for t, n in chunks)
        self.reader = struct.Struct(fmt)
        self.size = self.reader.size
        self.headers = tuple(CHUNK.pack(0, t, 6 + n) for t, n in chunks)
        where = {t: i for i, (t, _) in enumerate(chunks)}
        need = {0x0001, 0x0002, 0x0007, 0x0008, 0x0009, 0x000A, 0x000B}
        six = 0x0005 in where
        need |= {0x0005, 0x0006} if six else {0x0003, 0x0004}
        if not need <= where.keys():
            raise ValueError("first message lacks a chunk the fast path needs")
        if 0x000C not in where:
            raise ValueError("fast path expects a capture id")
        self.six = six
        # value index in the unpacked tuple (values are at odd positions)
        self.i = {t: 2 * k + 1 for t, k in where.items()}
        self.types = frozenset(where)

    def fast_tuple(self) -> tuple[Any, ...]:
        """What the hot loop unpacks: struct, sizes and value positions."""
        i = self.i
        return (
            self.headers, self.reader, self.size, i[1], i[2],
            i[5] if self.six else i[3], i[6] if self.six else i[4], i[7], i[8], i[9], i[10],
            i[11], i[12], hep.AF_INET6_VALUES if self.six else frozenset({hep.AF_INET}),
        )  # fmt: skip


def convert(
    src: Path, dst: Path, *, fast_decode: bool = True, sorter: str = "sort",
    window_us: int = 2_000_000, max_pending: int = 100_000, write_batch: int = 1024,
) -> dict[str, Any]:  # fmt: skip
    """Convert one raw HEPv3 dump; return counters."""
    out = open(dst, "wb", buffering=1 << 20)  # noqa: SIM115
    pif = PackageInterfaces(F.LINKTYPE_ETHERNET)
    out.write(pif.header)
    ifaces: dict[int | None, int] = {}
    comment_opt: dict[tuple[Any, ...], bytes] = {}
    dcache: dict[tuple[bytes, bytes, int, int, bool], tuple[Any, ...]] = {}
    next_seq: dict[tuple[bytes, int, bytes, int], int] = {}
    ip_id = 0
    blocks: list[bytes] = []
    n_read = n_written = n_fast = late = 0
    last_written = -1

    def opt_for(msg: hep.HepMessage, iface: int) -> bytes:
        # The comment option bytes exactly as pcapng.encode_epb writes them.
        text = pipeline.describe(msg)
        block = pcapng.encode_epb(iface, 0, b"", text)
        return block[28:-4]

    def write(item: tuple[int, int, tuple[Any, ...]]) -> None:
        nonlocal ip_id, n_written, last_written, late
        ts, _, rec = item
        if ts < last_written:
            late += 1
        else:
            last_written = ts
        tcp, src_ip, dst_ip, sport, dport, payload, agent, node, ckey, msg = rec
        iface = ifaces.get(agent)
        if iface is None:
            iface, idbs = pif.get(agent, node)
            ifaces[agent] = iface
            blocks.append(idbs)
        okey = (iface, ckey) if ckey is not None else None
        opt = comment_opt.get(okey) if okey is not None else None
        if opt is None:
            opt = opt_for(msg if msg is not None else seen[ckey], iface)
            if okey is not None:
                comment_opt[okey] = opt
        dkey = (src_ip, dst_ip, sport, dport, tcp)
        d = dcache.get(dkey)
        six = len(src_ip) == 16
        if d is None:
            addr_sum = F.ones_sum(src_ip + dst_ip)
            proto = 6 if tcp else 17
            d = dcache[dkey] = (
                F._mac(dst_ip), F._mac(src_ip),
                0x4500 + 0x4000 + (64 << 8 | proto) + addr_sum,  # IPv4 header, minus len+id
                addr_sum + proto + sport + dport,  # pseudo header + ports
            )  # fmt: skip
        dmac, smac, ip_const, l4_const = d
        plen = len(payload)
        pres = int.from_bytes(payload, "big")
        if plen & 1:
            pres <<= 8
        if not tcp:
            l4len = 8 + plen
            r = (l4_const + l4len + l4len + pres) % 0xFFFF
            ucsum = (0xFFFF - r if r else 0) or 0xFFFF
            if six:
                hdr = ETH_IP6_UDP.pack(
                    dmac, smac, 0x86DD, 0x60000000, l4len, 17, 64, src_ip, dst_ip,
                    sport, dport, l4len, ucsum,
                )  # fmt: skip
            else:
                ip_id = (ip_id + 1) & 0xFFFF
                total = 20 + l4len
                r = (ip_const + total + ip_id) % 0xFFFF
                hdr = ETH_IP4_UDP.pack(
                    dmac, smac, 0x0800, 0x45, 0, total, ip_id, 0x4000, 64, 17,
                    0xFFFF - r if r else 0, src_ip, dst_ip, sport, dport, l4len, ucsum,
                )  # fmt: skip
        else:
            if plen > F.MAX_TCP_SEGMENT[6 if six else 4]:
                raise NotImplementedError("segmented TCP payloads are not in the prototype")
            key = (src_ip, sport, dst_ip, dport)
            seq = next_seq.pop(key, None)
            if seq is None:
                seq = F._initial_seq(key)
                if len(next_seq) >= F.MAX_TCP_DIRECTIONS:
                    raise NotImplementedError("TCP LRU eviction is not in the prototype")
            rkey = (dst_ip, dport, src_ip, sport)
            ack = next_seq.get(rkey)
            if ack is None:
                ack = next_seq[rkey] = F._initial_seq(rkey)
            l4len = 20 + plen
            r = (
                l4_const + l4len + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
                + (0x50 << 8 | 0x18) + 65535 + pres
            ) % 0xFFFF  # fmt: skip
            tcsum = 0xFFFF - r if r else 0
            if six:
                hdr = ETH_IP6_TCP.pack(
                    dmac, smac, 0x86DD, 0x60000000, l4len, 6, 64, src_ip, dst_ip,
                    sport, dport, seq, ack, 0x50, 0x18, 65535, tcsum, 0,
                )  # fmt: skip
            else:
                ip_id = (ip_id + 1) & 0xFFFF
                total = 20 + l4len
                r = (ip_const + total + ip_id) % 0xFFFF
                hdr = ETH_IP4_TCP.pack(
                    dmac, smac, 0x0800, 0x45, 0, total, ip_id, 0x4000, 64, 6,
                    0xFFFF - r if r else 0, src_ip, dst_ip, sport, dport, seq, ack,
                    0x50, 0x18, 65535, tcsum, 0,
                )  # fmt: skip
            next_seq[key] = (seq + plen) & 0xFFFFFFFF
        size = len(hdr) + plen
        pad = _PAD[size & 3]
        btotal = 28 + size + len(pad) + len(opt) + 4
        blocks.append(
            b"".join(
                (
                    EPB_HEAD.pack(6, btotal, iface, ts >> 32, ts & 0xFFFFFFFF, size, size),
                    hdr,
                    payload,
                    pad,
                    opt,
                    btotal.to_bytes(4, "little"),
                )
            )
        )
        n_written += 1
        if len(blocks) >= write_batch:
            out.write(b"".join(blocks))
            blocks.clear()

    pending: list[tuple[int, int, tuple[Any, ...]]] = []
    newest = -1
    next_flush = SORT_EVERY
    ts_key = itemgetter(0)

    def flush_sorted(final: bool) -> None:
        nonlocal pending
        pending.sort()
        if final:
            cut = len(pending)
        else:
            cut = bisect_right(pending, newest - window_us, key=ts_key)
            cut = max(cut, len(pending) - max_pending)
        for it in pending[:cut]:
            write(it)
        pending = pending[cut:]

    layouts: list[tuple[Any, ...]] = []
    nodes: dict[bytes, str] = {}
    seen: dict[tuple[Any, ...], hep.HepMessage] = {}
    order = 0
    with open(src, "rb") as f:
        buf = b""
        while True:
            block = f.read(READ_SIZE)
            if not block:
                break
            data = buf + block if buf else block
            size = len(data)
            pos = 0
            while size - pos >= 6:
                magic, total = HEP3.unpack_from(data, pos)
                if magic != b"HEP3" or total < 6:
                    raise NotImplementedError("framing errors are not in the prototype")
                end = pos + total
                if end > size:
                    break
                n_read += 1
                rec = None
                ts = 0
                if fast_decode:
                    p = pos + 6
                    for lay in layouts:
                        headers, reader, lsize = lay[0], lay[1], lay[2]
                        if total - 6 >= lsize:
                            v = reader.unpack_from(data, p)
                            if v[0::2] == headers:
                                break
                    else:
                        lay = None
                        if len(layouts) < 8:
                            try:
                                lay = Layout(data[pos:end]).fast_tuple()
                                layouts.append(lay)
                                headers, reader, lsize = lay[0], lay[1], lay[2]
                                v = reader.unpack_from(data, p)
                            except (ValueError, struct.error, KeyError):
                                lay = None
                    if lay is not None:
                        (_, _, _, i_fam, i_proto, i_src, i_dst, i_sp, i_dp, i_sec, i_usec, i_pt,
                         i_cid, fam_ok) = lay  # fmt: skip
                        if True:
                            q = p + lsize
                            node = None
                            ok = True
                            vend, ctype, clen = CHUNK.unpack_from(data, q)
                            if vend == 0 and ctype == 0x0013 and q + clen <= end:
                                nb = data[q + 6 : q + clen]
                                node = nodes.get(nb)
                                if node is None:
                                    node = nodes[nb] = nb.decode("utf-8", "replace")
                                q += clen
                                vend, ctype, clen = CHUNK.unpack_from(data, q)
                            sec, usec, proto = v[i_sec], v[i_usec], v[i_proto]
                            if (
                                vend != 0 or ctype != 0x000F or q + clen != end or clen == 6
                                or v[i_fam] not in fam_ok or proto not in _KNOWN_PROTOS
                                or usec >= 1_000_000 or not _MIN_TS_S <= sec <= _MAX_TS_S
                                or v[i_pt] != 1
                            ):  # fmt: skip
                                ok = False
                            if ok:
                                ts = sec * 1_000_000 + usec
                                agent = v[i_cid]
                                rec = (
                                    proto in _TCP_PROTOS, v[i_src], v[i_dst], v[i_sp], v[i_dp],
                                    data[q + 6 : end], agent, node, (agent, node, proto), None,
                                )  # fmt: skip
                                n_fast += 1
                if rec is None:
                    msg = hep.decode(data[pos:end])
                    if msg.payload_type != 1 or msg.ts_us is None:
                        raise NotImplementedError("non-SIP / no-time messages: package path")
                    ts = msg.ts_us
                    ckey = None if msg.warnings or msg.correlation_id or msg.compressed else (
                        msg.capture_id, msg.node_name, msg.ip_proto
                    )  # fmt: skip
                    rec = (
                        msg.ip_proto in _TCP_PROTOS, msg.src_ip, msg.dst_ip, msg.src_port,
                        msg.dst_port, msg.payload, msg.capture_id, msg.node_name, ckey, msg,
                    )  # fmt: skip
                elif rec[8] not in seen:
                    # first of its kind: a decoded message, for the comment text only
                    seen[rec[8]] = hep.decode(data[pos:end])
                order += 1
                item = (ts, order, rec)
                if ts > newest:
                    newest = ts
                if sorter == "heap":
                    heappush(pending, item)
                    horizon = newest - window_us
                    while pending and (pending[0][0] <= horizon or len(pending) > max_pending):
                        write(heappop(pending))
                else:
                    pending.append(item)
                    if len(pending) >= next_flush:
                        flush_sorted(False)
                        next_flush = len(pending) + SORT_EVERY
                pos = end
            buf = data[pos:]
    if buf:
        raise NotImplementedError("truncated stream at EOF is not in the prototype")
    if sorter == "heap":
        while pending:
            write(heappop(pending))
    else:
        flush_sorted(True)
    if blocks:
        out.write(b"".join(blocks))
    out.close()
    return {"read": n_read, "written": n_written, "fast": n_fast, "late": late}


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Convert, time it, and with --check compare with the package's output."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--no-fast-decode", dest="fast", action="store_false")
    ap.add_argument("--sorter", choices=("heap", "sort"), default="sort")
    ap.add_argument("--write-batch", type=int, default=1024)
    ap.add_argument("--check", action="store_true", help="compare with hep2pcap convert")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    c0 = time.process_time()
    stats = convert(
        args.src, args.dst, fast_decode=args.fast, sorter=args.sorter,
        write_batch=args.write_batch,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{stats}  wall {wall:.2f} s, CPU {cpu:.2f} s, {stats['written'] / wall:,.0f} msg/s")
    if args.check:
        ref = args.dst.with_suffix(".ref.pcapng")
        exe = Path(sys.executable).parent / "hep2pcap"
        subprocess.run([str(exe), "convert", str(args.src), "-w", str(ref), "-q"], check=True)
        same = _digest(ref) == _digest(args.dst)
        print(f"byte-identical to hep2pcap convert: {same}")
        ref.unlink()
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
