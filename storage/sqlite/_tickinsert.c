/* The tick insert in C: a batch of one symbol's ticks from numpy columns into `tick_rows`, with the
 * GIL released for the whole prepare/bind/step/reset loop, on the writer's own connection.
 *
 * insert(conn, statements, sym, columns) -> rows inserted
 *
 * `conn` is the writer's `sqlite3.Connection`; `statements` (rows, sql) pairs, rows decreasing to
 * 1, each sql an `INSERT OR IGNORE INTO tick_rows(sym, …) VALUES(?, …),(?, …)…` of that many rows:
 * the rows go in statements of the most rows that fit, the rest in smaller ones (one step per
 * statement: per row, SQLite's step costs more than binding in C does), as `sql.insert_flat` does
 * in Python. `sym` is the symbol's id (each row's first parameter), `columns` a tuple of 1-D
 * contiguous buffers of one length, one per further parameter: int64 (bound as integers), float64
 * (as reals: NaN becomes NULL, as Python's binding does) or bool (as 0/1). The statement runs on the
 * connection's own `sqlite3*`, so it is part of the transaction the writer opened with
 * `BEGIN IMMEDIATE` and ends with `COMMIT`; an error raises the exception Python's sqlite3 module
 * raises for that SQLite code, with SQLite's message, and leaves the transaction to the caller.
 *
 * filename(conn) -> the connection's main database file, as SQLite names it (the check that the
 * handle read below is the writer's).
 *
 * Why C: Python's sqlite3 holds the GIL while it binds each parameter (~6 a tick) and releases it
 * only inside sqlite3_step, so the writer thread's binding competed with the flow's thread for the
 * GIL; here no Python object is touched once the loop runs (docs/performance.md, "History ingest").
 *
 * Two things are not public API and are checked before anything is used:
 *   - the `sqlite3*` is the first field after PyObject_HEAD of CPython's `pysqlite_Connection`
 *     (Modules/_sqlite/connection.h, 3.11 to 3.13): built only for those versions, the object's
 *     type must be sqlite3.Connection or a subclass, and the caller compares filename() with the
 *     path it opened before it uses insert();
 *   - SQLite is reached through the very libsqlite3 the `_sqlite3` module is linked with: opened
 *     with RTLD_NOLOAD (already loaded, never a second copy), `sqlite3_step` resolved through the
 *     `_sqlite3` module's own handle must be the same function, and the library's version must be
 *     `sqlite3.sqlite_version`. Otherwise the import fails and the writer keeps Python's binding.
 * The prototypes are declared here (SQLite's stable C API), so no SQLite headers are needed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#error "pysqlite_Connection's layout is known for CPython 3.11 to 3.13 only"
#endif

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

#define SQLITE_OK 0
#define SQLITE_DONE 101

static int (*p_prepare_v2)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
static int (*p_bind_int64)(sqlite3_stmt *, int, long long);
static int (*p_bind_double)(sqlite3_stmt *, int, double);
static int (*p_bind_parameter_count)(sqlite3_stmt *);
static int (*p_step)(sqlite3_stmt *);
static int (*p_reset)(sqlite3_stmt *);
static int (*p_finalize)(sqlite3_stmt *);
static int (*p_changes)(sqlite3 *);
static int (*p_extended_errcode)(sqlite3 *);
static const char *(*p_errmsg)(sqlite3 *);
static const char *(*p_db_filename)(sqlite3 *, const char *);
static const char *(*p_libversion)(void);

/* CPython's pysqlite_Connection begins so (Modules/_sqlite/connection.h, 3.11-3.13). */
typedef struct {
    PyObject_HEAD
    sqlite3 *db;
} conn_head;

static PyObject *ConnectionType, *OperationalError, *IntegrityError, *DatabaseError, *InternalError, *DataError,
    *InterfaceError, *ProgrammingError;

static sqlite3 *db_of(PyObject *conn) {
    int ok = PyObject_IsInstance(conn, ConnectionType);
    if (ok < 0)
        return NULL;
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "conn: a sqlite3.Connection expected");
        return NULL;
    }
    sqlite3 *db = ((conn_head *)conn)->db;
    if (db == NULL)
        PyErr_SetString(ProgrammingError, "Cannot operate on a closed database."); /* as sqlite3 says it */
    return db;
}

