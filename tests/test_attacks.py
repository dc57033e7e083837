"""hep2pcap listen under attack (issue 16): each attack of tests/attacks.py for two seconds on
loopback, a good agent sending 500 msg/s beside it.

Each asserts the good agent's messages all written (or their loss counted, where the kernel
or a stop dropped them first), the peak RSS under a ceiling well below what the attacks cost
before (hundreds of MiB to GiB), the exit, a whole pcapng, and a summary that names the
bound that was reached and claims no more than is on disk. ``make soak-attacks`` runs the
same attacks longer.
"""

from __future__ import annotations

import re
from pathlib import Path

import attacks
import pytest

pytestmark = pytest.mark.live

SECONDS = 2.0
#: Peak RSS of hep2pcap (main + receiver process) under any of these attacks. Idle it is
#: ~45 MiB; the bounds (window 64 MiB, filter hold 32 MiB, re-cut 32 MiB) are far from full
#: in two seconds at these rates, so this catches any buffer that grows by the message.
CEILING_MIB = 160


def counted_losses(summary: str) -> int:
    m = re.search(r"kernel drops (\d+|unknown), not converted (\d+)", summary)
    assert m is not None, summary
    kernel = 0 if m.group(1) == "unknown" else int(m.group(1))
    return kernel + int(m.group(2))


def written(summary: str) -> int:
    m = re.search(r"^read \d+, wrote (\d+)", summary, re.M)
    assert m is not None, summary
    return int(m.group(1))


def check(res: attacks.Result, *, lossless: bool = True) -> None:
    print(res.line())
    assert res.rc == 0, res.summary
    assert res.valid, res.summary
    assert res.peak_rss_mib < CEILING_MIB, res.line()
    assert res.good_sent > 0
    if lossless:
        assert res.good_lost == 0, res.summary
    else:
        assert 0 <= res.good_lost <= counted_losses(res.summary), res.summary
    assert written(res.summary) <= res.packets  # never claims more than is on disk


def test_zipped_payloads_stamped_hours_ahead(tmp_path: Path) -> None:
    res = attacks.zip_future(tmp_path, SECONDS)
    check(res)
    assert "ahead_of_clock=" in res.summary
    assert "late (" not in res.summary  # the good agent's messages are not made late


def test_zipped_payloads_past_the_inflate_cap(tmp_path: Path) -> None:
    res = attacks.zip_future(tmp_path, SECONDS, 250_000)
    check(res)
    assert f"decompress_too_large={res.notes['attack']}" in res.summary


def test_zip_flood_then_stop_ends_within_seconds(tmp_path: Path) -> None:
    res = attacks.zip_flood_stop(tmp_path, SECONDS)
    check(res, lossless=False)  # what was still queued at the stop is counted, not converted
    assert res.stop_s < 8.0, res.line()  # a couple of seconds; loose for a loaded machine


def test_call_id_filter_holding_big_dialogs(tmp_path: Path) -> None:
    res = attacks.call_id_hold(tmp_path, SECONDS)
    check(res)


def test_tcp_sip_waiting_for_its_content_length(tmp_path: Path) -> None:
    res = attacks.tcp_content_length(tmp_path, SECONDS)
    check(res)
    assert "sip_truncated=" in res.summary


def test_one_tcp_sender_does_not_starve_udp(tmp_path: Path) -> None:
    res = attacks.tcp_flood(tmp_path, SECONDS)
    # The UDP listener was never past its share (before: 55-82 % of the UDP agent dropped);
    # on a loaded machine the flood may still be queued at the stop: that is counted.
    check(res, lossless=False)
    assert "(udp:" not in res.summary, res.summary  # no drops charged to a UDP listener
    assert res.good_lost == 0 or "at stop=" in res.summary, res.summary


def test_tcp_drip_cannot_hold_the_connection_table(tmp_path: Path) -> None:
    res = attacks.tcp_drip(tmp_path, SECONDS, conns=100)
    check(res)
    assert "displaced=" in res.summary
    assert "displaced (" in res.summary  # logged with the peer


def test_wrong_key_flood_costs_the_keyed_agent_nothing(tmp_path: Path) -> None:
    res = attacks.wrong_key(tmp_path, SECONDS)
    check(res)
    assert f"auth_mismatch={res.notes['attack']}" in res.summary


def test_second_writer_is_refused(tmp_path: Path) -> None:
    res = attacks.second_writer(tmp_path)
    check(res)
    assert res.notes["second_rc"] == 1
    stderr = str(res.notes["second_stderr"])
    assert "another process is writing this capture" in stderr
    assert "Traceback" not in stderr


def test_restart_keeps_the_first_capture(tmp_path: Path) -> None:
    res = attacks.restart_existing(tmp_path)
    check(res)
    assert res.good_written == res.good_sent  # both runs' messages, in two sections
    assert "adds a new section" in res.summary


def test_removed_file_is_noticed_and_counted(tmp_path: Path) -> None:
    res = attacks.removed_output(tmp_path, "file")
    assert res.rc == 0, res.summary
    assert float(str(res.notes["noticed_s"])) < 1.5  # within a second, plus polling slack
    assert "output_removed=" in res.summary
    assert res.valid
    assert written(res.summary) <= res.packets


def test_removed_folder_ends_the_run(tmp_path: Path) -> None:
    res = attacks.removed_output(tmp_path, "folder")
    assert res.rc == 1, res.summary
    assert float(str(res.notes["noticed_s"])) < 1.5
    errors = [x for x in res.summary.splitlines() if x.startswith("Error:")]
    assert len(errors) == 1
    assert "was removed while being written" in errors[0]
    assert "(after 0 messages written;" in errors[0]  # nothing is on disk, and it says so
    assert "Traceback" not in res.summary
