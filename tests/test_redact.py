"""Unit and property tests for hep2pcap.redact: secrets in SIP/SDP are masked in place.

Each message is a template: filled with the real secrets it is the captured input, filled with
the masked secrets it is the expected output, so every byte that is not a secret is compared too.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hep2pcap.redact import MASK, MASKED, NOT_MASKED, redact


def _mask(secret: str) -> str:
    return "".join(c if c in " \t\r\n" else chr(MASK) for c in secret)


class Case:
    """A SIP message template, its secrets and the names redact() must report."""

    def __init__(self, template: str, secrets: dict[str, str], names: tuple[str, ...]) -> None:
        self.template, self.secrets, self.names = template, secrets, names

    def original(self, eol: str = "\r\n") -> bytes:
        return self._fill(self.secrets, eol)

    def expected(self, eol: str = "\r\n") -> bytes:
        return self._fill({k: _mask(v) for k, v in self.secrets.items()}, eol)

    def _fill(self, values: dict[str, str], eol: str) -> bytes:
        text = self.template.format(**values)
        length = len(text.partition("\n\n")[2].replace("\n", eol).encode())
        text = text.replace("Content-Length: CL", f"Content-Length: {length}")
        return text.replace("\n", eol).encode()


INVITE_SDES = Case(
    """\
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.example.com;transport=tls>
Content-Type: application/sdp
Content-Length: CL

v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
k=base64:{K}
m=audio 49170 RTP/SAVP 0 8 101
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SDES1}|2^20|1:32
a=crypto:2 F8_128_HMAC_SHA1_80 inline:{SDES2}|2^20|1:4;inline:{SDES3}|2^20|2:4 FEC_ORDER=FEC_SRTP
a=key-mgmt:mikey {MIKEY}
a=sendrecv
""",
    {
        "K": "c2VjcmV0LW1lZGlhLWtleQ==",
        "SDES1": "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "SDES2": "MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm",
        "SDES3": "QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5",
        "MIKEY": "AQAFgM0XflABAAAAAAAAAAAAAAsAyONQ6gAAAAAJAAAAFgEBBAUBAB4=",
    },
    ("mikey", "sdes-key", "sdp-key"),
)

# RFC 3665 §2.1 style REGISTER answering a 401, Authorization folded over three lines,
# quoted and unquoted params, an escaped quote and a fake "nonce=" inside a quoted realm.
REGISTER_DIGEST = Case(
    """\
REGISTER sip:registrar.biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: Bob <sip:bob@biloxi.example.com>;tag=456248
Call-ID: 843817637684230@998sdasdh09
CSeq: 1827 REGISTER
Contact: <sip:bob@192.0.2.4>
Authorization: Digest username="bob", realm="biloxi \\"x\\", nonce=visible",
 nonce="{NONCE}", uri="sip:biloxi.example.com",
\tresponse = "{RESPONSE}", algorithm=MD5, cnonce={CNONCE}, qop=auth, nc=00000001,
 opaque="5ccc069c403ebaf9f0171e9517f40e41"
Expires: 7200
Content-Length: CL

""",
    {
        "NONCE": "ea9c8e88df84f1cec4341ae6cbe5a359",
        "RESPONSE": "dfe56131d1958046689d83306477ecc",
        "CNONCE": "0a4f113b",
    },
    ("digest-cnonce", "digest-nonce", "digest-response"),
)

CHALLENGE_401 = Case(
    """\
SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7;received=192.0.2.4
To: Bob <sip:bob@biloxi.example.com>;tag=2493k59kd
From: Bob <sip:bob@biloxi.example.com>;tag=456248
Call-ID: 843817637684230@998sdasdh09
CSeq: 1826 REGISTER
WWW-Authenticate: Digest realm="biloxi.example.com", qop="auth",
 nonce="{NONCE}", opaque="5ccc069c403ebaf9f0171e9517f40e41", stale=FALSE, algorithm=MD5
Content-Length: CL

""",
    {"NONCE": "ea9c8e88df84f1cec4341ae6cbe5a359"},
    ("digest-nonce",),
)

PROXY_AUTH_INVITE = Case(
    """\
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 2 INVITE
proxy-authorization: digest username="alice", realm="atlanta.example.com", nonce={NONCE},
  uri="sip:bob@biloxi.example.com", RESPONSE="{RESPONSE}", algorithm=MD5, qop=auth,
  CNonce="{CNONCE}", nc=00000001
Proxy-Authenticate : Digest realm="atlanta.example.com", nonce="{NONCE2}", qop="auth"
Content-Length: CL

""",
    {
        "NONCE": "wf84f1ceczx41ae6cbe5aea9c8e88d359",
        "RESPONSE": "42ce3cef44b22f50c6a6071bc8",
        "CNONCE": "a5b2f7e1",
        "NONCE2": "cbe5aea9c8e88d359wf84f1ceczx41ae6",
    },
    ("digest-cnonce", "digest-nonce", "digest-response"),
)

AUTH_INFO_200 = Case(
    """\
