"""Typed errors and the reason codes users see as counters.

Owns: every way input can be rejected, skipped or repaired (HEP-SPEC §11 plus the
readers' and the pipeline's own reasons). Must never: do I/O or format user output.
The enum *values* are the counter names printed in summaries (``bad_magic=2``).
"""

from __future__ import annotations

import enum


class Reason(enum.Enum):
    """Why a message was rejected, skipped, or decoded with a warning (HEP-SPEC §11)."""

    # v3 message level
    TRUNCATED_HEADER = "truncated_header"
    BAD_MAGIC = "bad_magic"
    LENGTH_TOO_SMALL = "length_too_small"
    LENGTH_EXCEEDS_DATA = "length_exceeds_data"
    TRAILING_BYTES = "trailing_bytes"
    LENGTH_TOO_LARGE = "length_too_large"
    EMPTY_MESSAGE = "empty_message"
    EEP_ALIAS = "eep_alias"
    # v3 chunk level
    CHUNK_HEADER_TRUNCATED = "chunk_header_truncated"
    CHUNK_LENGTH_TOO_SMALL = "chunk_length_too_small"
    CHUNK_OVERRUN = "chunk_overrun"
    CHUNK_TYPE_ZERO = "chunk_type_zero"
    CHUNK_BAD_SIZE = "chunk_bad_size"
    DUPLICATE_CHUNK = "duplicate_chunk"
    VENDOR_CHUNK_SKIPPED = "vendor_chunk_skipped"
    UNKNOWN_CHUNK = "unknown_chunk"
    # v3 semantic level
    MISSING_SRC_ADDR = "missing_src_addr"
    MISSING_DST_ADDR = "missing_dst_addr"
    MIXED_ADDRESS_FAMILY = "mixed_address_family"
    FAMILY_MISMATCH = "family_mismatch"
    MISSING_PORTS = "missing_ports"
    MISSING_TIMESTAMP = "missing_timestamp"
    MISSING_USEC = "missing_usec"
    BAD_TIMESTAMP = "bad_timestamp"
    NO_PAYLOAD = "no_payload"
    AMBIGUOUS_PAYLOAD = "ambiguous_payload"
    EMPTY_PAYLOAD = "empty_payload"
    DECOMPRESS_FAILED = "decompress_failed"
    DECOMPRESS_TOO_LARGE = "decompress_too_large"
    UNSUPPORTED_PAYLOAD_TYPE = "unsupported_payload_type"
    MISSING_PAYLOAD_TYPE = "missing_payload_type"
    UNKNOWN_IP_PROTO = "unknown_ip_proto"
    AUTH_MISSING = "auth_missing"
    AUTH_MISMATCH = "auth_mismatch"
    # timestamp repairs (HEP-SPEC §9, §2.4): warnings, the message is kept
    TS_RECEIVE_TIME = "ts_receive_time"
    TS_BYTE_SWAPPED = "ts_byte_swapped"
    TS_NTP_EPOCH = "ts_ntp_epoch"
    V2_TIME_BIG_ENDIAN = "v2_time_big_endian"
    # wrappers real senders add (HEP-SPEC §14): a warning, the message is kept
    GZIP_WRAPPED = "gzip_wrapped"  # the whole frame came gzip-compressed (heplify payload_zip)
    # v1/v2
    V12_TRUNCATED = "v12_truncated"
    V12_BAD_FAMILY = "v12_bad_family"
    V12_HEADER_LENGTH = "v12_header_length"
    V12_ON_STREAM = "v12_on_stream"
    V12_AUTH_REQUIRED = "v12_auth_required"
    UNKNOWN_VERSION = "unknown_version"
    # streams and files
    STREAM_TRUNCATED_AT_EOF = "stream_truncated_at_eof"
    STREAM_DESYNC = "stream_desync"
    # frame building
    UDP_PAYLOAD_TRUNCATED = "udp_payload_truncated"
    # capture-file readers (pcap / pcapng / IP / TCP)
    PCAP_TRUNCATED_RECORD = "pcap_truncated_record"
    PCAP_BAD_BLOCK = "pcap_bad_block"
    PCAP_SNAPLEN_EXCEEDED = "pcap_snaplen_exceeded"
    PCAP_CAPTURE_TRUNCATED = "pcap_capture_truncated"
    UNSUPPORTED_LINKTYPE = "unsupported_linktype"
    NOT_HEP = "not_hep"
    NO_HEP = "no_hep"  # an input that held no HEP at all: what it held instead (diagnosis)
    BAD_IP_PACKET = "bad_ip_packet"
    IP_FRAGMENT_OVERLAP = "ip_fragment_overlap"
    IP_FRAGMENT_INCOMPLETE = "ip_fragment_incomplete"
    TCP_STREAM_GAP = "tcp_stream_gap"
    TCP_MIDSTREAM_START = "tcp_midstream_start"
    # live capture (hep2pcap listen)
    NOT_ALLOWED = "not_allowed"  # a datagram or connection from outside --allow
    # SIP repairs (real senders, issue 4): warnings, every byte is still written
    SIP_SPLIT = "sip_split"  # one HEP packet held several SIP messages: one frame each
    SIP_JOINED = "sip_joined"  # one SIP message spread over several HEP packets: joined
    SIP_TRUNCATED = "sip_truncated"  # body shorter than Content-Length (or no end of headers)
    DUPLICATE = "duplicate"  # the same packet mirrored by another agent (dropped by --dedup)
    REDACTED = "redacted"  # --redact masked secrets in the payload (lengths unchanged)
    # non-SIP payloads (render.py, HEP-SPEC §15)
    RTCP_JSON_INVALID = "rtcp_json_invalid"  # a type 5 payload that is not one JSON object
    RTCP_JSON_UNMAPPED = "rtcp_json_unmapped"  # JSON keys or values outside the RTCP mapping


#: Reasons that mean "not for us, by design" rather than "broken": counted as skipped,
#: never fatal under ``--strict``.
SKIP_REASONS = frozenset(
    {
        Reason.EMPTY_PAYLOAD,
        Reason.UNSUPPORTED_PAYLOAD_TYPE,
        Reason.MISSING_PAYLOAD_TYPE,
        Reason.NOT_HEP,
        Reason.NO_HEP,
        Reason.TCP_MIDSTREAM_START,
        Reason.DUPLICATE,
        Reason.RTCP_JSON_UNMAPPED,
    }
)


class Hep2PcapError(Exception):
    """Base of every error hep2pcap raises on purpose."""


class DecodeError(Hep2PcapError):
    """Input bytes that cannot be turned into a HEP message (or a frame).

    Args:
        reason: the §11 reason code.
        offset: byte offset inside the unit being decoded where the problem was found.
        detail: human detail with numbers; never a whole payload.
    """

    def __init__(self, reason: Reason, offset: int, detail: str) -> None:
        super().__init__(f"{reason.value} at offset {offset}: {detail}")
        self.reason, self.offset, self.detail = reason, offset, detail


class InputError(Hep2PcapError):
    """An input that cannot be used at all: unreadable, unknown format."""


class StrictError(Hep2PcapError):
    """``--strict`` was given and a malformed message was found."""


class StopNow(BaseException):
    """A second stop request (SIGINT/SIGTERM): end at once, without writing what is held.

    Raised from a signal handler, so it derives from BaseException like KeyboardInterrupt.
    """
