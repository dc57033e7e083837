"""Mask secrets in one SIP message payload without changing its length.

Owns: which parts of a SIP message count as secrets (media keys in SDP, RFC 4568 SDES
``a=crypto`` keys, RFC 4566 ``k=`` lines, RFC 4567 ``a=key-mgmt:mikey`` data; RFC 3261 §22 /
RFC 7616 Digest ``response``/``nonce``/``cnonce``/``nextnonce``/``rspauth``; RFC 7617 Basic
and RFC 8898 Bearer credentials) and how they are overwritten: every secret byte except
whitespace becomes :data:`MASK`, so Content-Length, TCP stream offsets and line structure stay
right. Must never: do I/O, raise on any input, change a payload's length, or take more than
linear time. Standard library only.

Headers are the lines before the first blank line (leading CRLFs are skipped, RFC 3261 §7.5);
SDP patterns are looked for on every body line, so SDP inside a multipart body is covered too.
"""

from __future__ import annotations

import re

#: The byte that overwrites secrets.
MASK = ord("X")

#: What is masked, for the README and the --help text: name -> one-line description.
MASKED: dict[str, str] = {
    "basic-credentials": "the token of Authorization/Proxy-Authorization: Basic (RFC 7617)",
    "bearer-token": "the token of Authorization/Proxy-Authorization: Bearer (RFC 8898)",
    "digest-cnonce": "Digest cnonce= in Authorization, Proxy-Authorization, Authentication-Info",
    "digest-nonce": "Digest nonce= in Authorization/Authenticate headers, nextnonce= in "
    "Authentication-Info (and their Proxy- forms)",
    "digest-response": "Digest response= in Authorization and Proxy-Authorization",
    "digest-rspauth": "rspauth= in Authentication-Info and Proxy-Authentication-Info",
    "mikey": "the MIKEY data of SDP a=key-mgmt:mikey lines (RFC 4567)",
    "sdes-key": "the key after each inline: of SDP a=crypto lines; lifetime and MKI are kept "
    "(RFC 4568)",
    "sdp-key": "everything after k=method: of SDP k= lines (RFC 4566)",
}

#: What is deliberately NOT masked (one-line each), for the README.
NOT_MASKED: tuple[str, ...] = (
    "Digest username, realm, uri, qop, nc, algorithm and opaque: needed to debug authentication",
    "phone numbers, SIP URIs, display names, IP addresses, Call-ID and all other headers",
    "SDP a=ice-ufrag / a=ice-pwd and a=fingerprint (DTLS-SRTP certificate hash)",
    "a=key-mgmt data of protocols other than MIKEY",
    "authentication headers inside a body (message/sipfrag) or in a second message of the "
    "same payload",
    "whitespace inside a masked value (kept so folded lines and line ends stay intact)",
)

# Part of every name a secret follows, lowercased; none of them -> nothing to mask. Checked with
# bytes.lower() and `in`: ten times faster than one case-insensitive regex on a 300-byte BYE.
_TRIGGERS = (b"crypto", b"k=", b"key-mgmt", b"uthoriz", b"uthenticat")

# Every byte but SP, HT, CR, LF becomes MASK: a masked quoted value that is folded across
# lines stays a valid continuation line.
_MASK_TABLE = bytes(b if b in b" \t\r\n" else MASK for b in range(256))

_LEADING_EOL = re.compile(rb"[\r\n]*")
_BLANK_LINE = re.compile(rb"\n\r?\n")

# RFC 3261 §7.3.1: a header field with its continuation lines (SP/HT after the line end).
_AUTH_HEADER = re.compile(
    rb"^(authorization|proxy-authorization|www-authenticate|proxy-authenticate"
    rb"|authentication-info|proxy-authentication-info)[ \t]*:(.*(?:\n[ \t].*)*)",
    re.IGNORECASE | re.MULTILINE,
)

# The first token of a credentials value (the scheme) and the token after it.
_SCHEME = re.compile(rb"[ \t\r\n]*([^ \t\r\n,]*)(?:[ \t\r\n]+([^ \t\r\n,]+))?")

# One auth-param (RFC 7235 §2.1): separators, name, then optionally = and a quoted-string
# (group 2, inside the quotes; an unclosed quote runs to the end of the field) or a token
# (group 3). Every part is unambiguous, so a match never backtracks more than one step.
_AUTH_PARAM = re.compile(
    rb"[ \t\r\n,]*([^ \t\r\n=,\"]*)[ \t\r\n]*"
    rb"(?:=[ \t\r\n]*(?:\"([^\"\\]*(?:\\.[^\"\\]*)*)\"?|([^ \t\r\n,\"]*)))?",
    re.DOTALL,
)

