"""libsubsae from Python through ctypes: no compiler, no build step.

    import numpy as np, subsae
    x = np.load("acts.npy")                    # (tokens, dim) float16/32/64
    buf = subsae.Buffer.wrap(x)                # borrowed: no copy
    s = subsae.Subspace(); s.fit(buf)
    print(s.effective_rank(0.99))              # (r, exact)

The shared library is found through the environment variable SUBSAE_LIB (a
file, or a directory holding libsubsae.so), else ../../build/libsubsae.so
next to this file, else the system's search path. Every C function of
include/subsae.h has its argtypes/restype declared on `lib`; the classes
below own the handles (freed by close(), `with`, or garbage collection) and
raise subsae.Error(status, reason, message) when a call fails.

numpy arrays cross without copying when their layout allows: a 2-D array
whose elements are contiguous within each row (stride of one element) and
whose rows are a whole number of elements apart - C-contiguous arrays and
row slices or column slices such as x[:, :64] of a wider array - is passed
as a pointer with that row stride. float32, float16 and float64 are passed
with their dtype and widened by the library; bfloat16 data (a uint16 array)
is passed with dtype="bf16". Outputs are numpy arrays the library writes
into directly.
"""

import ctypes
import ctypes.util
import os

import numpy as np

__all__ = [
    "Error", "lib", "version", "set_num_threads", "num_threads",
    "Buffer", "Batches", "Subspace", "Sae", "Trainer", "Metrics",
]

# ---- constants (fixed ABI values of include/subsae.h) --------------------

OK = 0
E_INVALID, E_NOMEM, E_IO, E_FORMAT, E_NONFINITE = -1, -2, -3, -4, -5
E_STATE, E_UNSUPPORTED, E_RANGE, E_CANCELLED = -6, -7, -8, -9

EVENT_PROGRESS, EVENT_LOG = 0, 1

DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_F64, DTYPE_I32 = 0, 1, 2, 3, 4
COPY, BORROW = 0, 1
FORMAT_MEMORY, FORMAT_NPY, FORMAT_SAFETENSORS = 0, 1, 2
BATCH_SHUFFLE, BATCH_DROP_LAST = 1, 2

METHOD_AUTO, METHOD_EXACT, METHOD_RANDOMIZED = 0, 1, 2
SUBSPACE_METHOD, SUBSPACE_RANK, SUBSPACE_OVERSAMPLE, SUBSPACE_POWER_ITERS = 0, 1, 2, 3
SUBSPACE_SEED, SUBSPACE_CENTER, SUBSPACE_BATCH_ROWS, SUBSPACE_THRESHOLD = 4, 5, 6, 7
SUBSPACE_METHOD_USED, SUBSPACE_DIM, SUBSPACE_ROWS = 100, 101, 102
SUBSPACE_RANK_FOUND, SUBSPACE_SECONDS = 103, 104

ACT_TOPK, ACT_BATCHTOPK, ACT_JUMPRELU, ACT_RELU, ACT_GATED = 0, 1, 2, 3, 4
PRECISION_FP32, PRECISION_BF16, PRECISION_AUTO = 0, 1, 2
PARAM_W_ENC, PARAM_B_ENC, PARAM_W_DEC, PARAM_B_DEC, PARAM_THRESHOLD = 0, 1, 2, 3, 4
PARAM_R_MAG, PARAM_B_MAG = 5, 6  # gated models only (b_enc is the gate bias, b_gate)
SAE_D_IN, SAE_D_OUT, SAE_D_SAE, SAE_ACTIVATION, SAE_K = 0, 1, 2, 3, 4
SAE_APPLY_B_DEC_TO_INPUT, SAE_RANK_BY_DECODER_NORM = 5, 6
SAE_INPUT_SCALE, SAE_OUTPUT_SCALE, SAE_TRANSCODER = 7, 8, 9
SAE_PRECISION = 10
SAE_SKIP = 11

OBJECT_TRAINER, OBJECT_SUBSPACE, OBJECT_SAE = 0, 1, 2
OPTION_INT, OPTION_DOUBLE = 0, 1
OPTION_READ_ONLY, OPTION_STRUCTURAL, OPTION_MIN_EXCLUSIVE = 1, 2, 4
OPTION_MAX_EXCLUSIVE, OPTION_ZERO_MEANS_AUTO, OPTION_CHOICE = 8, 16, 32

METRIC_NAMES = ("mse", "fvu", "explained_variance", "l0", "dead_fraction",
                "dead_features", "dense_fraction", "zero_frequency_fraction",
                "tokens", "steps", "loss", "lr", "loss_mse", "loss_sparsity", "loss_aux",
                "bf16_disagreement", "step_mse", "step_explained_variance", "step_l0")
METRIC_COUNT = len(METRIC_NAMES)

INIT_RANDOM, INIT_ACTIVE_SUBSPACE = 0, 1
DECODER_FREE, DECODER_UNIT = 0, 1

TRAIN_FEATURES, TRAIN_ACTIVATION, TRAIN_K, TRAIN_LR, TRAIN_BATCH = 0, 1, 2, 3, 4
TRAIN_WARMUP_STEPS, TRAIN_COOLDOWN_STEPS, TRAIN_CLIP_NORM, TRAIN_SEED = 5, 6, 7, 8
TRAIN_DEAD_WINDOW, TRAIN_INIT, TRAIN_SUBSPACE_DIM, TRAIN_SCALE_SEARCH = 9, 10, 11, 12
TRAIN_DECODER_NORM, TRAIN_SPARSE_ADAM, TRAIN_THREADS, TRAIN_INIT_SAMPLE = 13, 14, 15, 16
TRAIN_ADAM_BETA1, TRAIN_ADAM_BETA2, TRAIN_ADAM_EPS = 17, 18, 19
TRAIN_AUXK_COEF, TRAIN_AUXK_K, TRAIN_L1_COEF, TRAIN_L0_COEF = 20, 21, 22, 23
TRAIN_JUMPRELU_BANDWIDTH, TRAIN_INIT_THRESHOLD, TRAIN_SUBSPACE_COEFFICIENTS = 24, 25, 26
TRAIN_PRECISION = 27  # SUBSAE_PRECISION_*: 0 fp32, 1 bf16, 2 auto
TRAIN_COEF_WARMUP_STEPS = 28
MATRYOSHKA_MAX = 64  # most nested prefixes of a Matryoshka model
TRAIN_SKIP = 29
COEF_UNIFORM, COEF_GAUSSIAN = 0, 1

VERSION_MAJOR = 0  # the ABI this binding was written for

