/* The order book's common case, one side of one diff, in C: `OrderBook.apply_levels`'s loop.
 *
 * apply(book, levels, start, best, gone, is_bid, dec, grid) -> (best, gone, stop, odd)
 *
 * `book` is the side's {price: qty} dict, `levels` a list of [price, qty] string pairs,
 * `best` the side's best key (None if empty), `dec` the book's number of price decimals,
 * `grid` the suffix every on-grid price ends with. From `start`, each level is applied exactly
 * as the Python loop in `book.py` does it:
 *
 *   - a zero quantity removes the level (a level the book does not hold is ignored when the
 *     price has the book's number of decimals); removing the best sets `gone`;
 *   - a price the book holds gets its new quantity;
 *   - a new price with the book's decimals, on its grid, is inserted, and becomes the best when
 *     it is better than (or equal to: the best re-created) the best, by (length, characters)
 *     order, which is numeric order for such strings;
 *   - anything else (another number of decimals, off the grid, not a pair of strings) stops the
 *     loop: `stop` is that level's index and `odd` is 1, and the caller applies it with the
 *     general rule (`OrderBook._odd`, which may re-key the book) before calling again.
 *
 * At the end of the side `stop` is len(levels) and `odd` 0. Finding the next best after the best
 * was removed stays with the caller (`OrderBook._next`).
 *
 * Why C: the interpreter's loop over ~66 levels a message was half the book step's time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

static int is_zero(PyObject *q) { /* "0", or "0." and 1..40 zeros (ZERO_QTY) */
    Py_ssize_t n = PyUnicode_GET_LENGTH(q);
    const char *s = (const char *)PyUnicode_1BYTE_DATA(q);
    if (n == 1)
        return s[0] == '0';
    if (n < 3 || n > 42 || s[0] != '0' || s[1] != '.')
        return 0;
    for (Py_ssize_t i = 2; i < n; i++)
        if (s[i] != '0')
            return 0;
    return 1;
}

/* p has exactly `dec` decimals after its dot (`p[dot:dot1] == "."`). */
static int has_dec(PyObject *p, long dec) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(p);
    return dec > 0 && n > dec && PyUnicode_1BYTE_DATA(p)[n - dec - 1] == '.';
}

static int ends_with(PyObject *p, PyObject *suffix) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(p), k = PyUnicode_GET_LENGTH(suffix);
    return k <= n && memcmp(PyUnicode_1BYTE_DATA(p) + n - k, PyUnicode_1BYTE_DATA(suffix), (size_t)k) == 0;
}

static int same(PyObject *a, PyObject *b) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return b != Py_None && n == PyUnicode_GET_LENGTH(b) && memcmp(PyUnicode_1BYTE_DATA(a), PyUnicode_1BYTE_DATA(b), (size_t)n) == 0;
}

static int plain(PyObject *s) { return PyUnicode_CheckExact(s) && PyUnicode_IS_COMPACT_ASCII(s); }

static PyObject *result(PyObject *best, int gone, Py_ssize_t stop, int odd) {
    return Py_BuildValue("(OOni)", best, gone ? Py_True : Py_False, stop, odd);
}

