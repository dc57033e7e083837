/* The native frame engine: the same three functions as hep2pcap/engine/reference.py, in C.
 *
 * Owns nothing but speed: given validated values (addresses of 4 or 16 bytes, ports, IP
 * ids, TCP sequence numbers, payloads whose sizes the frame planner checked) it builds the
 * frames and the pcapng EPBs (or classic pcap records) of a whole batch in one call, and
 * returns them as one bytes object. It never parses untrusted bytes; it still re-checks
 * every value it is given (type, range, size) and raises ValueError / TypeError rather than
 * write out of bounds. tests/test_engine.py proves it byte-identical to the reference.
 *
 * Layouts: Ethernet II, RFC 791 (IPv4, no options, DF, TTL 64), RFC 8200 (IPv6), RFC 768
 * (UDP), RFC 793 (TCP, PSH|ACK, window 65535), RFC 1071 checksums; pcapng EPB
 * (draft-ietf-opsawg-pcapng §4.3, little-endian) and libpcap records.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define LINKTYPE_ETHERNET 1
#define PACKET_FIELDS 12
#define MAX_OPTION_VALUE 0xFFFF

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + extra) cap *= 2;
    char *p = PyMem_Realloc(b->data, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static PyObject *buf_finish(Buf *b) {
    PyObject *r = PyBytes_FromStringAndSize(b->data ? b->data : "", b->len);
    PyMem_Free(b->data);
    b->data = NULL;
    return r;
}

static inline void put16(unsigned char *p, unsigned v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}
static inline void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}
static inline void le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* Sum of the big-endian 16-bit words of data (odd length: a zero byte appended), modulo
 * 0xFFFF, like reference.ones_sum. 64-bit words are added with end-around carry: that keeps
 * the residue modulo 2**64 - 1, a multiple of 0xFFFF. */
static uint64_t ones_sum(const unsigned char *p, Py_ssize_t n) {
    uint64_t acc = 0, w;
    while (n >= 8) {
        w = ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
            ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
            ((uint64_t)p[6] << 8) | (uint64_t)p[7];
        acc += w;
        if (acc < w) acc++;
        p += 8;
        n -= 8;
    }
    w = 0;
    for (int i = 0; i < n; i++) w |= (uint64_t)p[i] << (56 - 8 * i);
    acc += w;
    if (acc < w) acc++;
    return acc % 0xFFFF;
}

static inline unsigned checksum(uint64_t residue) {
    residue %= 0xFFFF;
    return residue ? (unsigned)(0xFFFF - residue) : 0;
}

typedef struct {
    PyObject *agent, *node, *comment;
    unsigned long long ts;
    const unsigned char *src, *dst, *payload;
    Py_ssize_t alen, plen;
    unsigned sport, dport, ip_id;
    long long seq;
    uint32_t ack;
} Pkt;

static int get_uint(PyObject *o, unsigned long long limit, unsigned long long *out, const char *what) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", what);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s out of range", what);
        return -1;
    }
    if (v > limit) {
        PyErr_Format(PyExc_ValueError, "%s out of range", what);
        return -1;
    }
    *out = v;
    return 0;
}