# ---- loading the library -------------------------------------------------


def _find_library():
    env = os.environ.get("SUBSAE_LIB")
    if env:
        return os.path.join(env, "libsubsae.so") if os.path.isdir(env) else env
    here = os.path.dirname(os.path.abspath(__file__))
    local = os.path.join(here, "..", "..", "build", "libsubsae.so")
    if os.path.exists(local):
        return os.path.normpath(local)
    found = ctypes.util.find_library("subsae")
    if found:
        return found
    raise ImportError("libsubsae.so not found: run `make` in the source tree or set "
                      "SUBSAE_LIB to the library (or its directory)")


lib = ctypes.CDLL(_find_library())

_c = ctypes
_i, _u, _i64, _u64, _d, _f = _c.c_int, _c.c_uint, _c.c_int64, _c.c_uint64, _c.c_double, _c.c_float
_p, _s = _c.c_void_p, _c.c_char_p
_pi, _pi64, _pd, _pf = (_c.POINTER(_c.c_int), _c.POINTER(_c.c_int64),
                        _c.POINTER(_c.c_double), _c.POINTER(_c.c_float))
_pi32, _pp, _ps = _c.POINTER(_c.c_int32), _c.POINTER(_c.c_void_p), _c.POINTER(_c.c_char_p)
_pu64 = _c.POINTER(_c.c_uint64)

CALLBACK = _c.CFUNCTYPE(_i, _i, _s, _i64, _i64, _s, _p)
# int (*)(void *data, int64_t count, int dtype, void *user): the caller's
# all-reduce (sum in place over the workers) for set_collective.
ALLREDUCE = _c.CFUNCTYPE(_i, _p, _i64, _i, _p)

# name: (restype, argtypes) for every function of include/subsae.h.
_PROTOTYPES = {
    "subsae_version_number": (_u, []),
    "subsae_version_string": (_s, []),
    "subsae_encoder_isa": (_s, []),
    "subsae_encoder_kernel": (_s, [_i]),
    "subsae_precision_resolve": (_i, [_i]),
    "subsae_status_string": (_s, [_i]),
    "subsae_reason_string": (_s, [_i]),
    "subsae_last_error": (_s, []),
    "subsae_last_error_status": (_i, []),
    "subsae_last_error_reason": (_i, []),
    "subsae_clear_error": (None, []),
    "subsae_set_num_threads": (_i, [_i]),
    "subsae_get_num_threads": (_i, []),
    "subsae_dtype_name": (_s, [_i]),
    # option metadata
    "subsae_option_count": (_i, [_i]),
    "subsae_option_id": (_i, [_i, _i]),
    "subsae_option_find": (_i, [_i, _s, _pi]),
    "subsae_option_info": (_i, [_i, _i, _ps, _pi, _pi, _ps]),
    "subsae_option_int_bounds": (_i, [_i, _i, _pi64, _pi64, _pi64]),
    "subsae_option_double_bounds": (_i, [_i, _i, _pd, _pd, _pd]),
    # buffers
    "subsae_buffer_create": (_i, [_i64, _pp]),
    "subsae_buffer_append": (_i, [_p, _p, _i, _i64, _i64]),
    "subsae_buffer_wrap": (_i, [_p, _i, _i64, _i64, _i64, _i, _pp]),
    "subsae_buffer_open": (_i, [_s, _s, _pp]),
    "subsae_buffer_open_shards": (_i, [_ps, _i64, _s, _pp]),
    "subsae_buffer_view": (_i, [_p, _i64, _i64, _pp]),
    "subsae_synth": (_i, [_i64, _i64, _i64, _i64, _i64, _u64, _pp, _pf]),
    "subsae_buffer_free": (None, [_p]),
    "subsae_buffer_rows": (_i64, [_p]),
    "subsae_buffer_dim": (_i64, [_p]),
    "subsae_buffer_read": (_i, [_p, _i64, _i64, _pf, _i64]),
    "subsae_buffer_gather": (_i, [_p, _pi64, _i64, _pf, _i64]),
    "subsae_buffer_skip_nonfinite": (_i, [_p, _pi64]),
    "subsae_buffer_stats": (_i, [_p, _pf, _pd, _pi64, _pi64]),
    "subsae_buffer_fingerprint": (_i, [_p, _i64, _pu64]),
    "subsae_buffer_save_npy": (_i, [_p, _s, _i]),
    "subsae_buffer_save_safetensors": (_i, [_p, _s, _s, _i]),
    "subsae_format_name": (_s, [_i]),
    "subsae_buffer_source_count": (_i64, [_p]),
    "subsae_buffer_source_info": (_i, [_p, _i64, _ps, _pi, _pi, _pi, _pi64, _i]),
    # batches
    "subsae_batches_create": (_i, [_p, _i64, _u64, _i, _pp]),
    "subsae_batches_next_indices": (_i, [_p, _pi64, _pi64, _pi64]),
    "subsae_batches_next": (_i, [_p, _pf, _i64, _pi64, _pi64]),
    "subsae_batches_tell": (_i, [_p, _pi64, _pi64]),
    "subsae_batches_seek": (_i, [_p, _i64, _i64]),
    "subsae_batches_free": (None, [_p]),
    # subspace
    "subsae_subspace_create": (_i, [_pp]),
    "subsae_subspace_free": (None, [_p]),
    "subsae_subspace_set_int": (_i, [_p, _i, _i64]),
    "subsae_subspace_get_int": (_i, [_p, _i, _pi64]),
    "subsae_subspace_set_double": (_i, [_p, _i, _d]),
    "subsae_subspace_get_double": (_i, [_p, _i, _pd]),
    "subsae_subspace_set_callback": (_i, [_p, CALLBACK, _p]),
    "subsae_subspace_set_collective": (_i, [_p, ALLREDUCE, _i64, _i64, _p]),
    "subsae_subspace_fit": (_i, [_p, _p]),
    "subsae_subspace_variances": (_i, [_p, _pd, _i64]),
    "subsae_subspace_singular_values": (_i, [_p, _pd, _i64]),
    "subsae_subspace_explained_ratios": (_i, [_p, _pd, _i64]),
    "subsae_subspace_total_variance": (_i, [_p, _pd]),
    "subsae_subspace_mean": (_i, [_p, _pf]),
    "subsae_subspace_basis": (_i, [_p, _i64, _pf, _i64]),
    "subsae_subspace_effective_rank": (_i, [_p, _d, _pi64, _pi]),
    "subsae_subspace_entropy_rank": (_i, [_p, _pd, _pi]),
    "subsae_subspace_project": (_i, [_p, _pf, _i64, _i64, _i64, _pf, _i64]),
    "subsae_subspace_reconstruct": (_i, [_p, _pf, _i64, _i64, _i64, _pf, _i64]),
    # models
    "subsae_activation_name": (_s, [_i]),
    "subsae_sae_create": (_i, [_i64, _i64, _i64, _i, _pp]),
    "subsae_sae_clone": (_i, [_p, _pp]),
    "subsae_sae_free": (None, [_p]),
    "subsae_sae_set_int": (_i, [_p, _i, _i64]),
    "subsae_sae_get_int": (_i, [_p, _i, _pi64]),
    "subsae_sae_set_double": (_i, [_p, _i, _d]),
    "subsae_sae_get_double": (_i, [_p, _i, _pd]),
    "subsae_sae_param_size": (_i64, [_p, _i]),
    "subsae_sae_get_param": (_i, [_p, _i, _pf, _i64]),
    "subsae_sae_set_param": (_i, [_p, _i, _pf, _i64]),
    "subsae_sae_fold_scales": (_i, [_p]),
    "subsae_sae_encode": (_i, [_p, _pf, _i64, _i64, _pf, _i64]),
    "subsae_sae_encode_sparse": (_i, [_p, _pf, _i64, _i64, _i64, _pi32, _pf]),
    "subsae_sae_decode": (_i, [_p, _pf, _i64, _i64, _pf, _i64]),
    "subsae_sae_decode_sparse": (_i, [_p, _pi32, _pf, _i64, _i64, _pf, _i64]),
    "subsae_sae_add_skip": (_i, [_p, _pf, _i64, _i64, _pf, _i64]),
    "subsae_metric_count": (_i, []),
    "subsae_sae_evaluate": (_i, [_p, _p, _p, _pd, _i64]),
    "subsae_sae_evaluate_density": (_i, [_p, _p, _p, _pd, _i64, _pd, _i64]),
    "subsae_sae_save_sparsity": (_i, [_p, _s, _pd, _i64]),
    "subsae_sae_set_metadata": (_i, [_p, _s]),
    "subsae_sae_get_metadata": (_i, [_p, _ps]),
    "subsae_sae_save": (_i, [_p, _s]),
    "subsae_sae_load": (_i, [_s, _pp]),
    "subsae_sae_get_matryoshka": (_i, [_p, _pi64, _i, _pi]),
    "subsae_sae_evaluate_prefixes": (_i, [_p, _p, _p, _pd, _i, _pi]),
    # trainer
    "subsae_trainer_create": (_i, [_pp]),
    "subsae_trainer_free": (None, [_p]),
    "subsae_trainer_set_int": (_i, [_p, _i, _i64]),
    "subsae_trainer_get_int": (_i, [_p, _i, _pi64]),
    "subsae_trainer_set_double": (_i, [_p, _i, _d]),
    "subsae_trainer_get_double": (_i, [_p, _i, _pd]),
    "subsae_trainer_set_callback": (_i, [_p, CALLBACK, _p]),
    "subsae_trainer_set_collective": (_i, [_p, ALLREDUCE, _i64, _i64, _p]),
    "subsae_trainer_init": (_i, [_p, _p, _p]),
    "subsae_trainer_step": (_i, [_p, _pf, _i64, _pf, _i64, _i64]),
    "subsae_trainer_fit": (_i, [_p, _p, _p, _i64]),
    "subsae_trainer_metrics": (_i, [_p, _pd, _i64]),
    "subsae_trainer_feature_density": (_i, [_p, _pd, _i64]),
    "subsae_trainer_set_metadata": (_i, [_p, _s]),
    "subsae_trainer_get_metadata": (_i, [_p, _ps]),
    "subsae_trainer_sae": (_p, [_p]),
    "subsae_phase_count": (_i, []),
    "subsae_phase_name": (_s, [_i]),
    "subsae_trainer_timings": (_i, [_p, _pd, _i64]),
    "subsae_trainer_reset_timings": (_i, [_p]),
    "subsae_trainer_save_checkpoint": (_i, [_p, _s]),
    "subsae_trainer_load_checkpoint": (_i, [_s, _pp]),
    "subsae_trainer_set_matryoshka": (_i, [_p, _pi64, _i]),
}