/* The loop over one side, levels given as [price, qty] lists (`levels`) or as two columns. */
static PyObject *run(PyObject *book, PyObject *levels, PyObject *prices, PyObject *qtys, PyObject *const *rest) {
    PyObject *best = rest[1], *grid = rest[5];
    if (!PyDict_CheckExact(book) || !plain(grid) || (best != Py_None && !plain(best))) {
        PyErr_SetString(PyExc_TypeError, "book: dict, best: str | None, grid: str expected");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(rest[0]);
    long dec = PyLong_AsLong(rest[4]);
    int gone = PyObject_IsTrue(rest[2]), is_bid = PyObject_IsTrue(rest[3]);
    if (PyErr_Occurred() || gone < 0 || is_bid < 0)
        return NULL;
    Py_ssize_t blen = best == Py_None ? (is_bid ? -1 : PY_SSIZE_T_MAX) : PyUnicode_GET_LENGTH(best);
    Py_ssize_t n = levels != NULL ? PyList_GET_SIZE(levels) : PyList_GET_SIZE(prices);
    /* `best` stays alive: the caller holds the one it passed, the levels any later one. */
    for (Py_ssize_t i = start < 0 ? 0 : start; i < n; i++) {
        PyObject *p, *q;
        if (levels != NULL) {
            PyObject *lv = PyList_GET_ITEM(levels, i);
            if (!PyList_CheckExact(lv) || PyList_GET_SIZE(lv) != 2)
                return result(best, gone, i, 1);
            p = PyList_GET_ITEM(lv, 0);
            q = PyList_GET_ITEM(lv, 1);
        } else {
            p = PyList_GET_ITEM(prices, i);
            q = PyList_GET_ITEM(qtys, i);
        }
        if (!plain(p) || !plain(q))
            return result(best, gone, i, 1);
        if (is_zero(q)) {
            PyObject *held = PyDict_GetItemWithError(book, p);
            if (held == NULL) {
                if (PyErr_Occurred())
                    return NULL;
                if (!has_dec(p, dec)) /* another form of a price the book may hold */
                    return result(best, gone, i, 1);
                continue;
            }
            if (same(p, best))
                gone = 1;
            if (PyDict_DelItem(book, p) < 0)
                return NULL;
            continue;
        }
        int held = PyDict_Contains(book, p);
        if (held < 0)
            return NULL;
        if (held) {
            if (PyDict_SetItem(book, p, q) < 0)
                return NULL;
            continue;
        }
        if (!has_dec(p, dec) || !ends_with(p, grid))
            return result(best, gone, i, 1);
        if (PyDict_SetItem(book, p, q) < 0)
            return NULL;
        Py_ssize_t len = PyUnicode_GET_LENGTH(p);
        int better;
        if (len != blen)
            better = is_bid ? len > blen : len < blen;
        else {
            int c = memcmp(PyUnicode_1BYTE_DATA(p), PyUnicode_1BYTE_DATA(best), (size_t)len);
            better = is_bid ? c >= 0 : c <= 0;
        }
        if (better) {
            best = p;
            blen = len;
            gone = 0;
        }
    }
    return result(best, gone, n, 0);
}

static PyObject *apply(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 8 || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "apply(book: dict, levels: list, start, best: str | None, gone, is_bid, dec, grid: str)");
        return NULL;
    }
    return run(args[0], args[1], NULL, NULL, args + 2);
}

static PyObject *apply_cols(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 9 || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[2]) ||
        PyList_GET_SIZE(args[1]) != PyList_GET_SIZE(args[2])) {
        PyErr_SetString(PyExc_TypeError, "apply_cols(book: dict, prices: list, qtys: list of the same length, start, best: "
                                         "str | None, gone, is_bid, dec, grid: str)");
        return NULL;
    }
    return run(args[0], NULL, args[1], args[2], args + 3);
}

/* --- reading the book ------------------------------------------------------------------- */

/* A canonical price key's tick (its digits without the dot); -1 if it is not one we can read. */
static long long tick_of(PyObject *key) {
    if (!plain(key))
        return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(key);
    const char *s = (const char *)PyUnicode_1BYTE_DATA(key);
    long long t = 0;
    int digits = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] == '.')
            continue;
        if (s[i] < '0' || s[i] > '9' || ++digits > 18)
            return -1;
        t = t * 10 + (s[i] - '0');
    }
    return digits ? t : -1;
}

/* `OrderBook._fmt(tick)` into buf (at least 48 bytes): the price string of a tick. */
static Py_ssize_t fmt(long long tick, long dec, char *buf) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + tick % 10);
        tick /= 10;
    } while (tick > 0);
    if (dec > 0)
        while (n < dec + 1)
            digits[n++] = '0';
    Py_ssize_t k = 0;
    for (int i = n - 1; i >= 0; i--) {
        if (dec > 0 && i == dec - 1)
            buf[k++] = '.';
        buf[k++] = digits[i];
    }
    return k;
}

/* The quantity at tick `t`, borrowed (NULL if the side has no level there; *err on an error).
 * With `key_out`, a level found also gives its price string there (a new reference). */
static PyObject *level_at(PyObject *book, long long t, long dec, int *err, PyObject **key_out) {
    char buf[48];
    Py_ssize_t k = fmt(t, dec, buf);
    PyObject *key = PyUnicode_New(k, 127);
    if (key == NULL) {
        *err = 1;
        return NULL;
    }
    memcpy(PyUnicode_1BYTE_DATA(key), buf, (size_t)k);
    PyObject *q = PyDict_GetItemWithError(book, key);
    if (q == NULL && PyErr_Occurred())
        *err = 1;
    if (q != NULL && key_out != NULL)
        *key_out = key;
    else
        Py_DECREF(key);
    return q;
}

