"""Prototype (not the package): template decode — raw HEPv3 -> pcapng, same bytes out.

Senders repeat themselves: for one direction (family, proto, addresses, ports) the chunk
bytes *including their headers* are the same in every message, and so are the payload type,
capture id and node name chunks of one agent. So instead of parsing chunks, this cuts each
message into

    [R1: chunks before TS_SEC] [TS_SEC][TS_USEC] [R2: chunks up to the payload] [PAYLOAD]

and looks R1 and R2 up as raw byte strings in two dicts. A hit means "these exact bytes
were decoded by ``hep2pcap.hep.decode`` before, cleanly" — R1's value is the finished
per-direction frame template (addresses, ports, MACs, the constant parts of the IP and L4
checksums), R2's is (agent, node). Only the time (checked: chunk headers, usec < 10**6,
plausible seconds) and the payload chunk (type, exact length) are read per message. A miss
sends the message through ``hep.decode``; if it decodes cleanly with only those chunk types
(R1: family/proto/addresses/ports, R2: payload type/capture id/node name), its R1 and R2 are
learned. Equal bytes, equal decode: the result is what the package would compute.

Also: payload residue with one big-int op, comments cached per (agent, node, proto), blocks
written with ``os.writev`` (``--join`` joins and writes instead), windowed timsort.

``--check`` compares the output with ``hep2pcap convert`` byte for byte.

Usage: python bench/experiments/template.py IN.hep OUT.pcapng [--check] [--join]
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import time
from bisect import bisect_right
from operator import itemgetter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fused import PackageInterfaces, _digest

from hep2pcap import frames as F
from hep2pcap import hep, pcapng, pipeline

HEP3 = struct.Struct("!4sH")
CHUNK = struct.Struct("!HHH")
TS = struct.Struct("!6sI6sI")
TS_SEC_HEAD = CHUNK.pack(0, 0x0009, 10)
TS_USEC_HEAD = CHUNK.pack(0, 0x000A, 10)
EPB_HEAD = struct.Struct("<IIIIIII")
ETH_IP4_UDP = struct.Struct("!6s6sH BBHHHBBH4s4s HHHH")
ETH_IP6_UDP = struct.Struct("!6s6sH IHBB16s16s HHHH")
ETH_IP4_TCP = struct.Struct("!6s6sH BBHHHBBH4s4s HHIIBBHHH")
ETH_IP6_TCP = struct.Struct("!6s6sH IHBB16s16s HHIIBBHHH")
READ_SIZE = 1 << 22
SORT_EVERY = 4096
IOV_MAX = 1024
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_R1_TYPES = frozenset(range(1, 9))
_R2_TYPES = frozenset({0x000B, 0x000C, 0x0013})
_MIN_S, _MAX_S = hep.MIN_PLAUSIBLE_S, hep.NTP_EPOCH_OFFSET_S
_TCP_PROTOS = frozenset(int(p) for p in F.TCP_PROTOS)


def _regions(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(R1 length, R2 length) if the message has the templatable shape, else None."""
    p = pos + 6
    r1 = r2 = -1
    types1: set[int] = set()
    types2: set[int] = set()
    while p < end:
        vendor, ctype, clen = CHUNK.unpack_from(data, p)
        if vendor != 0 or clen < 6:
            return None
        if ctype == 0x0009:
            if r1 >= 0 or data[p + 10 : p + 16] != TS_USEC_HEAD or clen != 10:
                return None
            r1 = p - (pos + 6)
            p += 20
            start2 = p
            continue
        if ctype == 0x000F:
            if r1 < 0 or p + clen != end:
                return None
            r2 = p - start2
            break
        (types1 if r1 < 0 else types2).add(ctype)
        p += clen
    if r1 < 0 or r2 < 0 or not types1 <= _R1_TYPES or not types2 <= _R2_TYPES:
        return None
    return r1, r2