class _Missing:
    """Stands for a function the loaded library does not export (a library
    older than this binding): calling it raises Error(E_UNSUPPORTED)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *args):
        raise Error(E_UNSUPPORTED, 0, "%s does not export %s" % (lib._name, self.name))


MISSING = []  # names of the functions the loaded library does not export
for _name, (_res, _args) in _PROTOTYPES.items():
    try:
        _fn = getattr(lib, _name)
    except AttributeError:
        MISSING.append(_name)
        setattr(lib, _name, _Missing(_name))
        continue
    _fn.restype = _res
    _fn.argtypes = _args

if lib.subsae_version_number() // 10000 != VERSION_MAJOR:
    raise ImportError("libsubsae %s is not ABI version %d"
                      % (lib.subsae_version_string().decode(), VERSION_MAJOR))

# ---- errors --------------------------------------------------------------


class Error(Exception):
    """A libsubsae call failed: status (E_*), reason (REASON_*), message."""

    def __init__(self, status, reason, message):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__("%s: %s (%s)" % (self.status_name, message, self.reason_name))

    @property
    def status_name(self):
        return lib.subsae_status_string(self.status).decode()

    @property
    def reason_name(self):
        return lib.subsae_reason_string(self.reason).decode()


def _check(status):
    if status != OK:
        raise Error(status, lib.subsae_last_error_reason(),
                    lib.subsae_last_error().decode("utf-8", "replace"))


def _bytes(s):
    if s is None:
        return None
    return os.fsencode(s)


def version():
    return lib.subsae_version_string().decode()


def encoder_isa():
    """oneDNN's instruction set for the encoder's product ("avx512_core_bf16", ...)."""
    return lib.subsae_encoder_isa().decode()


def encoder_kernel(precision=PRECISION_AUTO):
    """The kernel of the encoder's product at a precision (PRECISION_*)."""
    return lib.subsae_encoder_kernel(precision).decode()


def precision_resolve(precision=PRECISION_AUTO):
    """What PRECISION_AUTO means here: PRECISION_BF16 or PRECISION_FP32."""
    return lib.subsae_precision_resolve(precision)


def set_num_threads(n):
    _check(lib.subsae_set_num_threads(n))


def num_threads():
    return lib.subsae_get_num_threads()


# ---- numpy arrays across the boundary ------------------------------------

