"""Prototype (not the package): raw HEPv3 -> pcapng on both cores, same bytes out.

Split: everything that does not depend on write order runs in worker processes, the rest in
the parent, in order.

* Parent, pass 1 (cheap): walk the HEP3 headers of the file block by block to cut it into
  ~2 MiB ranges on message boundaries; send only (offset, length) to a worker pool (the worker
  ``pread``s the range itself, so input bytes never cross a pipe).
* Worker, per message: fast-path decode (fused.py's learned layouts; anything unusual goes
  through ``hep2pcap.hep.decode``), the payload's ones-complement residue, and the EPB tail
  (payload, padding, comment option, block length) as one blob per range. Per-message numbers
  travel as ``array`` columns (ts, direction, residue, payload length, agent), directions and
  agents as small per-range tables.
* Parent, pass 2, in range order: windowed timsort by (HEP time, arrival), then per message
  the order-dependent part only: interface number, IPv4 id, TCP seq/ack, the IP and L4
  checksums from the precomputed residues, one pack of the header stack and one of the EPB
  header, and a memoryview of the worker's blob.

``--check`` compares the output with ``hep2pcap convert`` byte for byte.

Usage: python bench/experiments/parallel.py IN.hep OUT.pcapng [--workers 2] [--check]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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

RANGE_BYTES = 2 << 20

# --- worker ---------------------------------------------------------------------------

_w: dict[str, Any] = {}


def _init(path: str, shm: bool) -> None:
    _w.update(
        fd=os.open(path, os.O_RDONLY), shm=shm, r1s=[], r2s=[], opts={}, padopts={},
        dir_ids={}, agent_ids={}, seq=0,
    )  # fmt: skip


def _opt(msg: hep.HepMessage) -> bytes:
    # The comment option exactly as pcapng.encode_epb writes it.
    return pcapng.encode_epb(0, 0, b"", pipeline.describe(msg))[28:-4]


def work(task: tuple[int, int]) -> tuple[Any, ...]:
    """Template-decode one range (see template.py); columns, new table rows, EPB tails."""
    offset, length = task
    data = os.pread(_w["fd"], length, offset)
    r1s, r2s, opts, padopts = _w["r1s"], _w["r2s"], _w["opts"], _w["padopts"]
    dir_ids, agent_ids = _w["dir_ids"], _w["agent_ids"]
    new_dirs: list[tuple[Any, ...]] = []
    new_agents: list[tuple[Any, ...]] = []
    ts_a, dir_a, res_a, len_a, ag_a, off_a = (
        array("q"), array("I"), array("I"), array("I"), array("I"), array("I"),
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
            dv = c1.get(data[p : p + r1len])
            if dv is not None:
                q = p + r1len
                h1, sec, h2, usec = ts_unpack(data, q)
                if (
                    h1 == TS_SEC_HEAD and h2 == TS_USEC_HEAD and usec < 1_000_000
                    and _MIN_S <= sec <= _MAX_S
                ):  # fmt: skip
                    q += 20
                    for r2len, c2 in r2s:
                        av = c2.get(data[q : q + r2len])
                        if av is not None:
                            q2 = q + r2len
                            vendor, ctype, clen = chunk_unpack(data, q2)
                            if vendor == 0 and ctype == 15 and q2 + clen == end:
                                opt = opts.get((av[0], dv[2]))
                                if opt is None:
                                    opt = opts[(av[0], dv[2])] = _opt(hep.decode(data[pos:end]))
                                hit = (sec * 1_000_000 + usec, dv, av[0], opt, data[q2 + 6 : end])
                            break
                break
        if hit is None:
            msg = hep.decode(data[pos:end])
            if msg.payload_type != 1 or msg.ts_us is None or msg.warnings:
                raise NotImplementedError("non-SIP / repaired messages: package path")
            tcp = msg.ip_proto in _TCP_PROTOS
            dkey = (tcp, msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port)
            did = dir_ids.get(dkey)
            if did is None:
                did = dir_ids[dkey] = len(dir_ids)
                new_dirs.append(dkey)
            hlen = 14 + (20 if len(msg.src_ip) == 4 else 40) + (20 if tcp else 8)
            dv = (did, hlen, msg.ip_proto)
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
                    _table(r1s, r1len)[data[p : p + r1len]] = dv
                    q = p + r1len + 20
                    _table(r2s, r2len)[data[q : q + r2len]] = (aid,)
            hit = (msg.ts_us, dv, aid, opt, msg.payload)
        ts, dv, aid, opt, payload = hit
        plen = len(payload)
        pres = int.from_bytes(payload, "big") % 0xFFFF
        if plen & 1:
            pres = pres * 256 % 0xFFFF
        fsize = dv[1] + plen
        pk = (opt, fsize & 3)
        tail = padopts.get(pk)
        if tail is None:
            tail = padopts[pk] = _PAD[fsize & 3] + opt
        btotal = 32 + fsize + len(tail)
        parts.append(payload)
        parts.append(tail)
        parts.append(btotal.to_bytes(4, "little"))
        ts_a.append(ts)
        dir_a.append(dv[0])
        res_a.append(pres)
        len_a.append(plen)
        ag_a.append(aid)
        off_a.append(blob_pos)
        blob_pos += plen + len(tail) + 4
        pos = end
    off_a.append(blob_pos)
    blob: bytes | str = b"".join(parts)
    if _w["shm"]:
        _w["seq"] += 1
        name = f"/dev/shm/hep2pcap-bench-{os.getpid()}-{_w['seq']}"
        with open(name, "wb") as f:
            f.write(blob)
        blob = name
    return (os.getpid(), new_dirs, new_agents, ts_a, dir_a, res_a, len_a, ag_a, off_a, blob)


# --- parent ---------------------------------------------------------------------------


def _ranges(path: Path) -> Any:
    """(offset, length) of consecutive ~RANGE_BYTES runs of whole messages."""
    with open(path, "rb") as f:
        base = 0  # file offset of data[0]
        data = b""
        start = 0  # file offset where the current range starts
        while True:
            block = f.read(RANGE_BYTES)
            if not block:
                break
            data = data + block if data else block
            pos = 0
            size = len(data)
            while size - pos >= 6:
                magic, total = HEP3.unpack_from(data, pos)
                if magic != b"HEP3" or total < 6:
                    raise NotImplementedError("framing errors are not in the prototype")
                if pos + total > size:
                    break
                pos += total
                if base + pos - start >= RANGE_BYTES:
                    yield (start, base + pos - start)
                    start = base + pos
            data = data[pos:]
            base += pos
        if data:
            raise NotImplementedError("truncated stream at EOF is not in the prototype")
        if base > start:
            yield (start, base - start)


def convert(
    src: Path, dst: Path, workers: int = 2, window_us: int = 2_000_000,
    max_pending: int = 100_000, shm: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Convert one raw HEPv3 dump with ``workers`` decoding processes."""
    out = open(dst, "wb", buffering=1 << 20)  # noqa: SIM115
    pif = PackageInterfaces(F.LINKTYPE_ETHERNET)
    out.write(pif.header)
    ifaces: dict[Any, int] = {}
    dcache: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    next_seq: dict[tuple[bytes, int, bytes, int], int] = {}
    ip_id = 0
    blocks: list[bytes] = []
    n = 0
    pending: list[tuple[int, int, tuple[Any, ...], int]] = []
    newest = -1
    next_flush = SORT_EVERY
    ts_key = itemgetter(0)

    def write(item: tuple[int, int, tuple[Any, ...], int]) -> None:
        nonlocal ip_id, n
        ts, _, chunk, i = item
        _, dir_a, res_a, len_a, ag_a, off_a, gdirs, gagents, blob = chunk
        agent, node = gagents[ag_a[i]]
        iface = ifaces.get(agent)
        if iface is None:
            iface, idbs = pif.get(agent, node)
            ifaces[agent] = iface
            blocks.append(idbs)
        tcp, src_ip, dst_ip, sport, dport, dmac, smac, ip_const, l4_const = gdirs[dir_a[i]]
        plen = len_a[i]
        pres = res_a[i]
        six = len(src_ip) == 16
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
        a, b = off_a[i], off_a[i + 1]
        size = len(hdr) + plen
        blocks.append(EPB_HEAD.pack(6, 28 + (b - a) + len(hdr), iface, ts >> 32,
                                    ts & 0xFFFFFFFF, size, size))  # fmt: skip
        blocks.append(hdr)
        blocks.append(blob[a:b])
        n += 1
        if len(blocks) >= 3000:
            out.write(b"".join(blocks))
            blocks.clear()

    def flush_sorted(final: bool) -> None:
        nonlocal pending
        pending.sort()
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
    with ctx.Pool(workers, initializer=_init, initargs=(str(src), shm)) as pool:
        for res in pool.imap(work, _ranges(src), chunksize=1):
            pid, new_dirs, new_agents, ts_a, dir_a, res_a, len_a, ag_a, off_a, blob = res
            dlist = dirs_of.setdefault(pid, [])
            for tcp, s, d, sp, dp in new_dirs:
                g = dcache.get((tcp, s, d, sp, dp))
                if g is None:
                    addr_sum = F.ones_sum(s + d)
                    proto = 6 if tcp else 17
                    g = dcache[(tcp, s, d, sp, dp)] = (
                        tcp, s, d, sp, dp, F._mac(d), F._mac(s),
                        0x4500 + 0x4000 + (64 << 8 | proto) + addr_sum,
                        addr_sum + proto + sp + dp,
                    )  # fmt: skip
                dlist.append(g)
            alist = agents_of.setdefault(pid, [])
            alist.extend(new_agents)
            if isinstance(blob, str):
                with open(blob, "rb") as f:
                    data = f.read()
                os.unlink(blob)
                blob = data
            chunk = (ts_a, dir_a, res_a, len_a, ag_a, off_a, dlist, alist, memoryview(blob))
            for i, ts in enumerate(ts_a):
                pending.append((ts, order, chunk, i))
                order += 1
                if ts > newest:
                    newest = ts
            if len(pending) >= next_flush:
                flush_sorted(False)
                next_flush = len(pending) + SORT_EVERY
    flush_sorted(True)
    if blocks:
        out.write(b"".join(blocks))
    out.close()
    return {"written": n}


def main(argv: list[str] | None = None) -> int:
    """Convert, time it, and with --check compare with the package's output."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--pipe", action="store_true", help="blobs through the pool's pipe, not /dev/shm"
    )
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    stats = convert(args.src, args.dst, args.workers, shm=not args.pipe)
    wall = time.perf_counter() - t0
    ru_self = os.times()
    print(f"{stats}  wall {wall:.2f} s, {stats['written'] / wall:,.0f} msg/s, CPU parent "
          f"{ru_self.user + ru_self.system:.2f} s, workers "
          f"{ru_self.children_user + ru_self.children_system:.2f} s")  # fmt: skip
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
