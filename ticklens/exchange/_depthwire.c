/* The fast path of a raw Binance depthUpdate message, in one pass over its bytes.
 *
 * `scan(raw: bytes)` accepts exactly the layout Binance writes (USD-M and spot, with or
 * without the combined-stream envelope):
 *
 *   [{"stream":"<name>","data":]{"e":"depthUpdate","E":<int>[,"T":<int>],"s":"<symbol>",
 *   "U":<int>,"u":<int>[,"pu":<int>],"b":[["<price>","<qty>"],…],"a":[…]}[}] <whitespace>
 *
 * and returns (symbol, E, T or None, U, u, pu or None, bid prices, bid quantities, ask prices,
 * ask quantities): the sides as columns of strings, a DepthUpdate's own form (four lists the
 * collector tracks, not one per level, and nothing to rebuild when it is pickled). The grammar of every part is
 * the Python parser's (`binance_book.py`): integers 0..2^63-1 without sign or leading
 * zeros; prices `[1-9][0-9]{0,23}.[0-9]{1,24}` or `0.` and a fraction holding a non-zero
 * digit; quantities `(0|[1-9][0-9]{0,23}).[0-9]{1,24}`; symbols `[A-Za-z0-9_]{1,40}`; at
 * most 20,000 levels a side. Anything else, however small the difference (another field
 * order, spaces, escapes, an unknown field), gives None: the caller then takes the general
 * path, which stays the reference and says why a message is rejected. The checks that
 * need no byte scan (U <= u, E > 0, what a market requires) are the caller's.
 *
 * Why C: on ~66 levels a message this replaces orjson plus one regex pass over the levels
 * (~19 us a message in Python) by one pass that builds only the strings the book keeps.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DIGITS 24
#define MAX_SYMBOL 40
#define MAX_STREAM 80
#define MAX_LEVELS 20000

typedef struct {
    const char *p;
    const char *end;
} Cursor;

static int lit(Cursor *c, const char *s, size_t n) {
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

#define LIT(c, s) lit((c), (s), sizeof(s) - 1)
#define DIGIT(ch) ((unsigned char)((ch) - '0') <= 9)

/* A JSON integer in 0..2^63-1: no sign, no leading zero, no fraction or exponent. */
static int int63(Cursor *c, long long *out) {
    const char *p = c->p, *end = c->end;
    if (p >= end || !DIGIT(*p))
        return 0;
    if (*p == '0') {
        p++;
        if (p < end && (DIGIT(*p) || *p == '.' || *p == 'e' || *p == 'E'))
            return 0;
        *out = 0;
        c->p = p;
        return 1;
    }
    uint64_t v = 0;
    int n = 0;
    while (p < end && DIGIT(*p)) {
        if (++n > 19)
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (v > (uint64_t)INT64_MAX || (p < end && (*p == '.' || *p == 'e' || *p == 'E')))
        return 0;
    *out = (long long)v;
    c->p = p;
    return 1;
}

/* The length of a decimal string at p (a price when `price`), 0 if it is not one. */
static Py_ssize_t decimal(const char *p, const char *end, int price) {
    const char *s = p;
    int zero_int = 0, nonzero = 0, n = 0;
    if (p >= end)
        return 0;
    if (*p == '0') {
        zero_int = 1;
        p++;
    } else if (DIGIT(*p)) {
        while (p < end && DIGIT(*p)) {
            if (++n > MAX_DIGITS)
                return 0;
            p++;
        }
    } else {
        return 0;
    }
    if (p >= end || *p != '.')
        return 0;
    p++;
    n = 0;
    while (p < end && DIGIT(*p)) {
        if (++n > MAX_DIGITS)
            return 0;
        nonzero |= *p != '0';
        p++;
    }
    if (n == 0 || (price && zero_int && !nonzero))
        return 0;
    return p - s;
}

/* `lead` then a decimal string (a price when `price`): its start and length, the cursor past it. */
static int quoted(Cursor *c, const char *lead, int price, const char **start, Py_ssize_t *n) {
    if (!lit(c, lead, strlen(lead)))
        return 0;
    *start = c->p;
    if ((*n = decimal(c->p, c->end, price)) == 0)
        return 0;
    c->p += *n;
    return 1;
}

static PyObject *ascii(const char *p, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL)
        memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    return s;
}

/* One side `[["p","q"],…]` into two new lists, its prices and its quantities (columns: two
 * objects the collector tracks a side, not one per level); 0 with no error set if it does not
 * match, -1 on an error. */