_DTYPES = {np.dtype(np.float32): DTYPE_F32, np.dtype(np.float16): DTYPE_F16,
           np.dtype(np.float64): DTYPE_F64}
_NAMED = {"f32": DTYPE_F32, "f16": DTYPE_F16, "bf16": DTYPE_BF16, "f64": DTYPE_F64}


def _row_layout(a):
    """(rows, cols, row stride in elements) if `a` can be passed as is."""
    if a.ndim != 2:
        raise ValueError("expected a 2-D array (tokens x dim), got shape %s" % (a.shape,))
    item = a.itemsize
    rows, cols = a.shape
    s0, s1 = a.strides
    if rows > 1 and (s0 <= 0 or s0 % item):
        return None
    if cols > 1 and s1 != item:
        return None
    stride = s0 // item if rows > 1 else cols
    if stride < cols:
        return None
    return rows, cols, stride


def _dtype_code(a, dtype):
    if dtype is not None:
        code = _NAMED.get(dtype, dtype)
        if code not in (DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_F64):
            raise ValueError("dtype must be one of f32, f16, bf16, f64")
        want = {DTYPE_F32: 4, DTYPE_F16: 2, DTYPE_BF16: 2, DTYPE_F64: 8}[code]
        if a.itemsize != want:
            raise ValueError("dtype %s needs %d-byte elements, the array has %d"
                             % (dtype, want, a.itemsize))
        return code
    try:
        return _DTYPES[a.dtype]
    except KeyError:
        raise ValueError("unsupported dtype %s (float32, float16, float64; "
                         "bfloat16 as uint16 with dtype='bf16')" % a.dtype) from None


def _rows_any(a, dtype=None):
    """(array kept alive, pointer, rows, cols, stride, dtype code) for an
    input of any supported dtype, copying only when the layout requires."""
    a = np.asarray(a)
    code = _dtype_code(a, dtype)
    layout = _row_layout(a)
    if layout is None:
        a = np.ascontiguousarray(a)
        layout = _row_layout(a)
    rows, cols, stride = layout
    return a, _c.c_void_p(a.ctypes.data), rows, cols, stride, code


def _rows_f32(a):
    """(array kept alive, float pointer, rows, cols, stride) for a float32
    input, converting (a copy) only when it is not float32 or not
    row-strided."""
    a = np.asarray(a)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    layout = _row_layout(a)
    if layout is None:
        a = np.ascontiguousarray(a)
        layout = _row_layout(a)
    rows, cols, stride = layout
    return a, a.ctypes.data_as(_pf), rows, cols, stride


def _out_f32(shape):
    a = np.empty(shape, dtype=np.float32)
    return a, a.ctypes.data_as(_pf)


def _fpointer(a):
    return a.ctypes.data_as(_pf)


# ---- callbacks -----------------------------------------------------------


class _Callback:
    """Holds the ctypes thunk (which must stay alive while registered) and
    any exception the Python function raised, to re-raise after the call."""

    def __init__(self, fn):
        self.fn = fn
        self.exception = None
        self.thunk = CALLBACK(self._call)

    def _call(self, event, phase, done, total, message, user):
        try:
            keep_going = self.fn(event, phase.decode() if phase else "", done, total,
                                 message.decode() if message else None)
            return 0 if keep_going is None or keep_going else 1
        except BaseException as e:  # never unwind through C
            self.exception = e
            return 1

    def rethrow(self):
        if self.exception is not None:
            e, self.exception = self.exception, None
            raise e


class _Allreduce:
    """Holds the ctypes thunk of a set_collective all-reduce: fn(array)
    sums the float32 / float64 numpy array over the workers in place, e.g.
    with mpi4py: lambda a: comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)."""

    def __init__(self, fn):
        self.fn = fn
        self.thunk = ALLREDUCE(self._call)

    def _call(self, data, count, dtype, user):
        try:
            ctype = _c.c_double if dtype == DTYPE_F64 else _c.c_float
            array = np.ctypeslib.as_array(_c.cast(data, _c.POINTER(ctype)), shape=(count,))
            result = self.fn(array)
            return 0 if result is None else int(result)
        except BaseException:  # never unwind through C: the library reports the failure
            return 1


def _set_collective(function, ptr, fn, rank, size):
    ar = _Allreduce(fn) if fn is not None else None
    _check(function(ptr, ar.thunk if ar else ALLREDUCE(), rank, size, None))
    return ar


def _with_callback(cb, status):
    if cb is not None:
        cb.rethrow()
    _check(status)


# ---- handles -------------------------------------------------------------


class _Handle:
    _free = None

    def __init__(self, ptr):
        self._ptr = ptr

    @property
    def ptr(self):
        if not self._ptr:
            raise ValueError("%s is closed" % type(self).__name__)
        return self._ptr

    def close(self):
        if self._ptr:
            type(self)._free(self._ptr)
            self._ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _new(create, *args):
    p = _c.c_void_p()
    _check(create(*args, _c.byref(p)))
    return p.value