/* The exception class Python's sqlite3 module (Modules/_sqlite/util.c) raises for a result code. */
static PyObject *error_class(int code) {
    switch (code & 0xff) {
    case 2:  /* SQLITE_INTERNAL */
    case 12: /* SQLITE_NOTFOUND */
        return InternalError;
    case 7: /* SQLITE_NOMEM */
        return PyExc_MemoryError;
    case 11: /* SQLITE_CORRUPT */
        return DatabaseError;
    case 18: /* SQLITE_TOOBIG */
        return DataError;
    case 19: /* SQLITE_CONSTRAINT */
    case 20: /* SQLITE_MISMATCH */
        return IntegrityError;
    case 21: /* SQLITE_MISUSE */
    case 25: /* SQLITE_RANGE */
        return InterfaceError;
    case 1: case 3: case 4: case 5: case 6: case 8: case 9: case 10: case 13: case 14: case 15: case 16: case 17:
        return OperationalError;
    default:
        return DatabaseError;
    }
}

static void raise_sqlite(int code, const char *msg) {
    PyObject *cls = error_class(code);
    PyObject *exc = PyObject_CallFunction(cls, "s", msg);
    if (exc == NULL)
        return;
    if (cls != PyExc_MemoryError) { /* as Python's sqlite3 module sets them */
        PyObject *num = PyLong_FromLong(code);
        if (num == NULL || PyObject_SetAttrString(exc, "sqlite_errorcode", num) < 0)
            PyErr_Clear();
        Py_XDECREF(num);
    }
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
}

enum kind { K_INT64, K_DOUBLE, K_BOOL };

#define MAX_COLUMNS 16

/* Binds rows [i, i + rows) of the columns to a statement of `rows` VALUES groups and steps it once. */
static int put_rows(sqlite3 *db, sqlite3_stmt *st, long long sym, Py_buffer *views, enum kind *kinds, Py_ssize_t ncols,
                    Py_ssize_t i, Py_ssize_t rows, long *inserted) {
    int rc = SQLITE_OK, p = 1;
    for (Py_ssize_t r = i; r < i + rows && rc == SQLITE_OK; r++) {
        rc = p_bind_int64(st, p++, sym);
        for (Py_ssize_t j = 0; j < ncols && rc == SQLITE_OK; j++, p++) {
            const char *base = (const char *)views[j].buf;
            switch (kinds[j]) {
            case K_INT64:
                rc = p_bind_int64(st, p, ((const long long *)base)[r]);
                break;
            case K_DOUBLE:
                rc = p_bind_double(st, p, ((const double *)base)[r]);
                break;
            case K_BOOL:
                rc = p_bind_int64(st, p, base[r] != 0);
                break;
            }
        }
    }
    if (rc != SQLITE_OK)
        return rc;
    rc = p_step(st);
    if (rc != SQLITE_DONE) {
        p_reset(st); /* the step's error is the one told */
        return rc;
    }
    *inserted += p_changes(db);
    return p_reset(st);
}

#define MAX_STATEMENTS 8