/* A plain decimal string as the float `float()` gives (PyOS_string_to_double); 0 if it is not one. */
static int to_double(PyObject *s, double *v) {
    if (!plain(s))
        return 0;
    *v = PyOS_string_to_double((const char *)PyUnicode_1BYTE_DATA(s), NULL, NULL);
    if (*v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* top(book, best, step, n, probes, dec) -> [(price, qty)] | None: `OrderBook._top`'s probe of the
 * price grid from the best level, or None where the Python method must decide (it then probes
 * again or makes one pass over the side). */
static PyObject *top(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 6 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "top(book: dict, best: str, step, n, probes, dec)");
        return NULL;
    }
    PyObject *book = args[0], *best = args[1];
    long long step = PyLong_AsLongLong(args[2]);
    Py_ssize_t n = PyLong_AsSsize_t(args[3]), probes = PyLong_AsSsize_t(args[4]);
    long dec = PyLong_AsLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    long long t = tick_of(best);
    Py_ssize_t size = PyDict_GET_SIZE(book);
    if (t < 0 || n <= 0 || dec > 18)
        Py_RETURN_NONE;
    PyObject *q = PyDict_GetItemWithError(book, best);
    if (q == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(0), *pair = PyTuple_Pack(2, best, q);
    if (out == NULL || pair == NULL || PyList_Append(out, pair) < 0)
        goto error;
    Py_CLEAR(pair);
    for (Py_ssize_t i = 0; i < probes * n; i++) {
        Py_ssize_t got = PyList_GET_SIZE(out);
        if (got >= n || got >= size)
            return out;
        t += step;
        if (t <= 0 || t > 999999999999999999LL)
            break;
        int err = 0;
        PyObject *key = NULL, *qty = level_at(book, t, dec, &err, &key);
        if (err)
            goto error;
        if (qty == NULL)
            continue;
        pair = PyTuple_Pack(2, key, qty);
        Py_DECREF(key);
        if (pair == NULL || PyList_Append(out, pair) < 0)
            goto error;
        Py_CLEAR(pair);
    }
    if (PyList_GET_SIZE(out) >= (n < size ? n : size))
        return out;
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_XDECREF(pair);
    Py_XDECREF(out);
    return NULL;
}

/* top_floats(book, best, step, n, probes, dec) -> (prices, qtys) | None: `top` with each price
 * and quantity as the float `float()` gives (both use PyOS_string_to_double), in two lists. */
static PyObject *top_floats(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *levels = top(module, args, nargs);
    if (levels == NULL || levels == Py_None)
        return levels;
    Py_ssize_t n = PyList_GET_SIZE(levels);
    PyObject *px = PyList_New(n), *qty = px == NULL ? NULL : PyList_New(n);
    if (qty == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(levels, i);
        for (int j = 0; j < 2; j++) {
            double v;
            if (!to_double(PyTuple_GET_ITEM(pair, j), &v)) {
                Py_DECREF(px);
                Py_DECREF(qty);
                Py_DECREF(levels);
                Py_RETURN_NONE;
            }
            PyObject *f = PyFloat_FromDouble(v);
            if (f == NULL)
                goto error;
            PyList_SET_ITEM(j ? qty : px, i, f);
        }
    }
    Py_DECREF(levels);
    return Py_BuildValue("(NN)", px, qty);
error:
    Py_XDECREF(px);
    Py_XDECREF(qty);
    Py_DECREF(levels);
    return NULL;
}

/* band(book, start, stop, step, dec) -> float | None: the sum of float(qty) over the levels at
 * ticks range(start, stop, step), in that order (`_band`'s walk of the grid), or None where a
 * quantity is not a plain decimal string (the Python walk decides). */
static PyObject *band(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "band(book: dict, start, stop, step, dec)");
        return NULL;
    }
    PyObject *book = args[0];
    long long start = PyLong_AsLongLong(args[1]), stop = PyLong_AsLongLong(args[2]), step = PyLong_AsLongLong(args[3]);
    long dec = PyLong_AsLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (stop < -1)
        stop = -1; /* no price is below one tick */
    if (step == 0 || dec > 18 || start < 0 || start > 999999999999999999LL || stop > 999999999999999999LL)
        Py_RETURN_NONE;
    double total = 0.0;
    for (long long t = start; step > 0 ? t < stop : t > stop; t += step) {
        int err = 0;
        PyObject *q = level_at(book, t, dec, &err, NULL);
        if (err)
            return NULL;
        if (q == NULL)
            continue;
        double v;
        if (!to_double(q, &v))
            Py_RETURN_NONE;
        total += v;
    }
    return PyFloat_FromDouble(total);
}

typedef struct {
    long long tick;
    PyObject *key;
    PyObject *qty;
} Keyed;

static int by_price(const void *a, const void *b) {
    PyObject *x = ((const Keyed *)a)->key, *y = ((const Keyed *)b)->key;
    Py_ssize_t nx = PyUnicode_GET_LENGTH(x), ny = PyUnicode_GET_LENGTH(y);
    if (nx != ny)
        return nx < ny ? -1 : 1;
    return memcmp(PyUnicode_1BYTE_DATA(x), PyUnicode_1BYTE_DATA(y), (size_t)nx);
}

