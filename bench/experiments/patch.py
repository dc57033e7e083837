"""Prototype (not the package): workers build whole EPBs, the parent only patches; same bytes.

Like parallel.py (ranges of the raw file decoded by worker processes with template.py's
template decode, results through /dev/shm files), but the workers build the *complete*
Enhanced Packet Block of every message — EPB header, Ethernet, IP, UDP/TCP header, payload,
comment option — leaving only the order-dependent fields for the parent, which patches them
in place in the block (a ``bytearray``) with one ``pack_into`` each:

* the EPB interface number (written only when it is not 0: interfaces are numbered in the
  order agents are first *written*);
* IPv4: identification and header checksum (the worker sends the residue of the header
  without the id; RFC 1071 sums can be completed later);
* TCP: sequence and acknowledgment numbers and the checksum (residue without seq/ack —
  the issue's "the ones-complement checksum can be patched for the sequence number").

The parent then writes runs of consecutive blocks as single memoryview slices, so in the usual
case (few reorderings) it touches each message with a handful of small operations.

Usage: python bench/experiments/patch.py IN.hep OUT.pcapng [--workers 2] [--check]
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing as mp
import os
import struct
import subprocess
import sys
import time
from array import array
from bisect import bisect_right
from operator import itemgetter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fused import PackageInterfaces, _digest
from parallel import _ranges
from template import (
    _MAX_S,
    _MIN_S,
    _PAD,
    _TCP_PROTOS,
    CHUNK,
    EPB_HEAD,
    ETH_IP4_TCP,
    ETH_IP4_UDP,
    ETH_IP6_TCP,
    ETH_IP6_UDP,
    HEP3,
    SORT_EVERY,
    TS,
    TS_SEC_HEAD,
    TS_USEC_HEAD,
    _regions,
    _table,
)

from hep2pcap import frames as F
from hep2pcap import hep, pcapng, pipeline

#: Offsets inside an EPB: interface id; IPv4 id..checksum; TCP seq..checksum (v4 / v6).
EPB_IFACE = 8
IP4_ID = 28 + 14 + 4
TCP4_SEQ = 28 + 14 + 20 + 4
TCP6_SEQ = 28 + 14 + 40 + 4
IFACE = struct.Struct("<I")
IP4_PATCH = struct.Struct("!HHBBH")  # id, flags/fragment, ttl, proto, checksum
TCP_PATCH = struct.Struct("!IIBBHH")  # seq, ack, data offset, flags, window, checksum
KIND_V4, KIND_TCP = 1, 2
TCP_FIXED = (0x50 << 8 | 0x18) + 65535

_w: dict[str, Any] = {}


def _init(path: str) -> None:
    _w.update(fd=os.open(path, os.O_RDONLY), r1s=[], r2s=[], opts={}, padopts={}, dir_ids={},
              agent_ids={}, seq=0)  # fmt: skip


def _opt(msg: hep.HepMessage) -> bytes:
    return pcapng.encode_epb(0, 0, b"", pipeline.describe(msg))[28:-4]


def _direction(did: int, msg: hep.HepMessage) -> tuple[Any, ...]:
    tcp = msg.ip_proto in _TCP_PROTOS
    s, t, sp, dp = msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port
    addr_sum = F.ones_sum(s + t)
    l4 = 6 if tcp else 17
    kind = (KIND_V4 if len(s) == 4 else 0) | (KIND_TCP if tcp else 0)
    return (
        did, kind, s, t, sp, dp, F._mac(t), F._mac(s),
        0x4500 + 0x4000 + (64 << 8 | l4) + addr_sum, addr_sum + l4 + sp + dp, msg.ip_proto,
    )  # fmt: skip


def work(task: tuple[int, int]) -> tuple[Any, ...]:
    """Decode one range and build every EPB, order-dependent fields left for the parent."""
    offset, length = task
    data = os.pread(_w["fd"], length, offset)
    r1s, r2s, opts, padopts = _w["r1s"], _w["r2s"], _w["opts"], _w["padopts"]
    dir_ids, agent_ids = _w["dir_ids"], _w["agent_ids"]
    new_dirs: list[tuple[Any, ...]] = []
    new_agents: list[tuple[Any, ...]] = []
    ts_a, off_a, kind_a, ipr_a, l4r_a, dir_a, len_a, ag_a = (
        array("q"), array("I"), array("B"), array("I"), array("I"), array("I"), array("I"),
        array("I"),
    )  # fmt: skip
    parts: list[bytes] = []
    blob_pos = 0
    pos, size = 0, len(data)
    ts_unpack, chunk_unpack = TS.unpack_from, CHUNK.unpack_from
    while pos < size:
        end = pos + HEP3.unpack_from(data, pos)[1]
        p = pos + 6
        hit = None
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
                        aid = c2.get(data[q : q + r2len])
                        if aid is not None:
                            q2 = q + r2len
                            vendor, ctype, clen = chunk_unpack(data, q2)
                            if vendor == 0 and ctype == 15 and q2 + clen == end:
                                opt = opts.get((aid, d[10]))
                                if opt is None:
                                    opt = opts[(aid, d[10])] = _opt(hep.decode(data[pos:end]))
                                hit = (sec * 1_000_000 + usec, d, aid, opt, data[q2 + 6 : end])
                            break
                break
        if hit is None:
            msg = hep.decode(data[pos:end])
            if msg.payload_type != 1 or msg.ts_us is None or msg.warnings:
                raise NotImplementedError("non-SIP / repaired messages: package path")
            tcp = msg.ip_proto in _TCP_PROTOS
            dkey = (tcp, msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port, msg.ip_proto)
            d = dir_ids.get(dkey)
            if d is None:
                d = dir_ids[dkey] = _direction(len(dir_ids), msg)
                new_dirs.append(dkey)
            akey = (msg.capture_id, msg.node_name)
            aid = agent_ids.get(akey)
            if aid is None:
                aid = agent_ids[akey] = len(agent_ids)
                new_agents.append(akey)
            if msg.correlation_id or msg.compressed:
                opt = _opt(msg)
            else:
                opt = opts.get((aid, msg.ip_proto))
                if opt is None:
                    opt = opts[(aid, msg.ip_proto)] = _opt(msg)
                shape = _regions(data, pos, end)
                if shape is not None:
                    r1len, r2len = shape
                    _table(r1s, r1len)[data[p : p + r1len]] = d
                    q = p + r1len + 20
                    _table(r2s, r2len)[data[q : q + r2len]] = aid
            hit = (msg.ts_us, d, aid, opt, msg.payload)
        ts, d, aid, opt, payload = hit
        did, kind, src_ip, dst_ip, sport, dport, dmac, smac, ip_const, l4_const, _ = d
        plen = len(payload)
        pres = int.from_bytes(payload, "big") % 0xFFFF
        if plen & 1:
            pres = pres * 256 % 0xFFFF
        ipr = l4r = 0
        if kind == KIND_V4:  # UDP over IPv4: all but the IP id and checksum
            l4len = 8 + plen
            r = (l4_const + l4len + l4len + pres) % 0xFFFF
            total = 20 + l4len
            ipr = (ip_const + total) % 0xFFFF
            hdr = ETH_IP4_UDP.pack(
                dmac, smac, 0x0800, 0x45, 0, total, 0, 0x4000, 64, 17, 0, src_ip, dst_ip,
                sport, dport, l4len, (0xFFFF - r if r else 0) or 0xFFFF,
            )  # fmt: skip
        elif kind == 0:  # UDP over IPv6: complete
            l4len = 8 + plen
            r = (l4_const + l4len + l4len + pres) % 0xFFFF
            hdr = ETH_IP6_UDP.pack(
                dmac, smac, 0x86DD, 0x60000000, l4len, 17, 64, src_ip, dst_ip, sport, dport,
                l4len, (0xFFFF - r if r else 0) or 0xFFFF,
            )  # fmt: skip
        else:  # TCP: seq, ack and checksum are the parent's
            l4len = 20 + plen
            l4r = (l4_const + l4len + TCP_FIXED + pres) % 0xFFFF
            if kind & KIND_V4:
                total = 20 + l4len
                ipr = (ip_const + total) % 0xFFFF
                hdr = ETH_IP4_TCP.pack(
                    dmac, smac, 0x0800, 0x45, 0, total, 0, 0x4000, 64, 6, 0, src_ip, dst_ip,
                    sport, dport, 0, 0, 0x50, 0x18, 65535, 0, 0,
                )  # fmt: skip
            else:
                hdr = ETH_IP6_TCP.pack(
                    dmac, smac, 0x86DD, 0x60000000, l4len, 6, 64, src_ip, dst_ip,
                    sport, dport, 0, 0, 0x50, 0x18, 65535, 0, 0,
                )  # fmt: skip
        fsize = len(hdr) + plen
        pk = (opt, fsize & 3)
        tail = padopts.get(pk)
        if tail is None:
            tail = padopts[pk] = _PAD[fsize & 3] + opt
        btotal = 32 + fsize + len(tail)
        parts.append(EPB_HEAD.pack(6, btotal, 0, ts >> 32, ts & 0xFFFFFFFF, fsize, fsize))
        parts.append(hdr)
        parts.append(payload)
        parts.append(tail)
        parts.append(btotal.to_bytes(4, "little"))
        ts_a.append(ts)
        off_a.append(blob_pos)
        kind_a.append(kind)
        ipr_a.append(ipr)
        l4r_a.append(l4r)
        dir_a.append(did)
        len_a.append(plen)
        ag_a.append(aid)
        blob_pos += btotal
        pos = end
    off_a.append(blob_pos)
    _w["seq"] += 1
    name = f"/dev/shm/hep2pcap-bench-{os.getpid()}-{_w['seq']}"
    with open(name, "wb") as f:
        f.write(b"".join(parts))
    cols = (ts_a, off_a, kind_a, ipr_a, l4r_a, dir_a, len_a, ag_a)
    return (os.getpid(), new_dirs, new_agents, cols, name, blob_pos)


def convert(
    src: Path, dst: Path, workers: int = 2, window_us: int = 2_000_000,
    max_pending: int = 100_000, use_mmap: bool = True, use_writev: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Convert one raw HEPv3 dump; the parent sorts, patches and writes."""
    out = open(dst, "wb", buffering=0)  # noqa: SIM115
    fd_out = out.fileno()
    pif = PackageInterfaces(F.LINKTYPE_ETHERNET)
    bufs: list[Any] = [pif.header]
    ifaces: dict[Any, int] = {}
    next_seq: dict[tuple[bytes, int, bytes, int], int] = {}
    ip_id = 0
    n = 0
    run: list[Any] = [None, 0, 0]  # blob, start, end of the run of blocks being collected
    ip4_patch, tcp_patch, iface_patch = IP4_PATCH.pack_into, TCP_PATCH.pack_into, IFACE.pack_into

    def write(item: tuple[Any, ...]) -> None:
        nonlocal ip_id, n
        _, _, ch, i = item
        blob, mv, cols, dlist, alist = ch
        off_a = cols[1]
        off = off_a[i]
        kind = cols[2][i]
        agent, node = alist[cols[7][i]]
        iface = ifaces.get(agent)
        if iface is None:
            iface, idbs = pif.get(agent, node)
            ifaces[agent] = iface
            _end_run()
            bufs.append(idbs)
        if iface:
            iface_patch(blob, off + EPB_IFACE, iface)
        if kind & KIND_V4:
            ip_id = (ip_id + 1) & 0xFFFF
            r = (cols[3][i] + ip_id) % 0xFFFF
            ip4_patch(blob, off + IP4_ID, ip_id, 0x4000, 64, 6 if kind & KIND_TCP else 17,
                      0xFFFF - r if r else 0)  # fmt: skip
        if kind & KIND_TCP:
            key, rkey = dlist[cols[5][i]]
            seq = next_seq.pop(key, None)
            if seq is None:
                seq = F._initial_seq(key)
                if len(next_seq) >= F.MAX_TCP_DIRECTIONS:
                    raise NotImplementedError("TCP LRU eviction is not in the prototype")
            ack = next_seq.get(rkey)
            if ack is None:
                ack = next_seq[rkey] = F._initial_seq(rkey)
            r = (cols[4][i] + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)) % 0xFFFF
            tcp_patch(blob, off + (TCP4_SEQ if kind & KIND_V4 else TCP6_SEQ), seq, ack, 0x50,
                      0x18, 65535, 0xFFFF - r if r else 0)  # fmt: skip
            next_seq[key] = (seq + cols[6][i]) & 0xFFFFFFFF
        nxt = off_a[i + 1]
        if run[0] is mv and run[2] == off:
            run[2] = nxt
        else:
            _end_run()
            run[0], run[1], run[2] = mv, off, nxt
        n += 1

    def _end_run() -> None:
        if run[0] is not None:
            bufs.append(run[0][run[1] : run[2]])
            run[0] = None
            if len(bufs) >= 512:
                _flush()

    def _flush() -> None:
        if use_writev:
            left = sum(len(b) for b in bufs)
            done = os.writev(fd_out, bufs)
            if done != left:  # short write: finish the slow way
                out.write(b"".join(bufs)[done:])
        else:
            out.write(b"".join(bufs))
        bufs.clear()

    pending: list[tuple[Any, ...]] = []
    newest = -1
    next_flush = SORT_EVERY
    ts_key = itemgetter(0)

    def flush_sorted(final: bool) -> None:
        nonlocal pending
        pending.sort()  # (ts, arrival) are unique
        cut = len(pending)
        if not final:
            cut = bisect_right(pending, newest - window_us, key=ts_key)
            cut = max(cut, len(pending) - max_pending)
        for it in pending[:cut]:
            write(it)
        pending = pending[cut:]

    ctx = mp.get_context("fork")
    order = 0
    dirs_of: dict[int, list[tuple[Any, ...]]] = {}
    agents_of: dict[int, list[tuple[Any, ...]]] = {}
    with ctx.Pool(workers, initializer=_init, initargs=(str(src),)) as pool:
        for pid, new_dirs, new_agents, cols, name, size in pool.imap(work, _ranges(src)):
            dlist = dirs_of.setdefault(pid, [])
            for _, s, d, sp, dp, _ in new_dirs:
                dlist.append(((s, sp, d, dp), (d, dp, s, sp)))
            alist = agents_of.setdefault(pid, [])
            alist.extend(new_agents)
            if use_mmap:  # patch the worker's pages in place: no copy in the parent
                fd = os.open(name, os.O_RDWR)
                blob = mmap.mmap(fd, size) if size else bytearray()
                os.close(fd)
            else:
                blob = bytearray(size)
                with open(name, "rb") as f:
                    f.readinto(blob)
            os.unlink(name)  # the mapping stays valid until the last view of it is gone
            ch = (blob, memoryview(blob), cols, dlist, alist)
            for i, ts in enumerate(cols[0]):
                pending.append((ts, order, ch, i))
                order += 1
                if ts > newest:
                    newest = ts
            if len(pending) >= next_flush:
                flush_sorted(False)
                next_flush = len(pending) + SORT_EVERY
    flush_sorted(True)
    _end_run()
    if bufs:
        _flush()
    out.close()
    return {"written": n}


def main(argv: list[str] | None = None) -> int:
    """Convert, time it, and with --check compare with the package's output."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--copy", action="store_true", help="read blobs into bytearrays, no mmap")
    ap.add_argument("--join", action="store_true", help="join + write instead of writev")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    stats = convert(
        args.src, args.dst, args.workers, use_mmap=not args.copy, use_writev=not args.join
    )
    wall = time.perf_counter() - t0
    t = os.times()
    parent, kids = t.user + t.system, t.children_user + t.children_system
    rate = stats["written"] / wall
    print(f"{stats}  wall {wall:.2f} s, {rate:,.0f} msg/s, CPU parent {parent:.2f} s, "
          f"workers {kids:.2f} s")  # fmt: skip
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