static PyObject *insert(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyTuple_Check(args[1]) || !PyTuple_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "insert(conn, statements: tuple[tuple[int, str], ...], sym: int, columns: tuple)");
        return NULL;
    }
    sqlite3 *db = db_of(args[0]);
    if (db == NULL)
        return NULL;
    long long sym = PyLong_AsLongLong(args[2]);
    if (sym == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t nst = PyTuple_GET_SIZE(args[1]), ncols = PyTuple_GET_SIZE(args[3]);
    if (ncols > MAX_COLUMNS || nst < 1 || nst > MAX_STATEMENTS) {
        PyErr_SetString(PyExc_ValueError, "1 to 8 statements and at most 16 columns");
        return NULL;
    }
    /* (rows, sql) pairs, rows decreasing to 1: whole statements of the most rows first, the rest in smaller ones. */
    const char *sqls[MAX_STATEMENTS];
    Py_ssize_t sql_lens[MAX_STATEMENTS], rows_of[MAX_STATEMENTS];
    for (Py_ssize_t k = 0; k < nst; k++) {
        PyObject *pair = PyTuple_GET_ITEM(args[1], k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "statements: (rows, sql) pairs expected");
            return NULL;
        }
        rows_of[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
        sqls[k] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &sql_lens[k]);
        if (sqls[k] == NULL || (rows_of[k] == -1 && PyErr_Occurred()))
            return NULL;
        if (rows_of[k] < 1 || (k > 0 && rows_of[k] >= rows_of[k - 1]) || (k == nst - 1 && rows_of[k] != 1)) {
            PyErr_SetString(PyExc_ValueError, "statements: rows must decrease to 1");
            return NULL;
        }
    }
    Py_buffer views[MAX_COLUMNS];
    enum kind kinds[MAX_COLUMNS];
    Py_ssize_t held = 0, n = 0;
    PyObject *out = NULL;
    for (; held < ncols; held++) {
        Py_buffer *v = &views[held];
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(args[3], held), v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            goto done;
        const char *f = v->format ? v->format : "B";
        if (*f == '<' || *f == '=' || *f == '@')
            f++;
        if (v->ndim != 1 || f[0] == '\0' || f[1] != '\0') {
            held++;
            PyErr_SetString(PyExc_TypeError, "columns: 1-D buffers of int64, float64 or bool expected");
            goto done;
        }
        if ((*f == 'q' || *f == 'l') && v->itemsize == 8)
            kinds[held] = K_INT64;
        else if (*f == 'd' && v->itemsize == 8)
            kinds[held] = K_DOUBLE;
        else if (*f == '?' && v->itemsize == 1)
            kinds[held] = K_BOOL;
        else {
            held++;
            PyErr_Format(PyExc_TypeError, "columns: int64, float64 or bool expected, not format '%s'", v->format);
            goto done;
        }
        Py_ssize_t len = v->shape ? v->shape[0] : v->len / v->itemsize;
        if (held > 0 && len != n) {
            held++;
            PyErr_SetString(PyExc_ValueError, "columns: every column must have the same length");
            goto done;
        }
        n = len;
    }

    int rc = SQLITE_OK, bad = -1;
    long inserted = 0;
    char msg[512] = "";
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t i = 0;
    for (Py_ssize_t k = 0; k < nst && rc == SQLITE_OK; k++) {
        Py_ssize_t rows = rows_of[k];
        if (n - i < rows)
            continue;
        sqlite3_stmt *st = NULL;
        rc = p_prepare_v2(db, sqls[k], (int)sql_lens[k] + 1, &st, NULL);
        if (rc == SQLITE_OK && p_bind_parameter_count(st) != (int)(rows * (ncols + 1))) {
            bad = (int)k;
            p_finalize(st);
            break;
        }
        for (; rc == SQLITE_OK && n - i >= rows; i += rows)
            rc = put_rows(db, st, sym, views, kinds, ncols, i, rows, &inserted);
        if (rc != SQLITE_OK) {
            rc = p_extended_errcode(db);
            strncpy(msg, p_errmsg(db), sizeof msg - 1);
        }
        p_finalize(st); /* NULL is a no-op */
    }
    Py_END_ALLOW_THREADS

    if (rc != SQLITE_OK)
        raise_sqlite(rc, msg);
    else if (bad >= 0)
        PyErr_Format(PyExc_ValueError, "statement %d: not %zd rows of the symbol and %zd columns", bad, rows_of[bad], ncols);
    else
        out = PyLong_FromLong(inserted);
done:
    for (Py_ssize_t j = 0; j < held; j++)
        if (views[j].obj != NULL)
            PyBuffer_Release(&views[j]);
    return out;
}

static PyObject *filename(PyObject *self, PyObject *conn) {
    (void)self;
    sqlite3 *db = db_of(conn);
    if (db == NULL)
        return NULL;
    const char *name = p_db_filename(db, "main");
    return PyUnicode_DecodeFSDefault(name ? name : "");
}