static int get_bytes(PyObject *o, const unsigned char **p, Py_ssize_t *n, const char *what) {
    if (!PyBytes_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes", what);
        return -1;
    }
    *p = (const unsigned char *)PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

/* seq -1: UDP, SCTP_PACKET (-2): the payload is a whole SCTP packet, else TCP. */
#define SCTP_PACKET (-2)
static inline Py_ssize_t l4_header(long long seq) {
    return seq == -1 ? 8 : seq == SCTP_PACKET ? 0 : 20;
}

/* Unpack and check one packet tuple. */
static int unpack(PyObject *t, Pkt *k) {
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != PACKET_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "a packet is a tuple of 12 fields");
        return -1;
    }
    unsigned long long v;
    Py_ssize_t dlen;
    k->agent = PyTuple_GET_ITEM(t, 0);
    k->node = PyTuple_GET_ITEM(t, 1);
    if (get_uint(PyTuple_GET_ITEM(t, 2), 0xFFFFFFFFFFFFFFFFULL, &k->ts, "ts_us") < 0) return -1;
    if (get_bytes(PyTuple_GET_ITEM(t, 3), &k->src, &k->alen, "src") < 0) return -1;
    if (get_bytes(PyTuple_GET_ITEM(t, 4), &k->dst, &dlen, "dst") < 0) return -1;
    if ((k->alen != 4 && k->alen != 16) || dlen != k->alen) {
        PyErr_SetString(PyExc_ValueError, "addresses must both be 4 or both 16 bytes");
        return -1;
    }
    if (get_uint(PyTuple_GET_ITEM(t, 5), 0xFFFF, &v, "sport") < 0) return -1;
    k->sport = (unsigned)v;
    if (get_uint(PyTuple_GET_ITEM(t, 6), 0xFFFF, &v, "dport") < 0) return -1;
    k->dport = (unsigned)v;
    if (get_uint(PyTuple_GET_ITEM(t, 7), 0xFFFF, &v, "ip_id") < 0) return -1;
    k->ip_id = (unsigned)v;
    PyObject *seq = PyTuple_GET_ITEM(t, 8);
    if (!PyLong_Check(seq)) {
        PyErr_SetString(PyExc_TypeError, "seq must be an int");
        return -1;
    }
    int overflow = 0;
    k->seq = PyLong_AsLongLongAndOverflow(seq, &overflow);
    if (k->seq == -1 && PyErr_Occurred()) return -1;
    if (overflow || k->seq < -2 || k->seq > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "seq out of range");
        return -1;
    }
    if (get_uint(PyTuple_GET_ITEM(t, 9), 0xFFFFFFFFULL, &v, "ack") < 0) return -1;
    k->ack = (uint32_t)v;
    if (get_bytes(PyTuple_GET_ITEM(t, 10), &k->payload, &k->plen, "payload") < 0) return -1;
    Py_ssize_t l4 = l4_header(k->seq) + k->plen;
    if ((k->alen == 4 ? 20 + l4 : l4) > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "payload too large for one IP packet");
        return -1;
    }
    k->comment = PyTuple_GET_ITEM(t, 11);
    return 0;
}

static Py_ssize_t frame_size(int eth, const Pkt *k) {
    return (eth ? 14 : 0) + (k->alen == 4 ? 20 : 40) + l4_header(k->seq) + k->plen;
}

static inline void put_mac(unsigned char *p, const unsigned char *ip, Py_ssize_t alen) {
    p[0] = 0x02;
    if (alen == 4) {
        p[1] = 0;
        memcpy(p + 2, ip, 4);
    } else {
        memcpy(p + 1, ip + 11, 5);
    }
}

/* Write the frame of k at p (frame_size bytes). */
static void build(unsigned char *p, int eth, const Pkt *k) {
    int udp = k->seq == -1, sctp = k->seq == SCTP_PACKET;
    unsigned proto = udp ? 17 : sctp ? 132 : 6;
    uint32_t l4len = (uint32_t)(l4_header(k->seq) + k->plen);
    uint64_t addr_sum = ones_sum(k->src, k->alen) + ones_sum(k->dst, k->alen);
    if (eth) {
        put_mac(p, k->dst, k->alen);
        put_mac(p + 6, k->src, k->alen);
        put16(p + 12, k->alen == 4 ? 0x0800 : 0x86DD);
        p += 14;
    }
    if (k->alen == 4) {
        uint32_t total = 20 + l4len;
        p[0] = 0x45;
        p[1] = 0;
        put16(p + 2, total);
        put16(p + 4, k->ip_id);
        put16(p + 6, 0x4000);
        p[8] = 64;
        p[9] = (unsigned char)proto;
        put16(p + 10, checksum(0x4500 + total + k->ip_id + 0x4000 + (64 << 8 | proto) + addr_sum));
        memcpy(p + 12, k->src, 4);
        memcpy(p + 16, k->dst, 4);
        p += 20;
    } else {
        put32(p, 0x60000000u);
        put16(p + 4, l4len);
        p[6] = (unsigned char)proto;
        p[7] = 64;
        memcpy(p + 8, k->src, 16);
        memcpy(p + 24, k->dst, 16);
        p += 40;
    }
    if (sctp) {
        memcpy(p, k->payload, (size_t)k->plen);
        return;
    }
    uint64_t psum = ones_sum(k->payload, k->plen);
    put16(p, k->sport);
    put16(p + 2, k->dport);
    if (udp) {
        unsigned c = checksum(addr_sum + 17 + l4len + k->sport + k->dport + l4len + psum);
        put16(p + 4, l4len);
        put16(p + 6, c ? c : 0xFFFF);
        p += 8;
    } else {
        uint32_t seq = (uint32_t)k->seq, ack = k->ack;
        put32(p + 4, seq);
        put32(p + 8, ack);
        p[12] = 0x50;
        p[13] = 0x18;
        put16(p + 14, 0xFFFF);
        put16(p + 16, checksum(addr_sum + 6 + k->sport + k->dport + (ack >> 16) + (ack & 0xFFFF) +
                               (0x50 << 8 | 0x18) + 0xFFFF + l4len + (seq >> 16) + (seq & 0xFFFF) +
                               psum));
        put16(p + 18, 0);
        p += 20;
    }
    memcpy(p, k->payload, (size_t)k->plen);
}