class Buffer(_Handle):
    """A logical rows x dim float32 matrix of activations."""

    _free = lib.subsae_buffer_free

    def __init__(self, ptr, keep=None):
        super().__init__(ptr)
        self._keep = keep  # borrowed numpy memory stays alive with the buffer

    @classmethod
    def create(cls, dim):
        """An empty growable buffer of width `dim`."""
        return cls(_new(lib.subsae_buffer_create, dim))

    @classmethod
    def synth(cls, dim, subspace_dim, features, k, tokens, seed=0):
        """Synthetic activations made of `k` of `features` known unit atoms
        per row, the atoms lying in a random `subspace_dim`-dimensional
        subspace. Returns (buffer, atoms as a features x dim array)."""
        atoms = np.zeros((features, dim), dtype=np.float32)
        p = _c.c_void_p()
        _check(lib.subsae_synth(dim, subspace_dim, features, k, tokens, seed, _c.byref(p),
                                atoms.ctypes.data_as(_pf)))
        return cls(p.value), atoms

    @classmethod
    def open(cls, path, tensor=None):
        """A .npy or safetensors file (memory-mapped)."""
        return cls(_new(lib.subsae_buffer_open, _bytes(path), _bytes(tensor)))

    @classmethod
    def open_shards(cls, paths, tensor=None):
        arr = (_c.c_char_p * len(paths))(*[_bytes(p) for p in paths])
        return cls(_new(lib.subsae_buffer_open_shards, arr, len(paths), _bytes(tensor)))

    @classmethod
    def wrap(cls, array, copy=False, dtype=None):
        """A buffer over a 2-D numpy array (tokens x dim). Borrowed by
        default: no copy, the array is kept alive by the buffer and must not
        change. float32/float16/float64 by the array's dtype; pass
        dtype='bf16' for bfloat16 bits in a uint16 array. An array whose rows
        are not element-contiguous is copied first (copy=True always copies
        into library memory)."""
        a = np.asarray(array)
        code = _dtype_code(a, dtype)
        layout = _row_layout(a)
        if layout is None:
            a = np.ascontiguousarray(a)
            layout = _row_layout(a)
        rows, cols, stride = layout
        ptr = _new(lib.subsae_buffer_wrap, _c.c_void_p(a.ctypes.data), code, rows, cols,
                   stride, COPY if copy else BORROW)
        return cls(ptr, None if copy else a)

    def view(self, first, n):
        """Rows [first, first + n) as a buffer sharing this one's storage
        (keeps this buffer alive)."""
        return Buffer(_new(lib.subsae_buffer_view, self.ptr, first, n), self)

    def append(self, rows, dtype=None):
        """Append the rows of a 2-D array (widened and copied)."""
        a, p, n, cols, stride, code = _rows_any(rows, dtype)
        if cols != self.dim:
            raise ValueError("rows have %d columns, the buffer %d" % (cols, self.dim))
        _check(lib.subsae_buffer_append(self.ptr, p, code, n, stride))

    @property
    def rows(self):
        return lib.subsae_buffer_rows(self.ptr)

    @property
    def dim(self):
        return lib.subsae_buffer_dim(self.ptr)

    def __len__(self):
        return self.rows

    def read(self, first=0, n=None, out=None):
        """Rows [first, first + n) as float32 (into `out` if given)."""
        if n is None:
            n = self.rows - first
        if out is None:
            out = np.empty((n, self.dim), dtype=np.float32)
        layout = _row_layout(out) if out.dtype == np.float32 else None
        if layout is None or layout[0] < n or layout[1] != self.dim or not out.flags.writeable:
            raise ValueError("out must be a writable float32 array of %d x %d with "
                             "element-contiguous rows" % (n, self.dim))
        _check(lib.subsae_buffer_read(self.ptr, first, n, _fpointer(out), layout[2]))
        return out

    def gather(self, rows):
        idx = np.ascontiguousarray(rows, dtype=np.int64)
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        _check(lib.subsae_buffer_gather(self.ptr, idx.ctypes.data_as(_pi64), len(idx),
                                        _fpointer(out), self.dim))
        return out

    def skip_nonfinite(self):
        skipped = _c.c_int64()
        _check(lib.subsae_buffer_skip_nonfinite(self.ptr, _c.byref(skipped)))
        return skipped.value

    def fingerprint(self, sample_rows=256):
        """A 64-bit hash of the size and of sample rows (to tell data apart)."""
        out = _c.c_uint64()
        _check(lib.subsae_buffer_fingerprint(self.ptr, sample_rows, _c.byref(out)))
        return out.value

    def stats(self):
        """dict: mean, mean_norm, nonfinite_values, first_nonfinite_row."""
        mean = np.empty(self.dim, dtype=np.float32)
        norm, bad, first = _c.c_double(), _c.c_int64(), _c.c_int64()
        _check(lib.subsae_buffer_stats(self.ptr, _fpointer(mean), _c.byref(norm),
                                       _c.byref(bad), _c.byref(first)))
        return {"mean": mean, "mean_norm": norm.value, "nonfinite_values": bad.value,
                "first_nonfinite_row": first.value}

    def save_npy(self, path, dtype="f32"):
        _check(lib.subsae_buffer_save_npy(self.ptr, _bytes(path), _NAMED.get(dtype, dtype)))

    def save_safetensors(self, path, tensor, dtype="f32"):
        _check(lib.subsae_buffer_save_safetensors(self.ptr, _bytes(path), _bytes(tensor),
                                                  _NAMED.get(dtype, dtype)))

    @property
    def source_count(self):
        return lib.subsae_buffer_source_count(self.ptr)

    def source_info(self, i):
        """dict: path, format, dtype, shape."""
        path = _c.c_char_p()
        fmt, dt, ndim = _c.c_int(), _c.c_int(), _c.c_int()
        shape = (_c.c_int64 * 8)()
        _check(lib.subsae_buffer_source_info(self.ptr, i, _c.byref(path), _c.byref(fmt),
                                             _c.byref(dt), _c.byref(ndim), shape, 8))
        return {"path": os.fsdecode(path.value) if path.value else None,
                "format": lib.subsae_format_name(fmt.value).decode(),
                "dtype": lib.subsae_dtype_name(dt.value).decode(),
                "shape": tuple(shape[: max(0, min(ndim.value, 8))])}


class Batches(_Handle):
    """Batches of a buffer, epoch after epoch (keeps the buffer alive)."""

    _free = lib.subsae_batches_free

    def __init__(self, buffer, batch_size, seed=0, flags=BATCH_SHUFFLE):
        super().__init__(_new(lib.subsae_batches_create, buffer.ptr, batch_size, seed, flags))
        self._buffer = buffer
        self._batch = batch_size
        self._dim = buffer.dim

    def next(self):
        """(rows as a float32 array, epoch)."""
        out = np.empty((self._batch, self._dim), dtype=np.float32)
        n, epoch = _c.c_int64(), _c.c_int64()
        _check(lib.subsae_batches_next(self.ptr, _fpointer(out), self._dim, _c.byref(n),
                                       _c.byref(epoch)))
        return out[: n.value], epoch.value

    def next_indices(self):
        rows = np.empty(self._batch, dtype=np.int64)
        n, epoch = _c.c_int64(), _c.c_int64()
        _check(lib.subsae_batches_next_indices(self.ptr, rows.ctypes.data_as(_pi64),
                                               _c.byref(n), _c.byref(epoch)))
        return rows[: n.value], epoch.value

    def tell(self):
        epoch, position = _c.c_int64(), _c.c_int64()
        _check(lib.subsae_batches_tell(self.ptr, _c.byref(epoch), _c.byref(position)))
        return epoch.value, position.value

    def seek(self, epoch, position):
        _check(lib.subsae_batches_seek(self.ptr, epoch, position))


def _option(obj, name):
    """The option of obj (OBJECT_*) called name, as the library names it; an
    unknown name is a TypeError, as for any unknown keyword."""
    try:
        return find_option(obj, name)
    except Error as e:
        raise TypeError(e.message) from None


_option_is_double = {}