static int by_tick(const void *a, const void *b) {
    long long x = ((const Keyed *)a)->tick, y = ((const Keyed *)b)->tick;
    return (x > y) - (x < y);
}

/* The digits after the dot of a key (-1 if it has none), or -2 if it is not a plain decimal. */
static int decimals(PyObject *key) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(key);
    const char *s = (const char *)PyUnicode_1BYTE_DATA(key);
    for (Py_ssize_t i = n - 1; i >= 0; i--)
        if (s[i] == '.')
            return (int)(n - 1 - i);
    return -1;
}

/* levels(book, descending) -> [[price, qty]] | None: every level of a side, best first, in
 * (length, characters) order as `_ordered` sorts them; None if a key is not a plain string.
 * Keys of one number of decimals (a book's own form: numeric order is that order) are sorted by
 * their ticks, a contiguous array of integers; others by their characters. */
static PyObject *levels(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "levels(book: dict, descending)");
        return NULL;
    }
    PyObject *book = args[0];
    int desc = PyObject_IsTrue(args[1]);
    if (desc < 0)
        return NULL;
    Py_ssize_t n = PyDict_GET_SIZE(book), pos = 0, i = 0;
    Keyed *keys = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Keyed));
    if (keys == NULL)
        return PyErr_NoMemory();
    PyObject *k, *v;
    int dec = -3, by_ticks = 1;
    while (PyDict_Next(book, &pos, &k, &v)) {
        if (!plain(k)) {
            PyMem_Free(keys);
            Py_RETURN_NONE;
        }
        keys[i].key = k; /* borrowed: the dict is not changed while we hold them */
        keys[i].qty = v;
        if (by_ticks) {
            int d = decimals(k);
            keys[i].tick = tick_of(k);
            Py_ssize_t len = PyUnicode_GET_LENGTH(k);
            const char *s = (const char *)PyUnicode_1BYTE_DATA(k);
            /* no leading zero before the dot: then the tick's order is the characters' order */
            if (keys[i].tick < 0 || (dec != -3 && d != dec) || (len > 1 && s[0] == '0' && s[1] != '.'))
                by_ticks = 0;
            dec = d;
        }
        i++;
    }
    if (by_ticks)
        qsort(keys, (size_t)n, sizeof(Keyed), by_tick);
    else {
        qsort(keys, (size_t)n, sizeof(Keyed), by_price);
    }
    PyObject *out = PyList_New(n);
    if (out == NULL)
        goto error;
    for (i = 0; i < n; i++) {
        PyObject *key = keys[desc ? n - 1 - i : i].key, *qty = keys[desc ? n - 1 - i : i].qty;
        PyObject *pair = PyList_New(2);
        if (pair == NULL)
            goto error;
        Py_INCREF(key);
        Py_INCREF(qty);
        PyList_SET_ITEM(pair, 0, key);
        PyList_SET_ITEM(pair, 1, qty);
        PyList_SET_ITEM(out, i, pair);
    }
    PyMem_Free(keys);
    return out;
error:
    PyMem_Free(keys);
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"apply", (PyCFunction)(void (*)(void))apply, METH_FASTCALL,
     "apply(book, levels, start, best, gone, is_bid, dec, grid) -> (best, gone, stop, odd): one side of a diff."},
    {"apply_cols", (PyCFunction)(void (*)(void))apply_cols, METH_FASTCALL,
     "apply_cols(book, prices, qtys, start, best, gone, is_bid, dec, grid) -> (best, gone, stop, odd): `apply` for "
     "columns."},
    {"top", (PyCFunction)(void (*)(void))top, METH_FASTCALL,
     "top(book, best, step, n, probes, dec) -> [(price, qty)] | None: the best n levels by probing the grid."},
    {"top_floats", (PyCFunction)(void (*)(void))top_floats, METH_FASTCALL,
     "top_floats(book, best, step, n, probes, dec) -> (prices, qtys) | None: `top` as two lists of floats."},
    {"band", (PyCFunction)(void (*)(void))band, METH_FASTCALL,
     "band(book, start, stop, step, dec) -> float | None: the quantity at the grid ticks range(start, stop, step)."},
    {"levels", (PyCFunction)(void (*)(void))levels, METH_FASTCALL,
     "levels(book, descending) -> [[price, qty]] | None: every level of a side, best first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bookside", "The order book's per-level loop, and its reads of the best levels.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bookside(void) { return PyModule_Create(&module); }