static int side(Cursor *c, PyObject **prices, PyObject **qtys) {
    *prices = *qtys = NULL;
    if (!LIT(c, "["))
        return 0;
    PyObject *px = PyList_New(0), *qty = px == NULL ? NULL : PyList_New(0);
    if (qty == NULL) {
        Py_XDECREF(px);
        return -1;
    }
    if (LIT(c, "]"))
        goto done;
    for (;;) {
        Py_ssize_t np, nq;
        const char *pp, *qp;
        if (!quoted(c, "[\"", 1, &pp, &np) || !quoted(c, "\",\"", 0, &qp, &nq) || !LIT(c, "\"]"))
            goto fail;
        if (PyList_GET_SIZE(px) >= MAX_LEVELS)
            goto fail;
        PyObject *ps = ascii(pp, np);
        if (ps == NULL)
            goto error;
        int rc = PyList_Append(px, ps);
        Py_DECREF(ps);
        PyObject *qs = rc < 0 ? NULL : ascii(qp, nq);
        if (qs == NULL)
            goto error;
        rc = PyList_Append(qty, qs);
        Py_DECREF(qs);
        if (rc < 0)
            goto error;
        if (LIT(c, "]"))
            goto done;
        if (!LIT(c, ","))
            goto fail;
    }
done:
    *prices = px;
    *qtys = qty;
    return 1;
fail:
    Py_DECREF(px);
    Py_DECREF(qty);
    return 0;
error:
    Py_DECREF(px);
    Py_DECREF(qty);
    return -1;
}

/* A symbol `[A-Za-z0-9_]{1,40}` at the cursor: its length (the cursor past it), 0 if none. */
static Py_ssize_t symbol_run(Cursor *c) {
    const char *s = c->p;
    while (c->p < c->end && (DIGIT(*c->p) || (*c->p >= 'A' && *c->p <= 'Z') || (*c->p >= 'a' && *c->p <= 'z') || *c->p == '_'))
        c->p++;
    Py_ssize_t n = c->p - s;
    return n <= MAX_SYMBOL ? n : 0;
}

static int json_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }

/* The combined stream's `{"stream":"<name>","data":` if it is there (`*enveloped` says so); 0 if
 * it starts but does not match. */
static int envelope(Cursor *c, int *enveloped) {
    *enveloped = 0;
    if (!LIT(c, "{\"stream\":\""))
        return 1;
    const char *s = c->p;
    while (c->p < c->end && *c->p != '"' && *c->p != '\\' && (unsigned char)*c->p >= 0x20 && (unsigned char)*c->p < 0x7f)
        c->p++;
    if (c->p == s || c->p - s > MAX_STREAM || !LIT(c, "\",\"data\":"))
        return 0;
    *enveloped = 1;
    return 1;
}

static PyObject *scan(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg))
        Py_RETURN_NONE;
    Cursor c = {PyBytes_AS_STRING(arg), PyBytes_AS_STRING(arg) + PyBytes_GET_SIZE(arg)};
    int enveloped = 0;
    if (!envelope(&c, &enveloped))
        Py_RETURN_NONE;
    long long ev_ms, txn = -1, first, final, prev = -1;
    if (!LIT(&c, "{\"e\":\"depthUpdate\",\"E\":") || !int63(&c, &ev_ms))
        Py_RETURN_NONE;
    if (LIT(&c, ",\"T\":") && !int63(&c, &txn))
        Py_RETURN_NONE;
    if (!LIT(&c, ",\"s\":\""))
        Py_RETURN_NONE;
    const char *sym = c.p;
    Py_ssize_t nsym = symbol_run(&c);
    if (nsym == 0 || !LIT(&c, "\",\"U\":") || !int63(&c, &first) || !LIT(&c, ",\"u\":") ||
        !int63(&c, &final))
        Py_RETURN_NONE;
    if (LIT(&c, ",\"pu\":") && !int63(&c, &prev))
        Py_RETURN_NONE;
    if (!LIT(&c, ",\"b\":"))
        Py_RETURN_NONE;
    PyObject *bp, *bq, *ap = NULL, *aq = NULL;
    int rc = side(&c, &bp, &bq);
    if (rc <= 0)
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    if (!LIT(&c, ",\"a\":") || (rc = side(&c, &ap, &aq)) <= 0)
        goto none;
    if (!LIT(&c, "}") || (enveloped && !LIT(&c, "}")))
        goto none;
    while (c.p < c.end && json_space(*c.p))
        c.p++;
    if (c.p != c.end)
        goto none;
    PyObject *symbol = ascii(sym, nsym);
    if (symbol == NULL)
        goto error;
    PyObject *t = txn < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(txn);
    PyObject *pu = prev < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(prev);
    PyObject *out = NULL;
    if (t != NULL && pu != NULL)
        out = Py_BuildValue("(NLNLLNNNNN)", symbol, ev_ms, t, first, final, pu, bp, bq, ap, aq);
    else {
        Py_DECREF(symbol);
        Py_XDECREF(t);
        Py_XDECREF(pu);
        goto error;
    }
    return out; /* Py_BuildValue's N took the references, also on failure */