_AUTHZ_PARAMS = {
    b"response": "digest-response",
    b"nonce": "digest-nonce",
    b"cnonce": "digest-cnonce",
}
_CHALLENGE_PARAMS = {b"nonce": "digest-nonce"}
# cnonce is echoed here (RFC 7616 §3.5): masked too, or the Authorization mask would leak.
_AUTH_INFO_PARAMS = {
    b"nextnonce": "digest-nonce",
    b"rspauth": "digest-rspauth",
    b"cnonce": "digest-cnonce",
}
_PARAMS_BY_HEADER = {
    b"authorization": _AUTHZ_PARAMS,
    b"proxy-authorization": _AUTHZ_PARAMS,
    b"www-authenticate": _CHALLENGE_PARAMS,
    b"proxy-authenticate": _CHALLENGE_PARAMS,
    b"authentication-info": _AUTH_INFO_PARAMS,
    b"proxy-authentication-info": _AUTH_INFO_PARAMS,
}
_TOKEN_SCHEMES = {b"basic": "basic-credentials", b"bearer": "bearer-token"}

# SDP lines (RFC 4566 §5: "<type>=<value>" at the start of a line), group 1 is the value.
_CRYPTO_LINE = re.compile(rb"^a=crypto:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_INLINE_KEY = re.compile(rb"inline:([^|;\s]*)", re.IGNORECASE)
_K_LINE = re.compile(rb"^k=(?:[^:\r\n]*:)?([^\r\n]*)", re.MULTILINE)
_MIKEY_LINE = re.compile(rb"^a=key-mgmt:[ \t]*mikey[ \t]+([^\r\n]*)", re.IGNORECASE | re.MULTILINE)

_Span = tuple[int, int, str]


def redact(payload: bytes) -> tuple[bytes, tuple[str, ...]]:
    """Overwrite the secrets in one SIP message with :data:`MASK` bytes.

    Args:
        payload: one SIP message as captured (any bytes are accepted).

    Returns:
        The payload with every non-whitespace byte of each secret replaced by ``MASK`` (same
        length), and the names (keys of :data:`MASKED`) of what was masked, sorted and unique.
        When nothing was masked, the very same ``payload`` object and ``()``.

    Raises:
        Nothing, for any input.
    """
    lowered = payload.lower()
    if not any(trigger in lowered for trigger in _TRIGGERS):
        return payload, ()
    leading = _LEADING_EOL.match(payload)  # always matches, maybe empty
    start = leading.end() if leading is not None else 0
    blank = _BLANK_LINE.search(payload, start)
    headers_end = blank.start() + 1 if blank is not None else len(payload)
    body_start = blank.end() if blank is not None else len(payload)

    spans = _header_spans(payload, start, headers_end)
    spans += _sdp_spans(payload, body_start)
    if not spans:
        return payload, ()
    out = bytearray(payload)
    names: set[str] = set()
    for lo, hi, name in spans:
        masked = payload[lo:hi].translate(_MASK_TABLE)
        if masked != payload[lo:hi]:
            out[lo:hi] = masked
            names.add(name)
    if not names:
        return payload, ()
    return bytes(out), tuple(sorted(names))


def _header_spans(payload: bytes, start: int, end: int) -> list[_Span]:
    spans: list[_Span] = []
    for header in _AUTH_HEADER.finditer(payload, start, end):
        params = _PARAMS_BY_HEADER[header.group(1).lower()]
        lo, hi = header.span(2)
        if params is _AUTHZ_PARAMS:
            scheme = _SCHEME.match(payload, lo, hi)
            token_name = _TOKEN_SCHEMES.get(scheme.group(1).lower()) if scheme else None
            if scheme is not None and token_name is not None:
                if scheme.group(2) is not None:
                    spans.append((*scheme.span(2), token_name))
                continue
        # Any other scheme (Digest, or none at all): scan its auth-params.
        pos = lo
        while pos < hi:
            param = _AUTH_PARAM.match(payload, pos, hi)
            if param is None or param.end() == pos:  # a stray '"' or '=': step over it
                pos += 1
                continue
            pos = param.end()
            name = params.get(param.group(1).lower())
            if name is not None:
                value = 2 if param.group(2) is not None else 3
                if param.group(value) is not None:
                    spans.append((*param.span(value), name))
    return spans


def _sdp_spans(payload: bytes, start: int) -> list[_Span]:
    spans: list[_Span] = []
    for line in _CRYPTO_LINE.finditer(payload, start):
        lo, hi = line.span(1)
        spans.extend((*key.span(1), "sdes-key") for key in _INLINE_KEY.finditer(payload, lo, hi))
    spans.extend((*k.span(1), "sdp-key") for k in _K_LINE.finditer(payload, start))
    spans.extend((*m.span(1), "mikey") for m in _MIKEY_LINE.finditer(payload, start))
    return spans