static int linktype_arg(PyObject *o, int *eth) {
    long lt = PyLong_AsLong(o);
    if (lt == -1 && PyErr_Occurred()) return -1;
    *eth = lt == LINKTYPE_ETHERNET;
    return 0;
}

static PyObject *py_frames(PyObject *self, PyObject *args) {
    PyObject *lto, *packets;
    int eth;
    if (!PyArg_ParseTuple(args, "OO:frames", &lto, &packets)) return NULL;
    if (linktype_arg(lto, &eth) < 0) return NULL;
    PyObject *seq = PySequence_Fast(packets, "packets must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (out == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        Pkt k;
        if (unpack(PySequence_Fast_GET_ITEM(seq, i), &k) < 0) goto fail;
        PyObject *f = PyBytes_FromStringAndSize(NULL, frame_size(eth, &k));
        if (f == NULL) goto fail;
        build((unsigned char *)PyBytes_AS_STRING(f), eth, &k);
        PyList_SET_ITEM(out, i, f);
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_XDECREF(out);
    Py_DECREF(seq);
    return NULL;
}

/* The comment's UTF-8 bytes as reference.encode_epb takes them: encoded with "replace",
 * and clipped on a character boundary by pcapng._utf8 past 65535 bytes (rare: delegated).
 * Returns a new reference, or NULL with an error. */
static PyObject *comment_bytes(PyObject *comment) {
    if (!PyUnicode_Check(comment)) {
        PyErr_SetString(PyExc_TypeError, "a comment must be str or None");
        return NULL;
    }
    PyObject *text = PyUnicode_AsEncodedString(comment, "utf-8", "replace");
    if (text == NULL) return NULL;
    if (PyBytes_GET_SIZE(text) <= MAX_OPTION_VALUE) return text;
    Py_DECREF(text);
    PyObject *mod = PyImport_ImportModule("hep2pcap.pcapng");
    if (mod == NULL) return NULL;
    text = PyObject_CallMethod(mod, "_utf8", "O", comment);
    Py_DECREF(mod);
    if (text != NULL && (!PyBytes_Check(text) || PyBytes_GET_SIZE(text) > MAX_OPTION_VALUE)) {
        Py_DECREF(text);
        PyErr_SetString(PyExc_ValueError, "comment too long");
        return NULL;
    }
    return text;
}

static PyObject *py_encode_epbs(PyObject *self, PyObject *args) {
    PyObject *lto, *interfaces, *packets;
    int comments, eth;
    long shared;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "OpO!lOn:encode_epbs", &lto, &comments, &PyDict_Type, &interfaces,
                          &shared, &packets, &start))
        return NULL;
    if (linktype_arg(lto, &eth) < 0) return NULL;
    PyObject *seq = PySequence_Fast(packets, "packets must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i;
    if (start < 0) start = 0;
    if (start > n) start = n;
    Buf b = {NULL, 0, 0};
    for (i = start; i < n; i++) {
        Pkt k;
        if (unpack(PySequence_Fast_GET_ITEM(seq, i), &k) < 0) goto fail;
        PyObject *io = PyDict_GetItemWithError(interfaces, k.agent);
        unsigned long long iface;
        if (io == NULL) {
            if (PyErr_Occurred()) goto fail;
            if (shared < 0) break;
            iface = (unsigned long long)shared;
        } else if (get_uint(io, 0xFFFFFFFFULL, &iface, "interface") < 0) {
            goto fail;
        }
        PyObject *text = NULL;
        Py_ssize_t tlen = 0;
        if (comments && k.comment != Py_None) {
            int truth = PyObject_IsTrue(k.comment);
            if (truth < 0) goto fail;
            if (truth) {
                text = comment_bytes(k.comment);
                if (text == NULL) goto fail;
                tlen = PyBytes_GET_SIZE(text);
            }
        }
        Py_ssize_t size = frame_size(eth, &k);
        Py_ssize_t pad = (4 - (size & 3)) & 3;
        Py_ssize_t opts = text ? 4 + tlen + ((4 - (tlen & 3)) & 3) + 4 : 0;
        Py_ssize_t total = 28 + size + pad + opts + 4;
        if (buf_reserve(&b, total) < 0) {
            Py_XDECREF(text);
            goto fail;
        }
        unsigned char *p = (unsigned char *)b.data + b.len;
        memset(p, 0, (size_t)total);
        le32(p, 6);
        le32(p + 4, (uint32_t)total);
        le32(p + 8, (uint32_t)iface);
        le32(p + 12, (uint32_t)(k.ts >> 32));
        le32(p + 16, (uint32_t)k.ts);
        le32(p + 20, (uint32_t)size);
        le32(p + 24, (uint32_t)size);
        build(p + 28, eth, &k);
        unsigned char *q = p + 28 + size + pad;
        if (text) {
            q[0] = 1; /* opt_comment, little-endian code and length */
            q[1] = 0;
            q[2] = (unsigned char)tlen;
            q[3] = (unsigned char)(tlen >> 8);
            memcpy(q + 4, PyBytes_AS_STRING(text), (size_t)tlen);
            q += opts; /* padding and opt_endofopt are the zeros memset wrote */
            Py_DECREF(text);
        }
        le32(q, (uint32_t)total);
        b.len += total;
    }
    Py_DECREF(seq);
    PyObject *data = buf_finish(&b);
    if (data == NULL) return NULL;
    return Py_BuildValue("(Nn)", data, i);
fail:
    PyMem_Free(b.data);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *py_encode_records(PyObject *self, PyObject *args) {
    PyObject *lto, *packets;
    int eth;
    if (!PyArg_ParseTuple(args, "OO:encode_records", &lto, &packets)) return NULL;
    if (linktype_arg(lto, &eth) < 0) return NULL;
    PyObject *seq = PySequence_Fast(packets, "packets must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Buf b = {NULL, 0, 0};
    for (Py_ssize_t i = 0; i < n; i++) {
        Pkt k;
        if (unpack(PySequence_Fast_GET_ITEM(seq, i), &k) < 0) goto fail;
        unsigned long long sec = k.ts / 1000000;
        if (sec > 0xFFFFFFFFULL) {
            PyErr_SetString(PyExc_ValueError, "time out of range for pcap");
            goto fail;
        }
        Py_ssize_t size = frame_size(eth, &k);
        if (buf_reserve(&b, 16 + size) < 0) goto fail;
        unsigned char *p = (unsigned char *)b.data + b.len;
        le32(p, (uint32_t)sec);
        le32(p + 4, (uint32_t)(k.ts % 1000000));
        le32(p + 8, (uint32_t)size);
        le32(p + 12, (uint32_t)size);
        build(p + 16, eth, &k);
        b.len += 16 + size;
    }
    Py_DECREF(seq);
    return buf_finish(&b);
fail:
    PyMem_Free(b.data);
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef methods[] = {
    {"frames", py_frames, METH_VARARGS, "frames(linktype, packets) -> list of frames"},
    {"encode_epbs", py_encode_epbs, METH_VARARGS,
     "encode_epbs(linktype, comments, interfaces, shared, packets, start) -> (blocks, stop)"},
    {"encode_records", py_encode_records, METH_VARARGS,
     "encode_records(linktype, packets) -> classic pcap records"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "hep2pcap.engine._native",
    "The native frame engine (see engine/reference.py for the contract).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddStringConstant(m, "NAME", "native") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
