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

static PyObject *apply(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "apply takes 8 arguments");
        return NULL;
    }
    PyObject *book = args[0], *levels = args[1], *best = args[3], *grid = args[7];
    if (!PyDict_CheckExact(book) || !PyList_CheckExact(levels) || !plain(grid) || (best != Py_None && !plain(best))) {
        PyErr_SetString(PyExc_TypeError, "apply(book: dict, levels: list, start, best: str | None, gone, is_bid, dec, grid: str)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    long dec = PyLong_AsLong(args[6]);
    int gone = PyObject_IsTrue(args[4]), is_bid = PyObject_IsTrue(args[5]);
    if (PyErr_Occurred() || gone < 0 || is_bid < 0)
        return NULL;
    Py_ssize_t blen = best == Py_None ? (is_bid ? -1 : PY_SSIZE_T_MAX) : PyUnicode_GET_LENGTH(best);
    Py_ssize_t n = PyList_GET_SIZE(levels);
    /* `best` stays alive: the caller holds the one it passed, `levels` any later one. */
    for (Py_ssize_t i = start < 0 ? 0 : start; i < n; i++) {
        PyObject *lv = PyList_GET_ITEM(levels, i);
        if (!PyList_CheckExact(lv) || PyList_GET_SIZE(lv) != 2)
            return result(best, gone, i, 1);
        PyObject *p = PyList_GET_ITEM(lv, 0), *q = PyList_GET_ITEM(lv, 1);
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

static PyMethodDef methods[] = {
    {"apply", (PyCFunction)(void (*)(void))apply, METH_FASTCALL,
     "apply(book, levels, start, best, gone, is_bid, dec, grid) -> (best, gone, stop, odd): one side of a diff."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bookside", "The order book's per-level loop.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bookside(void) { return PyModule_Create(&module); }