none:
    Py_DECREF(bp);
    Py_DECREF(bq);
    Py_XDECREF(ap);
    Py_XDECREF(aq);
    if (rc < 0 || PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
error:
    Py_DECREF(bp);
    Py_DECREF(bq);
    Py_XDECREF(ap);
    Py_XDECREF(aq);
    return NULL;
}

/* --- bookTicker --------------------------------------------------------------------------- */

/* The length of a quote's decimal string at p: (0|[1-9][0-9]{0,23})(\.[0-9]{1,24})?, 0 if none. */
static Py_ssize_t quote_decimal(const char *p, const char *end) {
    const char *s = p;
    int n = 0;
    if (p >= end || !DIGIT(*p))
        return 0;
    if (*p == '0')
        p++;
    else
        while (p < end && DIGIT(*p)) {
            if (++n > MAX_DIGITS)
                return 0;
            p++;
        }
    if (p < end && *p == '.') {
        p++;
        n = 0;
        while (p < end && DIGIT(*p)) {
            if (++n > MAX_DIGITS)
                return 0;
            p++;
        }
        if (n == 0)
            return 0;
    }
    return p - s;
}

/* `lead`, a quote's decimal string and its closing quote: the string, or NULL (*err on an error). */
static PyObject *quote_field(Cursor *c, const char *lead, int *err) {
    if (!lit(c, lead, strlen(lead)))
        return NULL;
    Py_ssize_t n = quote_decimal(c->p, c->end);
    if (n == 0 || c->p + n >= c->end || c->p[n] != '"')
        return NULL;
    PyObject *s = ascii(c->p, n);
    if (s == NULL)
        *err = 1;
    c->p += n + 1;
    return s;
}

/* scan_quote(raw: bytes) -> (u, symbol, b, B, a, A, T, E) | None: a USD-M bookTicker in Binance's
 * exact layout (the regex `_QUOTE_WIRE` in binance_book.py: the same grammar, whole message, no
 * trailing bytes), or None (take the general path). T and E are positive. */
static PyObject *scan_quote(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg))
        Py_RETURN_NONE;
    Cursor c = {PyBytes_AS_STRING(arg), PyBytes_AS_STRING(arg) + PyBytes_GET_SIZE(arg)};
    int enveloped = 0, err = 0;
    if (!envelope(&c, &enveloped))
        Py_RETURN_NONE;
    long long u, txn, ev_ms;
    if (!LIT(&c, "{\"e\":\"bookTicker\",\"u\":") || !int63(&c, &u) || !LIT(&c, ",\"s\":\""))
        Py_RETURN_NONE;
    const char *sym = c.p;
    Py_ssize_t nsym = symbol_run(&c);
    if (nsym == 0 || !LIT(&c, "\","))
        Py_RETURN_NONE;
    PyObject *f[4] = {NULL, NULL, NULL, NULL};
    static const char *const leads[4] = {"\"b\":\"", ",\"B\":\"", ",\"a\":\"", ",\"A\":\""};
    for (int i = 0; i < 4; i++)
        if ((f[i] = quote_field(&c, leads[i], &err)) == NULL)
            goto none;
    if (!LIT(&c, ",\"T\":") || !int63(&c, &txn) || txn == 0 || !LIT(&c, ",\"E\":") || !int63(&c, &ev_ms) ||
        ev_ms == 0 || !LIT(&c, "}") || (enveloped && !LIT(&c, "}")) || c.p != c.end)
        goto none;
    PyObject *symbol = ascii(sym, nsym);
    if (symbol == NULL) {
        err = 1;
        goto none;
    }
    return Py_BuildValue("(LNNNNNLL)", u, symbol, f[0], f[1], f[2], f[3], txn, ev_ms);
