/* The list scheduler in C: the hot loop of simulator.schedules.simulate.
 *
 * A pipeline schedule is a list of tasks per rank; each rank runs its own tasks strictly in order, and a task
 * starts when its rank is free and every input it waits on exists (an input made on another rank arrives a
 * lag later). schedules._compile packs each schedule shape once into int32s, rank after rank, task after task:
 *
 *     duration index, number of dependencies, number of produced events, dependency indices..., events...
 *
 * A dependency index e < nev reads event e's end time, e >= nev the end plus the lag of the task that made it.
 * run() is the event-driven list scheduler: it runs a rank's tasks until one waits on an event not made yet,
 * parks the rank on that event, and takes up the next ready rank; making an event readies the ranks parked on
 * it. A task's start is the same whatever order the ranks are taken in (the largest of its rank's free time
 * and its inputs' arrivals), and the operations are exactly those of the Python reference in
 * schedules._one_pass (a comparison per input, one addition for the end, one for the arrival), so both give
 * the same times to the last bit; tests run both on the same shapes. It exists because that loop, and
 * finding the order the Python pass walks, were the largest costs of a plan search (a DualPipe plan runs two
 * steps of thousands of tasks). Nothing here allocates per task.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_pyseq.h"

/* run(tasks, dur, lag, nev, first) -> (free per rank, starts per rank)
 *   tasks: the packed tasks of every rank (a buffer of int32, see above)
 *   dur, lag: per duration index, the task's duration and what its outputs take to reach another rank
 *   nev: the number of events
 *   first: each rank's first task's index among all ranks' tasks, and their count (pp + 1 ints)
 */
static PyObject *run(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "run(tasks, dur, lag, nev, first) takes 5 arguments");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (view.itemsize != 4 || view.format == NULL || strcmp(view.format, "i") != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "tasks must be an array of int32 ('i')");
        return NULL;
    }
    const int *code = (const int *)view.buf;
    Py_ssize_t ncode = view.len / 4;
    Py_ssize_t nev = PyLong_AsSsize_t(args[3]);
    PyObject *first_fast = PySequence_Fast(args[4], "first must be a sequence of ints");
    double *dur = NULL, *lag = NULL, *end = NULL, *freet = NULL, *start = NULL;
    Py_ssize_t *first = NULL, *pos = NULL, *done = NULL, *stack = NULL, *parked = NULL, *next = NULL;
    char *made = NULL;
    PyObject *result = NULL;
    Py_ssize_t ndur, nlag, pp = 0, nslot = 0;
    if (nev < 0 || first_fast == NULL) goto done;
    pp = PySequence_Fast_GET_SIZE(first_fast) - 1;
    if (pp < 1) {
        PyErr_SetString(PyExc_ValueError, "first needs pp + 1 entries");
        goto done;
    }
    first = PyMem_Malloc((pp + 1) * sizeof(Py_ssize_t));
    pos = PyMem_Malloc(pp * sizeof(Py_ssize_t));
    done = PyMem_Malloc(pp * sizeof(Py_ssize_t));
    stack = PyMem_Malloc(pp * sizeof(Py_ssize_t));
    next = PyMem_Malloc(pp * sizeof(Py_ssize_t));
    parked = PyMem_Malloc((nev + 1) * sizeof(Py_ssize_t));
    made = PyMem_Calloc(nev + 1, 1);
    if (first == NULL || pos == NULL || done == NULL || stack == NULL || next == NULL || parked == NULL ||
        made == NULL) {
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
    nslot = first[pp];
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
    /* Where each rank's tasks begin in the packing, every index checked once against its bound (the packing
     * comes from Python), so that the loop below reads nothing out of bounds. */
    {
        Py_ssize_t p = 0, task = 0;
        for (Py_ssize_t r = 0; r < pp; r++) {
            pos[r] = p;
            done[r] = first[r];
            for (; task < first[r + 1]; task++) {
                if (p + 3 > ncode) goto bad;
                int i = code[p], nd = code[p + 1], np = code[p + 2];
                if (i < 0 || i >= ndur || nd < 0 || np < 0 || p + 3 + nd + np > ncode) goto bad;
                for (int j = 0; j < nd; j++)
                    if (code[p + 3 + j] < 0 || code[p + 3 + j] >= 2 * nev) goto bad;
                for (int j = 0; j < np; j++)
                    if (code[p + 3 + nd + j] < 0 || code[p + 3 + nd + j] >= nev) goto bad;
                p += 3 + nd + np;
            }
        }
        if (p != ncode) goto bad;
    }
    for (Py_ssize_t e = 0; e < nev; e++) parked[e] = -1;
    Py_ssize_t top = 0;
    for (Py_ssize_t r = pp - 1; r >= 0; r--) stack[top++] = r;
    /* Hot loop. */
    while (top > 0) {
        Py_ssize_t r = stack[--top];
        Py_ssize_t p = pos[r], k = done[r], last = first[r + 1];
        while (k < last) {
            int i = code[p], nd = code[p + 1], np = code[p + 2];
            const int *deps = code + p + 3, *prods = deps + nd;
            int missing = -1;
            for (int j = 0; j < nd; j++) {
                int e = deps[j] >= nev ? deps[j] - (int)nev : deps[j];
                if (!made[e]) {
                    missing = e;
                    break;
                }
            }
            if (missing >= 0) { /* park the rank on the event; it comes back when the event is made */
                next[r] = parked[missing];
                parked[missing] = r;
                break;
            }
            double t = freet[r];
            for (int j = 0; j < nd; j++) {
                double d = end[deps[j]];
                if (d > t) t = d;
            }
            start[k] = t;
            t += dur[i];
            freet[r] = t;
            double sent = t + lag[i];
            for (int j = 0; j < np; j++) {
                int e = prods[j];
                end[e] = t;
                end[e + nev] = sent;
                made[e] = 1;
                for (Py_ssize_t w = parked[e]; w >= 0; w = next[w]) stack[top++] = w;
                parked[e] = -1;
            }
            p += 3 + nd + np;
            k++;
        }
        pos[r] = p;
        done[r] = k;
    }
    for (Py_ssize_t r = 0; r < pp; r++) {
        if (done[r] != first[r + 1]) {
            PyErr_SetString(PyExc_RuntimeError, "the schedule deadlocks: a task waits on an event never made");
            goto done;
        }
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
    PyErr_SetString(PyExc_ValueError, "tasks: a task's index lies outside its table");
done:
    PyBuffer_Release(&view);
    Py_XDECREF(first_fast);
    PyMem_Free(first);
    PyMem_Free(pos);
    PyMem_Free(done);
    PyMem_Free(stack);
    PyMem_Free(next);
    PyMem_Free(parked);
    PyMem_Free(made);
    PyMem_Free(dur);
    PyMem_Free(lag);
    PyMem_Free(end);
    PyMem_Free(freet);
    PyMem_Free(start);
    return result;
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(tasks, dur, lag, nev, first) -> (free per rank, starts per rank): the list scheduler "
     "(see simulator.schedules.simulate)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_listsched",
                                    "The list scheduler in C (simulator.schedules.simulate).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__listsched(void) { return PyModule_Create(&module); }