def convert(
    src: Path, dst: Path, *, writev: bool = True, window_us: int = 2_000_000,
    max_pending: int = 100_000, max_templates: int = 1 << 62,
) -> dict[str, Any]:  # fmt: skip
    """Convert one raw HEPv3 dump; return counters."""
    out = open(dst, "wb", buffering=0)  # noqa: SIM115
    fd = out.fileno()
    pif = PackageInterfaces(F.LINKTYPE_ETHERNET)
    bufs: list[bytes] = [pif.header]
    ifaces: dict[Any, int] = {}
    opts: dict[tuple[Any, ...], bytes] = {}
    padopts: dict[tuple[bytes, int], bytes] = {}
    dirs: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    r1s: list[tuple[int, dict[bytes, tuple[Any, ...]]]] = []
    r2s: list[tuple[int, dict[bytes, tuple[Any, ...]]]] = []
    next_seq: dict[tuple[bytes, int, bytes, int], int] = {}
    ip_id = 0
    n_read = n_written = n_fast = 0

    def flush_bufs() -> None:
        if writev:
            left = sum(len(b) for b in bufs)
            done = os.writev(fd, bufs)
            if done != left:  # short write: finish the slow way
                out.write(b"".join(bufs)[done:])
        else:
            out.write(b"".join(bufs))
        bufs.clear()

    def direction(msg: hep.HepMessage) -> tuple[Any, ...]:
        tcp = msg.ip_proto in _TCP_PROTOS
        key = (tcp, msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port, msg.ip_proto)
        d = dirs.get(key)
        if d is None:
            if len(dirs) >= max_templates:
                dirs.clear()  # a bound, not an LRU: a forgotten direction is rebuilt
            s, t, sp, dp = msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port
            addr_sum = F.ones_sum(s + t)
            l4 = 6 if tcp else 17
            d = dirs[key] = (
                tcp, len(s) == 16, s, t, sp, dp, F._mac(t), F._mac(s),
                0x4500 + 0x4000 + (64 << 8 | l4) + addr_sum, addr_sum + l4 + sp + dp,
                msg.ip_proto, (s, sp, t, dp), (t, dp, s, sp),
            )  # fmt: skip
        return d

    def comment(agent: Any, node: Any, proto: int, data: bytes) -> bytes:
        key = (agent, node, proto)
        opt = opts.get(key)
        if opt is None:
            msg = hep.decode(data)
            opt = opts[key] = pcapng.encode_epb(0, 0, b"", pipeline.describe(msg))[28:-4]
        return opt

    def write(item: tuple[Any, ...]) -> None:
        nonlocal ip_id, n_written
        ts, _, d, agent, node, opt, payload = item
        (tcp, six, src_ip, dst_ip, sport, dport, dmac, smac, ip_const, l4_const, _, key,
         rkey) = d  # fmt: skip
        iface = ifaces.get(agent)
        if iface is None:
            iface, idbs = pif.get(agent, node)
            ifaces[agent] = iface
            bufs.append(idbs)
        plen = len(payload)
        pres = int.from_bytes(payload, "big") % 0xFFFF
        if plen & 1:
            pres = pres * 256 % 0xFFFF
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
                total = 28 + plen
                r = (ip_const + total + ip_id) % 0xFFFF
                hdr = ETH_IP4_UDP.pack(
                    dmac, smac, 0x0800, 0x45, 0, total, ip_id, 0x4000, 64, 17,
                    0xFFFF - r if r else 0, src_ip, dst_ip, sport, dport, l4len, ucsum,
                )  # fmt: skip
        else:
            seq = next_seq.pop(key, None)
            if seq is None:
                seq = F._initial_seq(key)
                if len(next_seq) >= F.MAX_TCP_DIRECTIONS:
                    raise NotImplementedError("TCP LRU eviction is not in the prototype")
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
        pk = (opt, size & 3)
        tail = padopts.get(pk)
        if tail is None:
            tail = padopts[pk] = _PAD[size & 3] + opt
        btotal = 32 + size + len(tail)
        bufs.append(EPB_HEAD.pack(6, btotal, iface, ts >> 32, ts & 0xFFFFFFFF, size, size))
        bufs.append(hdr)
        bufs.append(payload)
        bufs.append(tail)
        bufs.append(btotal.to_bytes(4, "little"))
        n_written += 1
        if len(bufs) >= IOV_MAX - 6:
            flush_bufs()

    pending: list[tuple[Any, ...]] = []
    newest = -1
    next_flush = SORT_EVERY
    ts_key = itemgetter(0)

    def flush_sorted(final: bool) -> None:
        nonlocal pending
        pending.sort()  # (ts, arrival) are unique: the rest is never compared
        cut = len(pending)
        if not final:
            cut = bisect_right(pending, newest - window_us, key=ts_key)
            cut = max(cut, len(pending) - max_pending)
        for it in pending[:cut]:
            write(it)
        pending = pending[cut:]

    order = 0
    ts_unpack = TS.unpack_from
    chunk_unpack = CHUNK.unpack_from
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
                item = None
                p = pos + 6
                for r1len, c1 in r1s:
                    d = c1.get(data[p : p + r1len])
                    if d is not None:
                        q = p + r1len
                        h1, sec, h2, usec = ts_unpack(data, q)
                        if (
                            h1 == TS_SEC_HEAD and h2 == TS_USEC_HEAD and usec < 1_000_000
                            and _MIN_S <= sec <= _MAX_S
                        ):  # fmt: skip
                            q += 20
                            for r2len, c2 in r2s:
                                a = c2.get(data[q : q + r2len])
                                if a is not None:
                                    q2 = q + r2len
                                    vendor, ctype, clen = chunk_unpack(data, q2)
                                    if vendor == 0 and ctype == 15 and q2 + clen == end:
                                        agent, node = a
                                        opt = opts.get((agent, node, d[10]))
                                        if opt is None:
                                            opt = comment(agent, node, d[10], data[pos:end])
                                        item = (
                                            sec * 1_000_000 + usec, order, d, agent, node, opt,
                                            data[q2 + 6 : end],
                                        )  # fmt: skip
                                        n_fast += 1
                                    break
                        break
                if item is None:
                    msg = hep.decode(data[pos:end])
                    if msg.payload_type != 1 or msg.ts_us is None or msg.warnings:
                        raise NotImplementedError("non-SIP / repaired messages: package path")
                    d = direction(msg)
                    agent, node = msg.capture_id, msg.node_name
                    if msg.correlation_id or msg.compressed:
                        opt = pcapng.encode_epb(0, 0, b"", pipeline.describe(msg))[28:-4]
                    else:
                        opt = comment(agent, node, msg.ip_proto, data[pos:end])
                        shape = _regions(data, pos, end)
                        if shape is not None:
                            r1len, r2len = shape
                            c1 = _table(r1s, r1len)
                            if len(c1) >= max_templates:
                                c1.clear()
                            c1[data[pos + 6 : pos + 6 + r1len]] = d
                            q = pos + 6 + r1len + 20
                            c = _table(r2s, r2len)
                            c[data[q : q + r2len]] = (agent, node)
                    item = (msg.ts_us, order, d, agent, node, opt, msg.payload)
                order += 1
                pending.append(item)
                ts = item[0]
                if ts > newest:
                    newest = ts
                if len(pending) >= next_flush:
                    flush_sorted(False)
                    next_flush = len(pending) + SORT_EVERY
                pos = end
            buf = data[pos:]
    if buf:
        raise NotImplementedError("truncated stream at EOF is not in the prototype")
    flush_sorted(True)
    if bufs:
        flush_bufs()
    out.close()
    return {"read": n_read, "written": n_written, "template_hits": n_fast}


def _table(tables: list[tuple[int, dict[bytes, Any]]], length: int) -> dict[bytes, Any]:
    """The lookup table for regions of ``length`` bytes (made on first use)."""
    for ln, table in tables:
        if ln == length:
            return table
    table = {}
    tables.append((length, table))
    return table


def main(argv: list[str] | None = None) -> int:
    """Convert, time it, and with --check compare with the package's output."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--join", action="store_true", help="join + write instead of os.writev")
    ap.add_argument("--check", action="store_true", help="compare with hep2pcap convert")
    ap.add_argument("--max-templates", type=int, default=1 << 62,
                    help="bound each template table (cleared when full)")  # fmt: skip
    args = ap.parse_args(argv)
    t0, c0 = time.perf_counter(), time.process_time()
    stats = convert(args.src, args.dst, writev=not args.join, max_templates=args.max_templates)
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
