/* The balanced pipeline split's bisection in C: the hot loop of simulator.layout.split_balanced.
 *
 * A model's layer units, priced by their time, are cut into contiguous stages so that the most expensive
 * stage costs as little as it can. The bottleneck is found by bisection: a limit fits when the greedy cut
 * (each stage takes units while their sum stays within the limit, leaving one unit for each later stage)
 * needs no more stages than there are. Each greedy step finds a stage's end by bisecting the prefix sums.
 *
 * cuts(pre, stages, top) runs exactly the Python reference, layout._bisect_cuts: the same bracket, the same
 * limits in the same order, the same comparisons (bisect_right's own loop, Python's max and min), so it
 * returns the same cuts on every input, unsorted or NaN included; tests run both on random lists. It exists
 * because a plan search splits a model once per plan shape (~1,400 in six chunks of DeepSeek-V3's space),
 * some 30 greedy passes each, and that Python loop was 6-8 % of a search worker's time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_pyseq.h"

/* bisect.bisect_right's loop: the first index whose value is above x (lo = 0, hi = n). */
static Py_ssize_t bisect_right(const double *a, Py_ssize_t n, double x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (x < a[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Python's max(a, b) and min(a, b): the first argument unless the second compares above (below) it. */
static double py_max(double a, double b) { return b > a ? b : a; }
static double py_min(double a, double b) { return b < a ? b : a; }

/* The greedy cuts within ``limit`` into ``out`` (their count into *count): 1 where they fit, 0 where not.
 * pre holds n + 1 prefix sums (units n). */
static int fits(const double *pre, Py_ssize_t n, Py_ssize_t stages, double limit, Py_ssize_t *out,
                Py_ssize_t *count) {
    Py_ssize_t i = 0, k = 0;
    for (Py_ssize_t used = 1; used <= stages; used++) {
        Py_ssize_t j = bisect_right(pre, n + 1, pre[i] + limit) - 1;
        Py_ssize_t cap = n - (stages - used);
        if (cap < j) j = cap;
        if (j <= i) return 0; /* a unit over the limit */
        if (j >= n) {
            *count = k;
            return 1;
        }
        out[k++] = j;
        i = j;
    }
    return 0;
}

static PyObject *to_list(const Py_ssize_t *cuts, Py_ssize_t count) {
    PyObject *res = PyList_New(count);
    if (res == NULL) return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *v = PyLong_FromSsize_t(cuts[k]);
        if (v == NULL) {
            Py_DECREF(res);
            return NULL;
        }
        PyList_SET_ITEM(res, k, v);
    }
    return res;
}

/* cuts(pre, stages, top) -> list of cut indices, or None where no limit fits
 *   pre: the n + 1 prefix sums of the units' costs (pre[0] = 0.0), n >= 1
 *   stages: how many stages, 1 <= stages < n + 1
 *   top: the largest unit's cost, as Python's max() gives it
 */
static PyObject *cuts(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "cuts(pre, stages, top) takes 3 arguments");
        return NULL;
    }
    Py_ssize_t stages = PyLong_AsSsize_t(args[1]);
    if (stages == -1 && PyErr_Occurred()) return NULL;
    double top = PyFloat_AsDouble(args[2]);
    if (top == -1.0 && PyErr_Occurred()) return NULL;
    double *pre = NULL;
    Py_ssize_t len;
    if (read_doubles(args[0], "pre must be a sequence of floats", &pre, &len) < 0) return NULL;
    Py_ssize_t n = len - 1;
    if (n < 1 || stages < 1 || stages > n) {
        PyMem_Free(pre);
        PyErr_SetString(PyExc_ValueError, "cuts: needs at least two prefix sums and 1 <= stages <= units");
        return NULL;
    }
    /* Two halves of one allocation: the best cuts so far, and the trial's; swapped when a trial fits. */
    Py_ssize_t *halves = PyMem_Malloc(2 * stages * sizeof(Py_ssize_t));
    if (halves == NULL) {
        PyMem_Free(pre);
        return PyErr_NoMemory();
    }
    Py_ssize_t *best = halves, *trial = halves + stages;

    /* The bracket of layout._bisect_cuts: at least the largest unit and the mean stage, at most the mean stage
     * plus the largest unit (or everything, where rounding at that edge refuses it). */
    double total = pre[n];
    double lo = py_max(top, total / (double)stages), hi = py_min(total, total / (double)stages + top);
    Py_ssize_t nbest = 0, ntrial = 0;
    int found = fits(pre, n, stages, hi, best, &nbest);
    if (!found) {
        hi = total;
        found = fits(pre, n, stages, hi, best, &nbest);
    }
    for (int it = 0; it < 60; it++) {
        double mid = (lo + hi) / 2;
        if (fits(pre, n, stages, mid, trial, &ntrial)) {
            Py_ssize_t *swap = best;
            best = trial;
            trial = swap;
            nbest = ntrial;
            found = 1;
            hi = mid;
        } else {
            lo = mid;
        }
        if (hi - lo <= 1e-9 * hi) break;
    }
    PyObject *res = found ? to_list(best, nbest) : Py_NewRef(Py_None);
    PyMem_Free(pre);
    PyMem_Free(halves);
    return res;
}

static PyMethodDef methods[] = {
    {"cuts", (PyCFunction)(void (*)(void))cuts, METH_FASTCALL,
     "cuts(pre, stages, top): the balanced split's cut indices (layout._bisect_cuts in C), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_partition",
                                    "The balanced pipeline split's bisection (simulator.layout) in C.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__partition(void) { return PyModule_Create(&module); }