none:
    for (int i = 0; i < 4; i++)
        Py_XDECREF(f[i]);
    if (err)
        return NULL;
    Py_RETURN_NONE;
}

/* --- trade and aggTrade ------------------------------------------------------------------- */

/* The keys a trade scan reads, as bits (a key seen twice gives None: orjson would keep the last). */
enum { K_E = 1, K_EV = 2, K_T = 4, K_S = 8, K_ID = 16, K_F = 32, K_L = 64, K_P = 128, K_Q = 256, K_M = 512 };

/* JSON's grammar for the values and keys the scan skips, on printable ASCII only: a byte the
 * general path would reject as invalid JSON (or must check as UTF-8) gives 0, so it decides. */
static int printable(char ch) { return (unsigned char)ch >= 0x20 && (unsigned char)ch < 0x7f; }

static int hex(char ch) { return DIGIT(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }

/* Past one JSON string: escapes \" \\ \/ \b \f \n \r \t \uXXXX. */
static int skip_string(Cursor *c) {
    const char *p = c->p, *end = c->end;
    if (p >= end || *p != '"')
        return 0;
    for (p++; p < end && *p != '"'; p++) {
        if (!printable(*p))
            return 0;
        if (*p != '\\')
            continue;
        if (++p >= end)
            return 0;
        if (*p == 'u') {
            if (end - p < 5 || !hex(p[1]) || !hex(p[2]) || !hex(p[3]) || !hex(p[4]))
                return 0;
            p += 4;
        } else if (*p == '\0' || !strchr("\"\\/bfnrt", *p)) {
            return 0;
        }
    }
    if (p >= end)
        return 0;
    c->p = p + 1;
    return 1;
}

/* Past one JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int skip_number(Cursor *c) {
    const char *p = c->p, *end = c->end;
    if (p < end && *p == '-')
        p++;
    if (p >= end || !DIGIT(*p))
        return 0;
    if (*p == '0')
        p++;
    else
        while (p < end && DIGIT(*p))
            p++;
    if (p < end && *p == '.') {
        if (++p >= end || !DIGIT(*p))
            return 0;
        while (p < end && DIGIT(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !DIGIT(*p))
            return 0;
        while (p < end && DIGIT(*p))
            p++;
    }
    c->p = p;
    return 1;
}

/* Past one JSON scalar of a field the scan does not read (a later field Binance adds): a string,
 * a number, true, false or null. Objects and arrays give 0 (take the general path). */
static int skip_scalar(Cursor *c) {
    if (c->p >= c->end)
        return 0;
    if (*c->p == '"')
        return skip_string(c);
    if (*c->p == '-' || DIGIT(*c->p))
        return skip_number(c);
    return LIT(c, "true") || LIT(c, "false") || LIT(c, "null");
}

/* A trade's price or quantity: "[0-9]{1,40}(.[0-9]*)?" within 40 characters (the general path's
 * `_DECIMAL` without an exponent, which is left to it), as the double float() gives. */
static int trade_number(Cursor *c, double *out) {
    if (!LIT(c, "\""))
        return 0;
    const char *s = c->p, *p = c->p, *end = c->end;
    while (p < end && DIGIT(*p))
        p++;
    if (p == s)
        return 0;
    if (p < end && *p == '.')
        for (p++; p < end && DIGIT(*p); p++)
            ;
    Py_ssize_t n = p - s;
    if (n > 40 || p >= end || *p != '"')
        return 0;
    char buf[48];
    memcpy(buf, s, (size_t)n);
    buf[n] = '\0';
    char *stop = NULL;
    double v = PyOS_string_to_double(buf, &stop, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (stop != buf + n)
        return 0;
    *out = v;
    c->p = p + 1;
    return 1;
}

/* scan_trade(raw: bytes) -> (symbol, id, first, last, T, E, price, qty, maker) | None: a trade or
 * aggTrade event, enveloped or not, its fields in any order and fields it does not read skipped,
 * with no whitespace. `symbol` is lower-case; E is -1 when absent; a trade's first and last are its
 * id. None for anything else (other events, a missing or repeated field, numbers the general
 * path must judge): the caller checks the times' range and window. */
static PyObject *scan_trade(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg))
        Py_RETURN_NONE;
    Cursor c = {PyBytes_AS_STRING(arg), PyBytes_AS_STRING(arg) + PyBytes_GET_SIZE(arg)};
    int enveloped = 0, agg;
    if (!envelope(&c, &enveloped))
        Py_RETURN_NONE;
    if (LIT(&c, "{\"e\":\"trade\""))
        agg = 0;
    else if (LIT(&c, "{\"e\":\"aggTrade\""))
        agg = 1;
    else
        Py_RETURN_NONE;
    long long id = 0, first = 0, last = 0, txn = 0, ev_ms = -1, v;
    double price = 0, qty = 0;
    int maker = 0, seen = K_E;
    const char *sym = NULL;
    Py_ssize_t nsym = 0;
    while (LIT(&c, ",\"")) {
        const char *k = c.p;
        while (c.p < c.end && *c.p != '"' && *c.p != '\\' && printable(*c.p))
            c.p++;
        Py_ssize_t nk = c.p - k;
        if (!LIT(&c, "\":"))
            Py_RETURN_NONE;
        int bit = 0;
        if (nk == 1) {
            switch (*k) {
            case 'E': bit = K_EV; break;
            case 'T': bit = K_T; break;
            case 's': bit = K_S; break;
            case 'p': bit = K_P; break;
            case 'q': bit = K_Q; break;
            case 'm': bit = K_M; break;
            case 'e': Py_RETURN_NONE;
            case 't': bit = agg ? 0 : K_ID; break;
            case 'a': bit = agg ? K_ID : 0; break;
            case 'f': bit = agg ? K_F : 0; break;
            case 'l': bit = agg ? K_L : 0; break;
            }
        }
        if (bit & seen)
            Py_RETURN_NONE;
        seen |= bit;
        switch (bit) {
        case 0:
            if (!skip_scalar(&c))
                Py_RETURN_NONE;
            break;
        case K_S:
            if (!LIT(&c, "\""))
                Py_RETURN_NONE;
            sym = c.p;
            nsym = symbol_run(&c);
            if (nsym == 0 || !LIT(&c, "\""))
                Py_RETURN_NONE;
            break;
        case K_P:
        case K_Q:
            if (!trade_number(&c, bit == K_P ? &price : &qty))
                Py_RETURN_NONE;
            break;
        case K_M:
            if (LIT(&c, "true"))
                maker = 1;
            else if (!LIT(&c, "false"))
                Py_RETURN_NONE;
            break;
        default:
            if (!int63(&c, &v))
                Py_RETURN_NONE;
            if (bit == K_EV) ev_ms = v;
            else if (bit == K_T) txn = v;
            else if (bit == K_ID) id = v;
            else if (bit == K_F) first = v;
            else last = v;
        }
    }
    int need = K_T | K_S | K_ID | K_P | K_Q | K_M | (agg ? K_F | K_L : 0);
    if ((seen & need) != need || !LIT(&c, "}") || (enveloped && !LIT(&c, "}")) || c.p != c.end)
        Py_RETURN_NONE;
    if (!agg)
        first = last = id;
    else if (last < first)
        Py_RETURN_NONE;
    if (!(price > 0 && price <= 1e15) || !(qty > 0 && qty <= 1e15))
        Py_RETURN_NONE;
    PyObject *symbol = PyUnicode_New(nsym, 127);
    if (symbol == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(symbol);
    for (Py_ssize_t i = 0; i < nsym; i++)
        out[i] = (Py_UCS1)((sym[i] >= 'A' && sym[i] <= 'Z') ? sym[i] + 32 : sym[i]);
    return Py_BuildValue("(NLLLLLddN)", symbol, id, first, last, txn, ev_ms, price, qty, PyBool_FromLong(maker));
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "scan(raw: bytes) -> (symbol, E, T | None, U, u, pu | None, bid_px, bid_qty, ask_px, ask_qty) | None: a depthUpdate in "
     "Binance's exact layout, or None (take the general path)."},
    {"scan_quote", scan_quote, METH_O,
     "scan_quote(raw: bytes) -> (u, symbol, b, B, a, A, T, E) | None: a USD-M bookTicker in Binance's exact layout, "
     "or None (take the general path)."},
    {"scan_trade", scan_trade, METH_O,
     "scan_trade(raw: bytes) -> (symbol, id, first, last, T, E, price, qty, maker) | None: a trade or aggTrade "
     "event, or None (take the general path)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_depthwire", "Binance wire fast paths: depthUpdate, bookTicker, trade and aggTrade.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__depthwire(void) { return PyModule_Create(&module); }