static PyMethodDef methods[] = {
    {"insert", (PyCFunction)(void (*)(void))insert, METH_FASTCALL, "Insert a batch of one symbol's ticks (see the module's comment)."},
    {"filename", filename, METH_O, "The connection's main database file, as SQLite names it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tickinsert", NULL, -1, methods, NULL, NULL, NULL, NULL};

static void *resolve(void *lib, const char *name) {
    void *f = dlsym(lib, name);
    if (f == NULL)
        PyErr_Format(PyExc_ImportError, "libsqlite3.so.0 has no %s", name);
    return f;
}

#define RESOLVE(var, name)                                                                                             \
    if ((*(void **)&var = resolve(lib, name)) == NULL)                                                                  \
        goto fail;

PyMODINIT_FUNC PyInit__tickinsert(void) {
    PyObject *m = NULL, *sq = NULL, *dbapi = NULL, *file = NULL, *version = NULL;
    sq = PyImport_ImportModule("sqlite3"); /* loads _sqlite3 and with it libsqlite3 */
    dbapi = sq ? PyImport_ImportModule("_sqlite3") : NULL;
    if (dbapi == NULL)
        goto fail;
    void *lib = dlopen("libsqlite3.so.0", RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "_sqlite3 does not use a loaded libsqlite3.so.0 (%s)", dlerror());
        goto fail;
    }
    RESOLVE(p_prepare_v2, "sqlite3_prepare_v2")
    RESOLVE(p_bind_int64, "sqlite3_bind_int64")
    RESOLVE(p_bind_double, "sqlite3_bind_double")
    RESOLVE(p_bind_parameter_count, "sqlite3_bind_parameter_count")
    RESOLVE(p_step, "sqlite3_step")
    RESOLVE(p_reset, "sqlite3_reset")
    RESOLVE(p_finalize, "sqlite3_finalize")
    RESOLVE(p_changes, "sqlite3_changes")
    RESOLVE(p_extended_errcode, "sqlite3_extended_errcode")
    RESOLVE(p_errmsg, "sqlite3_errmsg")
    RESOLVE(p_db_filename, "sqlite3_db_filename")
    RESOLVE(p_libversion, "sqlite3_libversion")
    /* The very library _sqlite3 calls: its own handle resolves sqlite3_step to the same function. */
    file = PyObject_GetAttrString(dbapi, "__file__");
    const char *path = file ? PyUnicode_AsUTF8(file) : NULL;
    if (path == NULL)
        goto fail;
    void *own = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    void *step = own ? dlsym(own, "sqlite3_step") : NULL;
    if (own != NULL)
        dlclose(own);
    if (step != *(void **)&p_step) {
        PyErr_Format(PyExc_ImportError, "%s does not call libsqlite3.so.0's sqlite3_step", path);
        goto fail;
    }
    version = PyObject_GetAttrString(sq, "sqlite_version");
    const char *want = version ? PyUnicode_AsUTF8(version) : NULL;
    if (want == NULL)
        goto fail;
    if (strcmp(want, p_libversion()) != 0) {
        PyErr_Format(PyExc_ImportError, "libsqlite3.so.0 is %s, sqlite3 reports %s", p_libversion(), want);
        goto fail;
    }
    /* The library stays loaded (_sqlite3 holds it); this module's reference is never dropped. */
    ConnectionType = PyObject_GetAttrString(sq, "Connection");
    OperationalError = PyObject_GetAttrString(sq, "OperationalError");
    IntegrityError = PyObject_GetAttrString(sq, "IntegrityError");
    DatabaseError = PyObject_GetAttrString(sq, "DatabaseError");
    InternalError = PyObject_GetAttrString(sq, "InternalError");
    DataError = PyObject_GetAttrString(sq, "DataError");
    InterfaceError = PyObject_GetAttrString(sq, "InterfaceError");
    ProgrammingError = PyObject_GetAttrString(sq, "ProgrammingError");
    if (!ConnectionType || !OperationalError || !IntegrityError || !DatabaseError || !InternalError || !DataError ||
        !InterfaceError || !ProgrammingError)
        goto fail;
    m = PyModule_Create(&module);
fail:
    Py_XDECREF(sq);
    Py_XDECREF(dbapi);
    Py_XDECREF(file);
    Py_XDECREF(version);
    return m;
}