SIP/2.0 200 OK
Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashd92
CSeq: 1827 REGISTER
Authentication-Info: nextnonce="{NEXT}", qop=auth, rspauth="{RSPAUTH}",
 cnonce="{CNONCE}", nc=00000001
Proxy-Authentication-Info: rspauth={RSPAUTH2}
Content-Length: CL

""",
    {
        "NEXT": "47364c23432d2e131a5fb210812c",
        "RSPAUTH": "6629fae49393a05397450978507c4ef1",
        "CNONCE": "0a4f113b",
        "RSPAUTH2": "d0d3d5e7b3a2f1c0",
    },
    ("digest-cnonce", "digest-nonce", "digest-rspauth"),
)

BASIC_AND_BEARER = Case(
    """\
MESSAGE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bK1
CSeq: 1 MESSAGE
Authorization: Basic {BASIC}
Proxy-Authorization: Bearer {BEARER}
Content-Type: text/plain
Content-Length: CL

Authorization: Basic not-a-header-in-the-body
""",
    {
        "BASIC": "Ym9iOnMzY3IzdC1wYXNzd29yZA==",
        "BEARER": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.sG1x-sig_nature",
    },
    ("basic-credentials", "bearer-token"),
)

CASES = {
    "invite-sdes": INVITE_SDES,
    "register-digest": REGISTER_DIGEST,
    "challenge-401": CHALLENGE_401,
    "proxy-auth": PROXY_AUTH_INVITE,
    "auth-info": AUTH_INFO_200,
    "basic-bearer": BASIC_AND_BEARER,
}

BYE = (
    b"BYE sip:alice@pc33.atlanta.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10\r\n"
    b"To: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"From: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710\r\nCSeq: 231 BYE\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize("eol", ["\r\n", "\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_masks_secrets_and_keeps_everything_else(case: Case, eol: str) -> None:
    original, expected = case.original(eol), case.expected(eol)
    out, names = redact(original)
    assert len(out) == len(original)
    assert out == expected
    assert names == case.names
    for secret in case.secrets.values():
        assert secret.encode() not in out


def test_sdes_keeps_lifetime_mki_and_session_params() -> None:
    out, _ = redact(INVITE_SDES.original())
    assert b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b"X" * 40 + b"|2^20|1:32\r\n" in out
    assert b"|2^20|1:4;inline:" + b"X" * 40 + b"|2^20|2:4 FEC_ORDER=FEC_SRTP\r\n" in out
    assert b"\r\nk=base64:XXXXXXXXXXXXXXXXXXXXXXXX\r\n" in out


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        (b"k=clear:secret", b"k=clear:XXXXXX"),
        (b"k=uri:https://kms.example.com/k?x=1", b"k=uri:XXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
        (b"k=rawsecret", b"k=XXXXXXXXX"),
        (
            b"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:abc",
            b"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:XXX",
        ),
        (b"a=key-mgmt:mikey  AQE=", b"a=key-mgmt:mikey  XXXX"),
    ],
)
def test_sdp_line_forms(line: bytes, masked: bytes) -> None:
    msg = b"INVITE sip:b@example.com SIP/2.0\r\nContent-Length: 99\r\n\r\nv=0\r\n"
    out, names = redact(msg + line + b"\r\n")
    assert out == msg + masked + b"\r\n"
    assert len(names) == 1


def test_sdp_in_multipart_body() -> None:
    msg = (
        b"INVITE sip:b@example.com SIP/2.0\r\nContent-Type: multipart/mixed;boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:S3cr3tKeyS3cr3tKey|2^31\r\n--B--\r\n"
    )
    out, names = redact(msg)
    assert out == msg.replace(b"S3cr3tKeyS3cr3tKey", b"X" * 18)
    assert names == ("sdes-key",)


def test_nothing_to_mask_returns_the_same_object() -> None:
    assert redact(BYE)[0] is BYE
    assert redact(BYE) == (BYE, ())
    empty = b""
    assert redact(empty)[0] is empty


@pytest.mark.parametrize(
    "msg",
    [
        # triggers the fast path but holds no secret
        b'OPTIONS sip:a@b SIP/2.0\r\nX-Mask: k=1\r\nAuthorization: Digest username="bob"\r\n\r\n',
        b'REGISTER sip:a SIP/2.0\r\nAuthorization: Digest nonce="", response=\r\n\r\n',
        b"REGISTER sip:a SIP/2.0\r\nAuthorization: Basic\r\nWWW-Authenticate: Bearer\r\n\r\n",
        # SDP patterns are only looked for in the body, header patterns only in the headers
        b"INVITE sip:a SIP/2.0\r\nk=notabody\r\n\r\nAuthorization: Basic Zm9vOmJhcg==\r\n",
        b"INVITE sip:a SIP/2.0\r\nSubject: a=crypto:1 X inline:abc\r\n\r\nv=0\r\n",
    ],
)
def test_no_secret_returns_the_same_object(msg: bytes) -> None:
    out, names = redact(msg)
    assert out is msg
    assert names == ()


def test_leading_crlf_before_the_start_line() -> None:
    msg = b"\r\n\r\nREGISTER sip:a SIP/2.0\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n"
    assert redact(msg) == (msg.replace(b"Zm9vOmJhcg==", b"X" * 12), ("basic-credentials",))


def test_unclosed_quote_masks_to_the_end_of_the_field_only() -> None:
    msg = b'SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest nonce="abc, x=1\r\nCSeq: 1\r\n\r\n'
    out, names = redact(msg)
    assert out == msg.replace(b"abc, x=1", b"XXXX XXX")
    assert names == ("digest-nonce",)


def test_headers_without_a_body() -> None:
    msg = b"REGISTER sip:a SIP/2.0\nAuthorization: Digest response=0123abcd"
    assert redact(msg) == (msg.replace(b"0123abcd", b"X" * 8), ("digest-response",))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_redacting_twice_changes_nothing(case: Case) -> None:
    out, _ = redact(case.original())
    assert redact(out)[0] is out


def test_masked_names_are_documented() -> None:
    assert sorted(MASKED) == list(MASKED)
    every = {name for case in CASES.values() for name in case.names}
    assert every == set(MASKED)
    assert all(isinstance(line, str) and line for line in NOT_MASKED)


@pytest.mark.parametrize(
    "unit",
    [
        b"Authorization: Digest " + b'"\\' * 3,
        b'Authorization: Digest nonce="' + b"\\" * 5,
        b"Authorization: Digest nonce=" + b"=" * 5,
        b"Authorization: Digest , " * 2 + b"\n ",
        b"a=crypto:1 inline:inline:" * 2,
        b"k=" * 5,
        b"\n\n",
    ],
)
def test_pathological_input_is_linear(unit: bytes) -> None:
    # 1 MiB of repeated structure: a quadratic scan would take minutes.
    size = 1 << 20
    payload = b"INVITE sip:a SIP/2.0\r\n" + unit * (size // len(unit))
    started = time.perf_counter()
    out, _ = redact(payload)
    assert len(out) == len(payload)
    assert time.perf_counter() - started < 10


def _check_invariants(data: bytes) -> None:
    out, names = redact(data)
    assert len(out) == len(data)
    assert list(names) == sorted(set(names))
    assert set(names) <= set(MASKED)
    assert (out is data) == (names == ())
    for before, after in zip(data, out, strict=True):
        assert before == after or (after == MASK and before not in b" \t\r\n")


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise_and_keep_length(data: bytes) -> None:
    _check_invariants(data)


_FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r\n ",
    b"\n\t",
    b"\r\n\r\n",
    b" ",
    b'"',
    b"\\",
    b",",
    b"=",
    b":",
    b"|",
    b";",
    b"inline:",
    b"nonce=",
    b"cnonce=",
    b"response=",
    b"Authorization: Digest ",
    b"Authorization: Basic ",
    b"Authorization: Bearer ",
    b"WWW-Authenticate:",
    b"Authentication-Info:",
    b"\r\na=crypto:",
    b"\r\nk=",
    b"\r\na=key-mgmt:mikey ",
    b"\xff",
    b"\x00",
]


@given(
    st.sampled_from(sorted(CASES)),
    st.lists(
        st.tuples(st.floats(0, 1), st.sampled_from(_FRAGMENTS) | st.binary(max_size=8)),
        max_size=12,
    ),
)
def test_sip_like_text_with_insertions(name: str, inserts: list[tuple[float, bytes]]) -> None:
    data = CASES[name].original()
    for where, fragment in inserts:
        at = int(where * len(data))
        data = data[:at] + fragment + data[at:]
    _check_invariants(data)
    out, _ = redact(data)
    assert redact(out)[0] is out


def test_names_are_case_insensitive() -> None:
    msg = (
        b"REGISTER sip:a SIP/2.0\r\nAUTHORIZATION: BASIC Zm9vOmJhcg==\r\n"
        b"www-authenticate: DIGEST NONCE=abc123\r\n\r\nv=0\r\nA=CRYPTO:1 X INLINE:k3y|2^20\r\n"
    )
    out, names = redact(msg)
    expected = msg.replace(b"Zm9vOmJhcg==", b"X" * 12).replace(b"abc123", b"X" * 6)
    assert out == expected.replace(b"k3y", b"XXX")
    assert names == ("basic-credentials", "digest-nonce", "sdes-key")
