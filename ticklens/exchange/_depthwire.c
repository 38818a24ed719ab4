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
    while (c.p < c.end && (DIGIT(*c.p) || (*c.p >= 'A' && *c.p <= 'Z') || (*c.p >= 'a' && *c.p <= 'z') || *c.p == '_'))
        c.p++;
    Py_ssize_t nsym = c.p - sym;
    if (nsym == 0 || nsym > MAX_SYMBOL || !LIT(&c, "\",\"U\":") || !int63(&c, &first) || !LIT(&c, ",\"u\":") ||
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
    while (c.p < c.end && (DIGIT(*c.p) || (*c.p >= 'A' && *c.p <= 'Z') || (*c.p >= 'a' && *c.p <= 'z') || *c.p == '_'))
        c.p++;
    Py_ssize_t nsym = c.p - sym;
    if (nsym == 0 || nsym > MAX_SYMBOL || !LIT(&c, "\","))
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

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "scan(raw: bytes) -> (symbol, E, T | None, U, u, pu | None, bid_px, bid_qty, ask_px, ask_qty) | None: a depthUpdate in "
     "Binance's exact layout, or None (take the general path)."},
    {"scan_quote", scan_quote, METH_O,
     "scan_quote(raw: bytes) -> (u, symbol, b, B, a, A, T, E) | None: a USD-M bookTicker in Binance's exact layout, "
     "or None (take the general path)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_depthwire", "Binance depthUpdate fast path.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__depthwire(void) { return PyModule_Create(&module); }
