/* The list scheduler's one pass, in C: the hot loop of simulator.schedules.simulate.
 *
 * A pipeline schedule is a list of tasks per rank; a task starts when its rank is free and every input it
 * waits on exists (an input made on another rank arrives a lag later). schedules._order finds, once per
 * schedule shape, one sequence of all ranks' tasks in which every task comes after those it waits on, and
 * packs it here as int32s, task after task:
 *
 *     rank, duration index, start slot, number of dependencies, number of produced events,
 *     dependency indices..., produced events...
 *
 * A dependency index e < nev reads event e's end time, e >= nev the end plus the lag of the task that made
 * it. This file times one step from that sequence and the durations, in exactly the floating-point
 * operations of the Python loop in schedules.simulate (a comparison per input, one addition for the end, one
 * for the arrival), so both give the same times to the last bit; tests run both on the same shapes. It
 * exists because that loop was the largest single cost of a plan search (a DualPipe plan runs it twice over
 * thousands of tasks). Nothing here allocates per task.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int read_doubles(PyObject *seq, const char *what, double **out, Py_ssize_t *n) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    double *buf = PyMem_Malloc((len > 0 ? len : 1) * sizeof(double));
    if (buf == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < len; i++) {
        buf[i] = PyFloat_AsDouble(items[i]);
        if (buf[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(buf);
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    *out = buf;
    *n = len;
    return 0;
}

/* run(order, dur, lag, nev, first) -> (free per rank, starts per rank)
 *   order: the packed tasks (a buffer of int32, see above)
 *   dur, lag: per duration index, the task's duration and what its outputs take to reach another rank
 *   nev: the number of events
 *   first: each rank's first start slot, and one past the last rank's (pp + 1 ints)
 */
static PyObject *run(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "run(order, dur, lag, nev, first) takes 5 arguments");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (view.itemsize != 4 || view.format == NULL || strcmp(view.format, "i") != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "order must be an array of int32 ('i')");
        return NULL;
    }
    const int *code = (const int *)view.buf;
    Py_ssize_t ncode = view.len / 4;
    Py_ssize_t nev = PyLong_AsSsize_t(args[3]);
    PyObject *first_fast = PySequence_Fast(args[4], "first must be a sequence of ints");
    double *dur = NULL, *lag = NULL, *end = NULL, *freet = NULL, *start = NULL;
    Py_ssize_t *first = NULL;
    PyObject *result = NULL;
    Py_ssize_t ndur, nlag;
    if (nev < 0 || first_fast == NULL) goto done;
    Py_ssize_t pp = PySequence_Fast_GET_SIZE(first_fast) - 1;
    if (pp < 1) {
        PyErr_SetString(PyExc_ValueError, "first needs pp + 1 entries");
        goto done;
    }
    first = PyMem_Malloc((pp + 1) * sizeof(Py_ssize_t));
    if (first == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t r = 0; r <= pp; r++) {
        first[r] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(first_fast, r));
        if (first[r] < 0 || (r > 0 && first[r] < first[r - 1])) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "first must be non-decreasing ints >= 0");
            goto done;
        }
    }
    Py_ssize_t nslot = first[pp];
    if (read_doubles(args[1], "dur must be a sequence of floats", &dur, &ndur) < 0) goto done;
    if (read_doubles(args[2], "lag must be a sequence of floats", &lag, &nlag) < 0) goto done;
    if (nlag != ndur) {
        PyErr_SetString(PyExc_ValueError, "dur and lag must have the same length");
        goto done;
    }
    end = PyMem_Calloc(2 * nev + 1, sizeof(double));
    freet = PyMem_Calloc(pp, sizeof(double));
    start = PyMem_Calloc(nslot + 1, sizeof(double));
    if (end == NULL || freet == NULL || start == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Hot loop: every index is checked once against its bound, since the packing comes from Python. */
    for (Py_ssize_t p = 0; p < ncode;) {
        if (p + 5 > ncode) goto bad;
        int r = code[p], i = code[p + 1], k = code[p + 2], nd = code[p + 3], np = code[p + 4];
        p += 5;
        if (r < 0 || r >= pp || i < 0 || i >= ndur || k < 0 || k >= nslot || nd < 0 || np < 0 ||
            p + nd + np > ncode)
            goto bad;
        double t = freet[r];
        for (int j = 0; j < nd; j++) {
            int e = code[p + j];
            if (e < 0 || e >= 2 * nev) goto bad;
            double d = end[e];
            if (d > t) t = d;
        }
        p += nd;
        start[k] = t;
        t += dur[i];
        freet[r] = t;
        double sent = t + lag[i];
        for (int j = 0; j < np; j++) {
            int e = code[p + j];
            if (e < 0 || e >= nev) goto bad;
            end[e] = t;
            end[e + nev] = sent;
        }
        p += np;
    }
    PyObject *frees = PyList_New(pp), *starts = PyList_New(pp);
    if (frees == NULL || starts == NULL) {
        Py_XDECREF(frees);
        Py_XDECREF(starts);
        goto done;
    }
    for (Py_ssize_t r = 0; r < pp; r++) {
        PyObject *f = PyFloat_FromDouble(freet[r]);
        PyObject *lst = PyList_New(first[r + 1] - first[r]);
        if (f == NULL || lst == NULL) {
            Py_XDECREF(f);
            Py_XDECREF(lst);
            Py_DECREF(frees);
            Py_DECREF(starts);
            goto done;
        }
        PyList_SET_ITEM(frees, r, f);
        PyList_SET_ITEM(starts, r, lst);
        for (Py_ssize_t s = first[r]; s < first[r + 1]; s++) {
            PyObject *x = PyFloat_FromDouble(start[s]);
            if (x == NULL) {
                Py_DECREF(frees);
                Py_DECREF(starts);
                goto done;
            }
            PyList_SET_ITEM(lst, s - first[r], x);
        }
    }
    result = PyTuple_Pack(2, frees, starts);
    Py_DECREF(frees);
    Py_DECREF(starts);
    goto done;
bad:
    PyErr_SetString(PyExc_ValueError, "order: a task's index lies outside its table");
done:
    PyBuffer_Release(&view);
    Py_XDECREF(first_fast);
    PyMem_Free(first);
    PyMem_Free(dur);
    PyMem_Free(lag);
    PyMem_Free(end);
    PyMem_Free(freet);
    PyMem_Free(start);
    return result;
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(order, dur, lag, nev, first) -> (free per rank, starts per rank): one list-scheduler pass "
     "(see simulator.schedules.simulate)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_listsched",
                                    "The list scheduler's one pass in C (simulator.schedules.simulate).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__listsched(void) { return PyModule_Create(&module); }