def _is_double(obj, option):
    """Whether option takes a double: the library's word (subsae_option_info)."""
    key = (obj, option)
    if key not in _option_is_double:
        kind = _c.c_int()
        _check(lib.subsae_option_info(obj, option, None, _c.byref(kind), None, None))
        _option_is_double[key] = kind.value == OPTION_DOUBLE
    return _option_is_double[key]


class _Options:
    """get/set of typed options keyed by enum values; which setter an option
    takes is the library's word, not this binding's."""

    _object = None
    _set_int = _get_int = _set_double = _get_double = None

    def set(self, option, value):
        if _is_double(self._object, option):
            _check(type(self)._set_double(self.ptr, option, float(value)))
        else:
            _check(type(self)._set_int(self.ptr, option, int(value)))

    def get(self, option):
        if _is_double(self._object, option):
            v = _c.c_double()
            _check(type(self)._get_double(self.ptr, option, _c.byref(v)))
        else:
            v = _c.c_int64()
            _check(type(self)._get_int(self.ptr, option, _c.byref(v)))
        return v.value


class Subspace(_Handle, _Options):
    """Spectrum, effective rank and principal directions of a buffer."""

    _free = lib.subsae_subspace_free
    _object = OBJECT_SUBSPACE
    _set_int, _get_int = lib.subsae_subspace_set_int, lib.subsae_subspace_get_int
    _set_double, _get_double = lib.subsae_subspace_set_double, lib.subsae_subspace_get_double

    def __init__(self, **options):
        """Options by name, e.g. Subspace(method=METHOD_EXACT, rank=32)."""
        super().__init__(_new(lib.subsae_subspace_create))
        self._callback = None
        self._allreduce = None
        for name, value in options.items():
            self.set(_option(OBJECT_SUBSPACE, name), value)

    def set_callback(self, fn):
        """fn(event, phase, done, total, message) -> False to cancel; None
        removes it. An exception raised by fn stops fit and is re-raised."""
        cb = _Callback(fn) if fn is not None else None
        _check(lib.subsae_subspace_set_callback(self.ptr, cb.thunk if cb else CALLBACK(), None))
        self._callback = cb

    def set_collective(self, allreduce, rank=0, size=1):
        """Worker `rank` of `size`: fit then fits the union of the workers'
        buffers. allreduce(array) sums a numpy array in place over the
        workers; None detaches."""
        self._allreduce = _set_collective(lib.subsae_subspace_set_collective, self.ptr,
                                          allreduce, rank, size)

    def fit(self, buffer):
        _with_callback(self._callback, lib.subsae_subspace_fit(self.ptr, buffer.ptr))
        return self

    @property
    def dim(self):
        return self.get(SUBSPACE_DIM)

    def _doubles_out(self, fn, count):
        if count is None:
            count = self.get(SUBSPACE_RANK_FOUND)
        out = np.empty(count, dtype=np.float64)
        _check(fn(self.ptr, out.ctypes.data_as(_pd), count))
        return out

    def variances(self, count=None):
        return self._doubles_out(lib.subsae_subspace_variances, count)

    def singular_values(self, count=None):
        return self._doubles_out(lib.subsae_subspace_singular_values, count)

    def explained_ratios(self, count=None):
        return self._doubles_out(lib.subsae_subspace_explained_ratios, count)

    def total_variance(self):
        v = _c.c_double()
        _check(lib.subsae_subspace_total_variance(self.ptr, _c.byref(v)))
        return v.value

    def mean(self):
        out = np.empty(self.dim, dtype=np.float32)
        _check(lib.subsae_subspace_mean(self.ptr, _fpointer(out)))
        return out

    def basis(self, k):
        """The top k directions, a k x d array (orthonormal rows)."""
        out = np.empty((k, self.dim), dtype=np.float32)
        _check(lib.subsae_subspace_basis(self.ptr, k, _fpointer(out), self.dim))
        return out

    def effective_rank(self, tau=0.99):
        """(r, exact)."""
        r, exact = _c.c_int64(), _c.c_int()
        _check(lib.subsae_subspace_effective_rank(self.ptr, tau, _c.byref(r), _c.byref(exact)))
        return r.value, bool(exact.value)

    def entropy_rank(self):
        """(rank, exact)."""
        r, exact = _c.c_double(), _c.c_int()
        _check(lib.subsae_subspace_entropy_rank(self.ptr, _c.byref(r), _c.byref(exact)))
        return r.value, bool(exact.value)

    def project(self, x, k):
        a, p, n, _, stride = _rows_f32(x)
        out = np.empty((n, k), dtype=np.float32)
        _check(lib.subsae_subspace_project(self.ptr, p, n, stride, k, _fpointer(out), k))
        return out

    def reconstruct(self, coords):
        a, p, n, k, stride = _rows_f32(coords)
        out = np.empty((n, self.dim), dtype=np.float32)
        _check(lib.subsae_subspace_reconstruct(self.ptr, p, n, stride, k, _fpointer(out),
                                               self.dim))
        return out


