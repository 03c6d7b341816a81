/* What both C loops of the simulator need from Python: a sequence of floats read into a C array.
 * Included by simulator/_listsched.c and simulator/_partition.c (each its own extension module).
 */
#ifndef GPUHOURS_PYSEQ_H
#define GPUHOURS_PYSEQ_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Read ``seq`` (any sequence of numbers) into a new PyMem array *out of *n doubles (free it with PyMem_Free);
 * -1 with a Python error set (``what`` as the TypeError of a non-sequence) where it cannot. */
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

#endif
