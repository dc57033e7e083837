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

from fused import (
    _KNOWN_PROTOS,
    _MAX_TS_S,
    _MIN_TS_S,
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
    Layout,
    _digest,
)

from hep2pcap import __version__, hep, pcapng, pipeline
from hep2pcap import frames as F

RANGE_BYTES = 2 << 20

# --- worker ---------------------------------------------------------------------------

_w: dict[str, Any] = {}


def _init(path: str) -> None:
    _w["fd"] = os.open(path, os.O_RDONLY)
    _w["layouts"] = []
    _w["opts"] = {}  # (agent, node, proto) -> comment option bytes


def _opt(msg: hep.HepMessage) -> bytes:
    # The comment option exactly as pcapng.encode_epb writes it.
    return pcapng.encode_epb(0, 0, b"", pipeline.describe(msg))[28:-4]


def work(task: tuple[int, int]) -> tuple[Any, ...]:
    """Decode one range; return columns, tables and the blob of EPB tails."""
    offset, length = task
    data = os.pread(_w["fd"], length, offset)
    layouts: list[tuple[Any, ...]] = _w["layouts"]
    opts: dict[tuple[Any, ...], bytes] = _w["opts"]
    ts_a, dir_a, res_a, len_a, ag_a, off_a = (
        array("q"), array("I"), array("I"), array("I"), array("I"), array("I"),
    )  # fmt: skip
    dirs: dict[tuple[Any, ...], int] = {}
    agents: dict[tuple[Any, ...], int] = {}
    parts: list[bytes] = []
    nodes: dict[bytes, str] = {}
    blob_pos = 0
    pos, size = 0, len(data)
    while pos < size:
        total = HEP3.unpack_from(data, pos)[1]
        end = pos + total
        rec = None
        p = pos + 6
        for lay in layouts:
            if total - 6 >= lay[2]:
                v = lay[1].unpack_from(data, p)
                if v[0::2] == lay[0]:
                    break
        else:
            lay = None
            if len(layouts) < 8:
                try:
                    lay = Layout(data[pos:end]).fast_tuple()
                    layouts.append(lay)
                    v = lay[1].unpack_from(data, p)
                except (ValueError, KeyError):
                    lay = None
        if lay is not None:
            (_, _, lsize, i_fam, i_proto, i_src, i_dst, i_sp, i_dp, i_sec, i_usec, i_pt, i_cid,
             fam_ok) = lay  # fmt: skip
            q = p + lsize
            node = None
            vend, ctype, clen = CHUNK.unpack_from(data, q)
            if vend == 0 and ctype == 0x0013 and q + clen <= end:
                nb = data[q + 6 : q + clen]
                node = nodes.get(nb)
                if node is None:
                    node = nodes[nb] = nb.decode("utf-8", "replace")
                q += clen
                vend, ctype, clen = CHUNK.unpack_from(data, q)
            sec, usec, proto = v[i_sec], v[i_usec], v[i_proto]
            if not (
                vend != 0 or ctype != 0x000F or q + clen != end or clen == 6
                or v[i_fam] not in fam_ok or proto not in _KNOWN_PROTOS
                or usec >= 1_000_000 or not _MIN_TS_S <= sec <= _MAX_TS_S or v[i_pt] != 1
            ):  # fmt: skip
                ckey = (v[i_cid], node, proto)
                opt = opts.get(ckey)
                if opt is None:
                    opt = opts[ckey] = _opt(hep.decode(data[pos:end]))
                rec = (
                    sec * 1_000_000 + usec, proto in _TCP_PROTOS, v[i_src], v[i_dst], v[i_sp],
                    v[i_dp], data[q + 6 : end], v[i_cid], node, opt,
                )  # fmt: skip
        if rec is None:
            msg = hep.decode(data[pos:end])
            if msg.payload_type != 1 or msg.ts_us is None:
                raise NotImplementedError("non-SIP / no-time messages: package path")
            rec = (
                msg.ts_us, msg.ip_proto in _TCP_PROTOS, msg.src_ip, msg.dst_ip, msg.src_port,
                msg.dst_port, msg.payload, msg.capture_id, msg.node_name, _opt(msg),
            )  # fmt: skip
        ts, tcp, src, dst, sport, dport, payload, agent, node, opt = rec
        dkey = (tcp, src, dst, sport, dport)
        di = dirs.get(dkey)
        if di is None:
            di = dirs[dkey] = len(dirs)
        akey = (agent, node)
        ai = agents.get(akey)
        if ai is None:
            ai = agents[akey] = len(agents)
        plen = len(payload)
        pres = int.from_bytes(payload, "big")
        if plen & 1:
            pres <<= 8
        hlen = 14 + (20 if len(src) == 4 else 40) + (20 if tcp else 8)
        fsize = hlen + plen
        pad = _PAD[fsize & 3]
        btotal = 28 + fsize + len(pad) + len(opt) + 4
        parts.append(payload)
        parts.append(pad)
        parts.append(opt)
        parts.append(btotal.to_bytes(4, "little"))
        ts_a.append(ts)
        dir_a.append(di)
        res_a.append(pres % 0xFFFF)
        len_a.append(plen)
        ag_a.append(ai)
        off_a.append(blob_pos)
        blob_pos += plen + len(pad) + len(opt) + 4
        pos = end
    off_a.append(blob_pos)
    return (ts_a, dir_a, res_a, len_a, ag_a, off_a, list(dirs), list(agents), b"".join(parts))


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
    max_pending: int = 100_000,
) -> dict[str, Any]:  # fmt: skip
    """Convert one raw HEPv3 dump with ``workers`` decoding processes."""
    out = open(dst, "wb", buffering=1 << 20)  # noqa: SIM115
    out.write(pcapng.encode_shb(f"hep2pcap {__version__}"))
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
            iface = ifaces[agent] = len(ifaces)
            blocks.append(
                pcapng.encode_idb(
                    F.LINKTYPE_ETHERNET, pcapng.SNAPLEN, pcapng.interface_name(agent),
                    pcapng.interface_description(agent, node),
                )
            )  # fmt: skip
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
    with ctx.Pool(workers, initializer=_init, initargs=(str(src),)) as pool:
        for chunk in pool.imap(work, _ranges(src), chunksize=1):
            ts_a, _, _, _, _, _, dirs, agents, blob = chunk
            gdirs = []
            for tcp, s, d, sp, dp in dirs:
                g = dcache.get((tcp, s, d, sp, dp))
                if g is None:
                    addr_sum = F.ones_sum(s + d)
                    proto = 6 if tcp else 17
                    g = dcache[(tcp, s, d, sp, dp)] = (
                        tcp, s, d, sp, dp, F._mac(d), F._mac(s),
                        0x4500 + 0x4000 + (64 << 8 | proto) + addr_sum,
                        addr_sum + proto + sp + dp,
                    )  # fmt: skip
                gdirs.append(g)
            chunk = (*chunk[:6], gdirs, agents, memoryview(blob))
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
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    stats = convert(args.src, args.dst, args.workers)
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