class Metrics(dict):
    """Metrics by name (METRIC_NAMES); NaN where a metric does not apply."""

    @classmethod
    def _from(cls, values):
        return cls(zip(METRIC_NAMES, (float(v) for v in values)))

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _SaeOps(_Options):
    """Operations on a model, owned (Sae) or the one a trainer trains."""

    _object = OBJECT_SAE
    _set_int, _get_int = lib.subsae_sae_set_int, lib.subsae_sae_get_int
    _set_double, _get_double = lib.subsae_sae_set_double, lib.subsae_sae_get_double

    @property
    def d_in(self):
        return self.get(SAE_D_IN)

    @property
    def d_out(self):
        return self.get(SAE_D_OUT)

    @property
    def d_sae(self):
        return self.get(SAE_D_SAE)

    def param(self, param):
        n = lib.subsae_sae_param_size(self.ptr, param)
        if n < 0:
            raise ValueError("unknown parameter %r" % (param,))
        out = np.empty(n, dtype=np.float32)
        _check(lib.subsae_sae_get_param(self.ptr, param, _fpointer(out), n))
        return out

    def encode(self, x):
        """Dense codes (n x d_sae) of raw rows."""
        a, p, n, _, stride = _rows_f32(x)
        f = self.d_sae
        z = np.empty((n, f), dtype=np.float32)
        _check(lib.subsae_sae_encode(self.ptr, p, n, stride, _fpointer(z), f))
        return z

    def encode_sparse(self, x, slots=None):
        """(indices int32, values float32), both n x slots, largest first;
        index -1 marks an unused slot. slots defaults to the model's k."""
        if slots is None:
            slots = self.get(SAE_K)
        a, p, n, _, stride = _rows_f32(x)
        idx = np.empty((n, slots), dtype=np.int32)
        val = np.empty((n, slots), dtype=np.float32)
        _check(lib.subsae_sae_encode_sparse(self.ptr, p, n, stride, slots,
                                            idx.ctypes.data_as(_pi32), _fpointer(val)))
        return idx, val

    def decode(self, z):
        a, p, n, _, stride = _rows_f32(z)
        out = np.empty((n, self.d_out), dtype=np.float32)
        _check(lib.subsae_sae_decode(self.ptr, p, n, stride, _fpointer(out), self.d_out))
        return out

    def decode_sparse(self, indices, values):
        idx = np.ascontiguousarray(indices, dtype=np.int32)
        val = np.ascontiguousarray(values, dtype=np.float32)
        if idx.shape != val.shape or idx.ndim != 2:
            raise ValueError("indices and values must be n x slots arrays of the same shape")
        n, slots = idx.shape
        out = np.empty((n, self.d_out), dtype=np.float32)
        _check(lib.subsae_sae_decode_sparse(self.ptr, idx.ctypes.data_as(_pi32),
                                            _fpointer(val), n, slots, _fpointer(out),
                                            self.d_out))
        return out

    def add_skip(self, x, out):
        """A skip transcoder's linear path: out (n x d_out float32, e.g. a
        decode) += x W_skip^T for the input rows x; nothing for other models."""
        a, p, n, _, stride = _rows_f32(x)
        if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and
                out.flags.c_contiguous and out.shape == (n, self.d_out)):
            raise ValueError("out must be a C-contiguous float32 array of %d x %d"
                             % (n, self.d_out))
        _check(lib.subsae_sae_add_skip(self.ptr, p, n, stride, _fpointer(out), self.d_out))
        return out

    def evaluate(self, input, target=None):
        """Metrics on all rows of a Buffer (or a 2-D array, borrowed)."""
        inp = input if isinstance(input, Buffer) else Buffer.wrap(input)
        tgt = target if target is None or isinstance(target, Buffer) else Buffer.wrap(target)
        out = np.empty(METRIC_COUNT, dtype=np.float64)
        _check(lib.subsae_sae_evaluate(self.ptr, inp.ptr, tgt.ptr if tgt else None,
                                       out.ctypes.data_as(_pd), METRIC_COUNT))
        return Metrics._from(out)

    def evaluate_density(self, input, target=None):
        """(Metrics, densities): each feature's share of the rows it fires on."""
        inp = input if isinstance(input, Buffer) else Buffer.wrap(input)
        tgt = target if target is None or isinstance(target, Buffer) else Buffer.wrap(target)
        out = np.empty(METRIC_COUNT, dtype=np.float64)
        density = np.empty(self.d_sae, dtype=np.float64)
        _check(lib.subsae_sae_evaluate_density(self.ptr, inp.ptr, tgt.ptr if tgt else None,
                                               out.ctypes.data_as(_pd), METRIC_COUNT,
                                               density.ctypes.data_as(_pd), self.d_sae))
        return Metrics._from(out), density

    @property
    def matryoshka(self):
        """The Matryoshka prefix widths (an empty list for a plain model)."""
        widths = (_c.c_int64 * MATRYOSHKA_MAX)()
        count = _c.c_int()
        _check(lib.subsae_sae_get_matryoshka(self.ptr, widths, MATRYOSHKA_MAX,
                                             _c.byref(count)))
        return list(widths[:count.value])

    def evaluate_prefixes(self, input, target=None):
        """Explained variance of each Matryoshka prefix (one value for a
        plain model), the last the model's."""
        inp = input if isinstance(input, Buffer) else Buffer.wrap(input)
        tgt = target if target is None or isinstance(target, Buffer) else Buffer.wrap(target)
        out = np.empty(MATRYOSHKA_MAX, dtype=np.float64)
        count = _c.c_int()
        _check(lib.subsae_sae_evaluate_prefixes(self.ptr, inp.ptr, tgt.ptr if tgt else None,
                                                out.ctypes.data_as(_pd), MATRYOSHKA_MAX,
                                                _c.byref(count)))
        return out[:count.value].copy()

    def save_sparsity(self, path, density):
        """SAELens' sparsity.safetensors (log10 densities) at path."""
        d = np.ascontiguousarray(density, dtype=np.float64)
        _check(lib.subsae_sae_save_sparsity(self.ptr, _bytes(path), d.ctypes.data_as(_pd),
                                            d.size))

    @property
    def transcoder(self):
        return bool(self.get(SAE_TRANSCODER))

    @property
    def precision(self):
        """PRECISION_FP32 or PRECISION_BF16: the encoder's product (a bf16
        model holds only a bf16 W_enc)."""
        return self.get(SAE_PRECISION)

    @property
    def skip(self):
        """A skip transcoder (its output adds x W_skip^T: see add_skip)."""
        return bool(self.get(SAE_SKIP))

    @property
    def metadata(self):
        """The caller metadata saved in cfg.json, as a JSON text."""
        text = _c.c_char_p()
        _check(lib.subsae_sae_get_metadata(self.ptr, _c.byref(text)))
        return text.value.decode()

    def save(self, directory):
        """An SAELens-layout directory (scales folded in)."""
        _check(lib.subsae_sae_save(self.ptr, _bytes(directory)))

    def clone(self):
        return Sae(_new(lib.subsae_sae_clone, self.ptr))


class Sae(_Handle, _SaeOps):
    """An owned SAE or transcoder."""

    _free = lib.subsae_sae_free

    @classmethod
    def create(cls, d_in, d_out, d_sae, activation=ACT_TOPK):
        return cls(_new(lib.subsae_sae_create, d_in, d_out, d_sae, activation))

    @classmethod
    def load(cls, directory):
        return cls(_new(lib.subsae_sae_load, _bytes(directory)))

    def set_param(self, param, values):
        v = np.ascontiguousarray(values, dtype=np.float32).ravel()
        _check(lib.subsae_sae_set_param(self.ptr, param, _fpointer(v), v.size))

    def fold_scales(self):
        _check(lib.subsae_sae_fold_scales(self.ptr))

    @_SaeOps.precision.setter
    def precision(self, value):
        """PRECISION_FP32, PRECISION_BF16 (refused without native bf16) or
        PRECISION_AUTO."""
        self.set(SAE_PRECISION, value)


class _TrainerModel(_SaeOps):
    """The model a Trainer is training (not owned; keeps the trainer alive)."""

    def __init__(self, trainer, ptr):
        self._trainer = trainer
        self._ptr = ptr

    @property
    def ptr(self):
        self._trainer.ptr  # raises if the trainer was closed
        return self._ptr


class Trainer(_Handle, _Options):
    """Trains a TopK SAE (or transcoder) with active-subspace initialisation."""

    _free = lib.subsae_trainer_free
    _object = OBJECT_TRAINER
    _set_int, _get_int = lib.subsae_trainer_set_int, lib.subsae_trainer_get_int
    _set_double, _get_double = lib.subsae_trainer_set_double, lib.subsae_trainer_get_double

    def __init__(self, ptr=None, **options):
        """Options by name, e.g. Trainer(features=256, k=8, seed=1)."""
        super().__init__(ptr if ptr is not None else _new(lib.subsae_trainer_create))
        self._callback = None
        self._allreduce = None
        for name, value in options.items():
            self.set(_option(OBJECT_TRAINER, name), value)

    @classmethod
    def load_checkpoint(cls, directory):
        return cls(_new(lib.subsae_trainer_load_checkpoint, _bytes(directory)))

    def set_callback(self, fn):
        """fn(event, phase, done, total, message) -> False to cancel; None
        removes it. An exception raised by fn stops the call and is
        re-raised from it."""
        cb = _Callback(fn) if fn is not None else None
        _check(lib.subsae_trainer_set_callback(self.ptr, cb.thunk if cb else CALLBACK(), None))
        self._callback = cb

    def set_matryoshka(self, widths):
        """Train a Matryoshka SAE (topk, batchtopk) with nested prefixes of
        these widths, strictly increasing, the last = features; [] for a
        plain one. Before init."""
        w = (_c.c_int64 * max(len(widths), 1))(*widths)
        _check(lib.subsae_trainer_set_matryoshka(self.ptr, w, len(widths)))

    def set_collective(self, allreduce, rank=0, size=1):
        """Data-parallel worker `rank` of `size` (init, step and fit become
        collective; batch is the global batch). allreduce(array) sums a
        numpy array in place over the workers; None detaches."""
        self._allreduce = _set_collective(lib.subsae_trainer_set_collective, self.ptr,
                                          allreduce, rank, size)

    def init(self, input, target=None):
        _with_callback(self._callback, lib.subsae_trainer_init(
            self.ptr, input.ptr, target.ptr if target is not None else None))

    def step(self, input, target=None):
        """One optimiser step on the rows of a 2-D array (no copy when
        float32 and row-strided)."""
        a, p, n, _, stride = _rows_f32(input)
        if target is None:
            _check(lib.subsae_trainer_step(self.ptr, p, stride, None, 0, n))
        else:
            b, q, m, _, tstride = _rows_f32(target)
            if m != n:
                raise ValueError("input has %d rows, target %d" % (n, m))
            _check(lib.subsae_trainer_step(self.ptr, p, stride, q, tstride, n))

    def fit(self, input, tokens, target=None):
        _with_callback(self._callback, lib.subsae_trainer_fit(
            self.ptr, input.ptr, target.ptr if target is not None else None, tokens))

    def metrics(self):
        out = np.empty(METRIC_COUNT, dtype=np.float64)
        _check(lib.subsae_trainer_metrics(self.ptr, out.ctypes.data_as(_pd), METRIC_COUNT))
        return Metrics._from(out)

    def feature_density(self):
        """Each feature's share of the metrics window's tokens it fired on."""
        d_sae = self.get(TRAIN_FEATURES)
        out = np.empty(d_sae, dtype=np.float64)
        _check(lib.subsae_trainer_feature_density(self.ptr, out.ctypes.data_as(_pd), d_sae))
        return out

    def set_metadata(self, text):
        """The run's metadata (a JSON object text), saved in checkpoints and cfg.json."""
        _check(lib.subsae_trainer_set_metadata(self.ptr, _bytes(text) if text else None))

    @property
    def metadata(self):
        text = _c.c_char_p()
        _check(lib.subsae_trainer_get_metadata(self.ptr, _c.byref(text)))
        return text.value.decode()

    def timings(self):
        """Wall seconds per step of each phase ({"encode_gemm": ..., "topk": ...,
        "decode", "backward", "optimizer", "prepare", "read", "step"}),
        averaged over the steps since creation or reset_timings; NaN before
        a step."""
        count = lib.subsae_phase_count()
        out = np.empty(count, dtype=np.float64)
        _check(lib.subsae_trainer_timings(self.ptr, out.ctypes.data_as(_pd), count))
        return {lib.subsae_phase_name(i).decode(): float(out[i]) for i in range(count)}

    def reset_timings(self):
        _check(lib.subsae_trainer_reset_timings(self.ptr))

    @property
    def sae(self):
        """The model being trained (None before init)."""
        p = lib.subsae_trainer_sae(self.ptr)
        return _TrainerModel(self, p) if p else None

    def save_checkpoint(self, directory):
        _check(lib.subsae_trainer_save_checkpoint(self.ptr, _bytes(directory)))


def option_info(obj, option):
    """What the library says about an option: dict(name, type ('int' or
    'double'), flags, description, min, max, default)."""
    name, desc = _c.c_char_p(), _c.c_char_p()
    kind, flags = _c.c_int(), _c.c_int()
    _check(lib.subsae_option_info(obj, option, _c.byref(name), _c.byref(kind), _c.byref(flags),
                                  _c.byref(desc)))
    if kind.value == OPTION_INT:
        lo, hi, default = _c.c_int64(), _c.c_int64(), _c.c_int64()
        _check(lib.subsae_option_int_bounds(obj, option, _c.byref(lo), _c.byref(hi),
                                            _c.byref(default)))
    else:
        lo, hi, default = _c.c_double(), _c.c_double(), _c.c_double()
        _check(lib.subsae_option_double_bounds(obj, option, _c.byref(lo), _c.byref(hi),
                                               _c.byref(default)))
    return {"name": name.value.decode(), "type": "int" if kind.value == OPTION_INT else "double",
            "flags": flags.value, "description": desc.value.decode(), "min": lo.value,
            "max": hi.value, "default": default.value}


def options(obj):
    """option_info of every option of obj (OBJECT_TRAINER, OBJECT_SUBSPACE, OBJECT_SAE)."""
    return [option_info(obj, lib.subsae_option_id(obj, i))
            for i in range(lib.subsae_option_count(obj))]


def find_option(obj, name):
    """The enum value of the option called name."""
    out = _c.c_int()
    _check(lib.subsae_option_find(obj, _bytes(name), _c.byref(out)))
    return out.value
