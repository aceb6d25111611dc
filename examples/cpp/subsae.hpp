// subsae.hpp — header-only C++17 wrapper around libsubsae's C API.
//
// Every handle is a std::unique_ptr whose deleter is the matching *_free
// function, so objects are movable, not copyable, and released exactly once.
// Every failing call throws subsae::error carrying the status code
// (SUBSAE_E_*), the fine-grained reason (SUBSAE_REASON_*) and the library's
// message (which file, which field, which value). Method names mirror the C
// API: subsae_buffer_read(buf, ...) is buf.read(...), and .get() gives the
// raw handle for any C function not wrapped here.
//
//   #include "subsae.hpp"
//   auto acts = subsae::Buffer::open("acts.npy");
//   subsae::Subspace s;
//   s.fit(acts);
//   std::cout << s.effective_rank(0.99).rank << "\n";
//
// Compile with -std=c++17 and link with -lsubsae (pkg-config subsae).
// MIT licence; see LICENSE.
#ifndef SUBSAE_HPP
#define SUBSAE_HPP

#include <subsae.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace subsae {

// ---- errors -------------------------------------------------------------

// A libsubsae call failed: status() is the SUBSAE_E_* code, reason() the
// SUBSAE_REASON_* code, message() the library's detail; what() combines them.
class error : public std::runtime_error {
public:
    error(int status, int reason, std::string message)
        : std::runtime_error(std::string(subsae_status_string(status)) + ": " + message),
          status_(status), reason_(reason), message_(std::move(message))
    {
    }
    int status() const noexcept { return status_; }
    int reason() const noexcept { return reason_; }
    const std::string &message() const noexcept { return message_; }
    const char *status_name() const noexcept { return subsae_status_string(status_); }
    const char *reason_name() const noexcept { return subsae_reason_string(reason_); }

private:
    int status_;
    int reason_;
    std::string message_;
};

// Throw subsae::error for a non-zero status (with the calling thread's last
// error message and reason); return otherwise.
inline void check(int status)
{
    if (status != SUBSAE_OK)
        throw error(status, subsae_last_error_reason(), subsae_last_error());
}

// ---- library-wide -------------------------------------------------------

inline std::string version() { return subsae_version_string(); }

// What the library says about an option (subsae_option_*).
struct option_description {
    int option = 0;
    std::string name, description;
    int type = SUBSAE_OPTION_INT, flags = 0;
    int64_t int_min = 0, int_max = 0, int_default = 0;   // an int option
    double min = 0, max = 0, default_value = 0;          // a double option
};

inline option_description option_info(int object, int option)
{
    option_description o;
    const char *name = nullptr, *description = nullptr;
    o.option = option;
    check(subsae_option_info(object, option, &name, &o.type, &o.flags, &description));
    o.name = name;
    o.description = description;
    if (o.type == SUBSAE_OPTION_INT)
        check(subsae_option_int_bounds(object, option, &o.int_min, &o.int_max, &o.int_default));
    else
        check(subsae_option_double_bounds(object, option, &o.min, &o.max, &o.default_value));
    return o;
}

// Every option of `object` (SUBSAE_OBJECT_*), in enum order.
inline std::vector<option_description> options(int object)
{
    std::vector<option_description> all;
    for (int i = 0, n = subsae_option_count(object); i < n; i++)
        all.push_back(option_info(object, subsae_option_id(object, i)));
    return all;
}

// The enum value of the option called `name`.
inline int find_option(int object, const std::string &name)
{
    int option = -1;
    check(subsae_option_find(object, name.c_str(), &option));
    return option;
}
inline unsigned version_number() { return subsae_version_number(); }
// oneDNN's instruction set and kernel for the encoder's product.
inline std::string encoder_isa() { return subsae_encoder_isa(); }
inline std::string encoder_kernel(int precision = SUBSAE_PRECISION_AUTO)
{
    return subsae_encoder_kernel(precision);
}
inline int precision_resolve(int precision = SUBSAE_PRECISION_AUTO)
{
    return subsae_precision_resolve(precision);
}
inline void set_num_threads(int n) { check(subsae_set_num_threads(n)); }
inline int num_threads() { return subsae_get_num_threads(); }
inline int metric_count() { return subsae_metric_count(); }
inline int phase_count() { return subsae_phase_count(); }
inline std::string phase_name(int phase) { return subsae_phase_name(phase); }
inline std::string dtype_name(int dtype) { return subsae_dtype_name(dtype); }
inline std::string format_name(int format) { return subsae_format_name(format); }
inline std::string activation_name(int activation) { return subsae_activation_name(activation); }
// The calling thread's last error (for code that mixes in raw C calls).
inline std::string last_error() { return subsae_last_error(); }
inline int last_error_status() { return subsae_last_error_status(); }
inline void clear_error() { subsae_clear_error(); }

// The deleter of every handle: the library's own *_free function.
template <auto Free>
struct free_with {
    template <class T>
    void operator()(T *p) const noexcept
    {
        Free(p);
    }
};

template <class T, auto Free>
using handle = std::unique_ptr<T, free_with<Free>>;

// Progress/log callback: (event, phase, done, total, message) -> keep going?
// `message` is empty for progress events. Returning false asks the library to
// stop (the call then throws subsae::error with SUBSAE_E_CANCELLED). An
// exception thrown by the callback stops the call and is rethrown from it.
using callback = std::function<bool(int event, const char *phase, int64_t done,
                                    int64_t total, const std::string &message)>;

namespace detail {
struct callback_state {
    callback fn;
    std::exception_ptr thrown;
};

inline int trampoline(int event, const char *phase, int64_t done, int64_t total,
                      const char *message, void *user) noexcept
{
    auto *state = static_cast<callback_state *>(user);
    try {
        return state->fn(event, phase ? phase : "", done, total, message ? message : "") ? 0 : 1;
    } catch (...) {
        state->thrown = std::current_exception();
        return 1;
    }
}

// Run a call that may invoke the callback: rethrow what the callback threw,
// otherwise turn a failure into subsae::error.
template <class Call>
void with_callback(callback_state *state, Call call)
{
    if (state)
        state->thrown = nullptr;
    int status = call();
    if (state && state->thrown) {
        std::exception_ptr e = state->thrown;
        state->thrown = nullptr;
        std::rethrow_exception(e);
    }
    check(status);
}
} // namespace detail

// Metrics indexed by SUBSAE_METRIC_*.
using metric_array = std::array<double, SUBSAE_METRIC_COUNT>;
using phase_array = std::array<double, SUBSAE_PHASE_COUNT>;

// ---- activation buffers -------------------------------------------------

// Statistics of a buffer (subsae_buffer_stats).
struct buffer_stats {
    std::vector<float> mean;
    double mean_norm = 0;
    int64_t nonfinite_values = 0;
    int64_t first_nonfinite_row = -1;
};

// One source of a buffer (subsae_buffer_source_info).
struct source_info {
    std::string path; // empty for memory
    int format = SUBSAE_FORMAT_MEMORY;
    int dtype = SUBSAE_DTYPE_F32;
    std::vector<int64_t> shape;
};

// A logical rows x dim float32 matrix of activations (memory, borrowed
// caller memory, .npy or safetensors files).
class Buffer {
public:
    // An empty growable buffer of width dim.
    static Buffer create(int64_t dim)
    {
        subsae_buffer *b = nullptr;
        check(subsae_buffer_create(dim, &b));
        return Buffer(b);
    }
    // Synthetic activations made of k of `features` known unit atoms per row,
    // the atoms in a random subspace_dim-dimensional subspace; `atoms` (may
    // be null) receives them, features x dim row-major.
    static Buffer synth(int64_t dim, int64_t subspace_dim, int64_t features, int64_t k,
                        int64_t tokens, uint64_t seed = 0, std::vector<float> *atoms = nullptr)
    {
        subsae_buffer *b = nullptr;
        if (atoms)
            atoms->assign(static_cast<size_t>(features * dim), 0.0f);
        check(subsae_synth(dim, subspace_dim, features, k, tokens, seed, &b,
                           atoms ? atoms->data() : nullptr));
        return Buffer(b);
    }
    // One .npy or safetensors file (tensor: safetensors tensor name or null).
    static Buffer open(const std::string &path, const char *tensor = nullptr)
    {
        subsae_buffer *b = nullptr;
        check(subsae_buffer_open(path.c_str(), tensor, &b));
        return Buffer(b);
    }
    // Several shards as one buffer, rows in order.
    static Buffer open_shards(const std::vector<std::string> &paths,
                              const char *tensor = nullptr)
    {
        std::vector<const char *> p;
        p.reserve(paths.size());
        for (const auto &s : paths)
            p.push_back(s.c_str());
        subsae_buffer *b = nullptr;
        check(subsae_buffer_open_shards(p.data(), static_cast<int64_t>(p.size()), tensor, &b));
        return Buffer(b);
    }
    // Caller memory of any input dtype (SUBSAE_DTYPE_*), row stride in
    // elements. SUBSAE_BORROW: no copy, the memory must outlive the buffer
    // and stay unchanged; SUBSAE_COPY: copied (and then growable).
    static Buffer wrap(const void *data, int dtype, int64_t rows, int64_t dim,
                       int64_t row_stride, int ownership)
    {
        subsae_buffer *b = nullptr;
        check(subsae_buffer_wrap(data, dtype, rows, dim, row_stride, ownership, &b));
        return Buffer(b);
    }
    static Buffer wrap(const float *data, int64_t rows, int64_t dim, int64_t row_stride,
                       int ownership = SUBSAE_BORROW)
    {
        return wrap(data, SUBSAE_DTYPE_F32, rows, dim, row_stride, ownership);
    }

    // Rows [first, first + n) as a buffer sharing this one's storage; this
    // buffer must outlive the view and not grow while it exists.
    Buffer view(int64_t first, int64_t n) const
    {
        subsae_buffer *b = nullptr;
        check(subsae_buffer_view(get(), first, n, &b));
        return Buffer(b);
    }

    // Append rows (widened and copied) to a growable buffer.
    void append(const void *rows, int dtype, int64_t n_rows, int64_t row_stride)
    {
        check(subsae_buffer_append(get(), rows, dtype, n_rows, row_stride));
    }
    void append(const float *rows, int64_t n_rows, int64_t row_stride)
    {
        append(rows, SUBSAE_DTYPE_F32, n_rows, row_stride);
    }

    int64_t rows() const { return subsae_buffer_rows(get()); }
    int64_t dim() const { return subsae_buffer_dim(get()); }

    // Rows [first, first + n) as float32.
    void read(int64_t first, int64_t n, float *out, int64_t out_stride) const
    {
        check(subsae_buffer_read(get(), first, n, out, out_stride));
    }
    std::vector<float> read(int64_t first, int64_t n) const
    {
        std::vector<float> out(static_cast<size_t>(n * dim()));
        read(first, n, out.data(), dim());
        return out;
    }
    // The listed rows (any order, repeats allowed).
    void gather(const std::vector<int64_t> &rows, float *out, int64_t out_stride) const
    {
        check(subsae_buffer_gather(get(), rows.data(), static_cast<int64_t>(rows.size()), out,
                                   out_stride));
    }
    std::vector<float> gather(const std::vector<int64_t> &rows) const
    {
        std::vector<float> out(rows.size() * static_cast<size_t>(dim()));
        gather(rows, out.data(), dim());
        return out;
    }

    // Leave out rows holding NaN/inf from now on; returns how many.
    int64_t skip_nonfinite()
    {
        int64_t skipped = 0;
        check(subsae_buffer_skip_nonfinite(get(), &skipped));
        return skipped;
    }

    // A 64-bit hash of the size and of sample rows (to tell data sets apart).
    uint64_t fingerprint(int64_t sample_rows = 256) const
    {
        uint64_t h = 0;
        check(subsae_buffer_fingerprint(get(), sample_rows, &h));
        return h;
    }

    buffer_stats stats() const
    {
        buffer_stats s;
        s.mean.resize(static_cast<size_t>(dim()));
        check(subsae_buffer_stats(get(), s.mean.data(), &s.mean_norm, &s.nonfinite_values,
                                  &s.first_nonfinite_row));
        return s;
    }

    void save_npy(const std::string &path, int dtype = SUBSAE_DTYPE_F32) const
    {
        check(subsae_buffer_save_npy(get(), path.c_str(), dtype));
    }
    void save_safetensors(const std::string &path, const std::string &tensor,
                          int dtype = SUBSAE_DTYPE_F32) const
    {
        check(subsae_buffer_save_safetensors(get(), path.c_str(), tensor.c_str(), dtype));
    }

    int64_t source_count() const { return subsae_buffer_source_count(get()); }
    source_info source(int64_t i) const
    {
        const char *path = nullptr;
        int ndim = 0;
        source_info info;
        std::array<int64_t, 8> shape{};
        check(subsae_buffer_source_info(get(), i, &path, &info.format, &info.dtype, &ndim,
                                        shape.data(), static_cast<int>(shape.size())));
        if (path)
            info.path = path;
        info.shape.assign(shape.begin(), shape.begin() + std::min<int>(ndim, 8));
        return info;
    }

    subsae_buffer *get() const noexcept { return h_.get(); }
    explicit Buffer(subsae_buffer *owned) noexcept : h_(owned) {}

private:
    handle<subsae_buffer, subsae_buffer_free> h_;
};

// Batches of a buffer, epoch after epoch (SUBSAE_BATCH_SHUFFLE, _DROP_LAST).
// The buffer must outlive the iterator.
class Batches {
public:
    Batches(const Buffer &buf, int64_t batch_size, uint64_t seed,
            int flags = SUBSAE_BATCH_SHUFFLE)
        : dim_(buf.dim()), batch_(batch_size)
    {
        subsae_batches *it = nullptr;
        check(subsae_batches_create(buf.get(), batch_size, seed, flags, &it));
        h_.reset(it);
    }
    // The next batch into `out` (resized to batch_size x dim); returns its
    // number of rows.
    int64_t next(std::vector<float> &out, int64_t *epoch = nullptr)
    {
        out.resize(static_cast<size_t>(batch_ * dim_));
        int64_t n = 0;
        check(subsae_batches_next(get(), out.data(), dim_, &n, epoch));
        return n;
    }
    // The next batch's row indices.
    std::vector<int64_t> next_indices(int64_t *epoch = nullptr)
    {
        std::vector<int64_t> rows(static_cast<size_t>(batch_));
        int64_t n = 0;
        check(subsae_batches_next_indices(get(), rows.data(), &n, epoch));
        rows.resize(static_cast<size_t>(n));
        return rows;
    }
    std::pair<int64_t, int64_t> tell() const
    {
        int64_t epoch = 0, position = 0;
        check(subsae_batches_tell(get(), &epoch, &position));
        return {epoch, position};
    }
    void seek(int64_t epoch, int64_t position)
    {
        check(subsae_batches_seek(get(), epoch, position));
    }
    subsae_batches *get() const noexcept { return h_.get(); }

private:
    int64_t dim_, batch_;
    handle<subsae_batches, subsae_batches_free> h_;
};

// ---- subspace estimator -------------------------------------------------

struct rank_result {
    int64_t rank;
    bool exact; // false: a lower bound (the method found fewer directions)
};

struct entropy_rank_result {
    double rank;
    bool exact;
};

// Spectrum, effective rank and principal directions of a buffer.
class Subspace {
public:
    Subspace()
    {
        subsae_subspace *s = nullptr;
        check(subsae_subspace_create(&s));
        h_.reset(s);
    }

    void set_int(int option, int64_t value) { check(subsae_subspace_set_int(get(), option, value)); }
    int64_t get_int(int option) const
    {
        int64_t v = 0;
        check(subsae_subspace_get_int(get(), option, &v));
        return v;
    }
    void set_double(int option, double value)
    {
        check(subsae_subspace_set_double(get(), option, value));
    }
    double get_double(int option) const
    {
        double v = 0;
        check(subsae_subspace_get_double(get(), option, &v));
        return v;
    }

    // Progress callback for fit (an empty function removes it).
    void set_callback(callback fn)
    {
        if (!fn) {
            check(subsae_subspace_set_callback(get(), nullptr, nullptr));
            cb_.reset();
            return;
        }
        auto state = std::make_unique<detail::callback_state>();
        state->fn = std::move(fn);
        check(subsae_subspace_set_callback(get(), detail::trampoline, state.get()));
        cb_ = std::move(state);
    }

    // Worker `rank` of `size`: fit then fits the union of the workers'
    // buffers; `fn` sums in place over the workers (e.g. MPI_Allreduce,
    // see examples/mpi/). A null fn detaches.
    void set_collective(subsae_allreduce_fn fn, int64_t rank, int64_t size, void *user)
    {
        check(subsae_subspace_set_collective(get(), fn, rank, size, user));
    }

    void fit(const Buffer &buf)
    {
        detail::with_callback(cb_.get(), [&] { return subsae_subspace_fit(get(), buf.get()); });
    }

    int64_t dim() const { return get_int(SUBSAE_SUBSPACE_DIM); }
    int64_t rank_found() const { return get_int(SUBSAE_SUBSPACE_RANK_FOUND); }

    std::vector<double> variances(int64_t count) const
    {
        std::vector<double> v(static_cast<size_t>(count));
        check(subsae_subspace_variances(get(), v.data(), count));
        return v;
    }
    std::vector<double> singular_values(int64_t count) const
    {
        std::vector<double> v(static_cast<size_t>(count));
        check(subsae_subspace_singular_values(get(), v.data(), count));
        return v;
    }
    std::vector<double> explained_ratios(int64_t count) const
    {
        std::vector<double> v(static_cast<size_t>(count));
        check(subsae_subspace_explained_ratios(get(), v.data(), count));
        return v;
    }
    double total_variance() const
    {
        double v = 0;
        check(subsae_subspace_total_variance(get(), &v));
        return v;
    }
    std::vector<float> mean() const
    {
        std::vector<float> v(static_cast<size_t>(dim()));
        check(subsae_subspace_mean(get(), v.data()));
        return v;
    }
    // The top k directions, k x d row-major.
    std::vector<float> basis(int64_t k) const
    {
        const int64_t d = dim();
        std::vector<float> v(static_cast<size_t>(k * d));
        check(subsae_subspace_basis(get(), k, v.data(), d));
        return v;
    }
    rank_result effective_rank(double tau = 0.99) const
    {
        int64_t r = 0;
        int exact = 0;
        check(subsae_subspace_effective_rank(get(), tau, &r, &exact));
        return {r, exact != 0};
    }
    entropy_rank_result entropy_rank() const
    {
        double r = 0;
        int exact = 0;
        check(subsae_subspace_entropy_rank(get(), &r, &exact));
        return {r, exact != 0};
    }
    // coords (n x k, stride coords_stride) = (x - mean) B_k^T.
    void project(const float *x, int64_t n, int64_t x_stride, int64_t k, float *coords,
                 int64_t coords_stride) const
    {
        check(subsae_subspace_project(get(), x, n, x_stride, k, coords, coords_stride));
    }
    // x (n x d, stride x_stride) = coords B_k + mean.
    void reconstruct(const float *coords, int64_t n, int64_t coords_stride, int64_t k, float *x,
                     int64_t x_stride) const
    {
        check(subsae_subspace_reconstruct(get(), coords, n, coords_stride, k, x, x_stride));
    }

    subsae_subspace *get() const noexcept { return h_.get(); }

private:
    handle<subsae_subspace, subsae_subspace_free> h_;
    std::unique_ptr<detail::callback_state> cb_; // stable address for the C side
};

// ---- SAE models ---------------------------------------------------------

// Sparse codes of n rows: indices and values n x slots (index -1: unused).
struct sparse_codes {
    int64_t rows = 0, slots = 0;
    std::vector<int32_t> indices;
    std::vector<float> values;
};

// Read-only operations on a model; SaeView does not own it (the model a
// Trainer trains), Sae does.
class SaeView {
public:
    explicit SaeView(const subsae_sae *sae) noexcept : p_(sae) {}

    int64_t get_int(int option) const
    {
        int64_t v = 0;
        check(subsae_sae_get_int(p_, option, &v));
        return v;
    }
    double get_double(int option) const
    {
        double v = 0;
        check(subsae_sae_get_double(p_, option, &v));
        return v;
    }
    int64_t d_in() const { return get_int(SUBSAE_SAE_D_IN); }
    int64_t d_out() const { return get_int(SUBSAE_SAE_D_OUT); }
    int64_t d_sae() const { return get_int(SUBSAE_SAE_D_SAE); }
    // A transcoder reconstructs another site than its input.
    bool transcoder() const { return get_int(SUBSAE_SAE_TRANSCODER) != 0; }
    // SUBSAE_PRECISION_FP32 or _BF16: the encoder's product.
    int precision() const { return static_cast<int>(get_int(SUBSAE_SAE_PRECISION)); }
    // A skip transcoder: its output adds x W_skip^T (see add_skip).
    bool skip() const { return get_int(SUBSAE_SAE_SKIP) != 0; }
    // The caller metadata saved in cfg.json (JSON text, "{}" when none).
    std::string metadata() const
    {
        const char *text = nullptr;
        check(subsae_sae_get_metadata(p_, &text));
        return text;
    }

    int64_t param_size(int param) const { return subsae_sae_param_size(p_, param); }
    std::vector<float> param(int param_id) const
    {
        const int64_t n = param_size(param_id);
        if (n < 0)
            throw error(SUBSAE_E_INVALID, SUBSAE_REASON_BAD_VALUE,
                        "unknown parameter " + std::to_string(param_id));
        std::vector<float> v(static_cast<size_t>(n));
        check(subsae_sae_get_param(p_, param_id, v.data(), n));
        return v;
    }

    // Dense codes z (n x d_sae) of n raw rows.
    void encode(const float *x, int64_t n, int64_t x_stride, float *z, int64_t z_stride) const
    {
        check(subsae_sae_encode(p_, x, n, x_stride, z, z_stride));
    }
    std::vector<float> encode(const float *x, int64_t n, int64_t x_stride) const
    {
        const int64_t f = d_sae();
        std::vector<float> z(static_cast<size_t>(n * f));
        encode(x, n, x_stride, z.data(), f);
        return z;
    }
    // The `slots` largest active features per row, descending.
    sparse_codes encode_sparse(const float *x, int64_t n, int64_t x_stride, int64_t slots) const
    {
        sparse_codes c;
        c.rows = n;
        c.slots = slots;
        c.indices.resize(static_cast<size_t>(n * slots));
        c.values.resize(static_cast<size_t>(n * slots));
        check(subsae_sae_encode_sparse(p_, x, n, x_stride, slots, c.indices.data(),
                                       c.values.data()));
        return c;
    }
    void decode(const float *z, int64_t n, int64_t z_stride, float *out, int64_t out_stride) const
    {
        check(subsae_sae_decode(p_, z, n, z_stride, out, out_stride));
    }
    std::vector<float> decode_sparse(const sparse_codes &c) const
    {
        const int64_t d = d_out();
        std::vector<float> out(static_cast<size_t>(c.rows * d));
        check(subsae_sae_decode_sparse(p_, c.indices.data(), c.values.data(), c.rows, c.slots,
                                       out.data(), d));
        return out;
    }
    // A skip transcoder's linear path: adds x W_skip^T of n input rows to
    // out (a decode); nothing for other models.
    void add_skip(const float *x, int64_t n, int64_t x_stride, float *out,
                  int64_t out_stride) const
    {
        check(subsae_sae_add_skip(p_, x, n, x_stride, out, out_stride));
    }
    // Metrics on all rows of `input` (against `target`, or the input).
    metric_array evaluate(const Buffer &input, const Buffer *target = nullptr) const
    {
        metric_array m{};
        check(subsae_sae_evaluate(p_, input.get(), target ? target->get() : nullptr, m.data(),
                                  static_cast<int64_t>(m.size())));
        return m;
    }
    // The same, and each feature's share of the rows it fired on.
    metric_array evaluate_density(const Buffer &input, const Buffer *target,
                                  std::vector<double> &density) const
    {
        metric_array m{};
        density.resize(static_cast<size_t>(d_sae()));
        check(subsae_sae_evaluate_density(p_, input.get(), target ? target->get() : nullptr,
                                          m.data(), static_cast<int64_t>(m.size()),
                                          density.data(), d_sae()));
        return m;
    }
    // The Matryoshka prefix widths (empty for a plain model).
    std::vector<int64_t> matryoshka() const
    {
        std::vector<int64_t> widths(SUBSAE_MATRYOSHKA_MAX);
        int count = 0;
        check(subsae_sae_get_matryoshka(p_, widths.data(), SUBSAE_MATRYOSHKA_MAX, &count));
        widths.resize(static_cast<size_t>(count));
        return widths;
    }
    // Explained variance of each Matryoshka prefix (one value for a plain
    // model), the last the model's.
    std::vector<double> evaluate_prefixes(const Buffer &input,
                                          const Buffer *target = nullptr) const
    {
        std::vector<double> ev(SUBSAE_MATRYOSHKA_MAX);
        int count = 0;
        check(subsae_sae_evaluate_prefixes(p_, input.get(), target ? target->get() : nullptr,
                                           ev.data(), SUBSAE_MATRYOSHKA_MAX, &count));
        ev.resize(static_cast<size_t>(count));
        return ev;
    }
    // SAELens' sparsity.safetensors (log10 densities) at `path`.
    void save_sparsity(const std::string &path, const std::vector<double> &density) const
    {
        check(subsae_sae_save_sparsity(p_, path.c_str(), density.data(),
                                       static_cast<int64_t>(density.size())));
    }
    // Save as an SAELens-layout directory (scales folded in).
    void save(const std::string &dir) const { check(subsae_sae_save(p_, dir.c_str())); }

    const subsae_sae *get() const noexcept { return p_; }

protected:
    const subsae_sae *p_;
};

// An owned model.
class Sae : public SaeView {
public:
    static Sae create(int64_t d_in, int64_t d_out, int64_t d_sae, int activation = SUBSAE_ACT_TOPK)
    {
        subsae_sae *s = nullptr;
        check(subsae_sae_create(d_in, d_out, d_sae, activation, &s));
        return Sae(s);
    }
    // Load a saved directory (this library / SAELens, sparsify, lm-saes).
    static Sae load(const std::string &dir)
    {
        subsae_sae *s = nullptr;
        check(subsae_sae_load(dir.c_str(), &s));
        return Sae(s);
    }
    // A deep copy of any model, e.g. the one a Trainer is training.
    static Sae clone(const SaeView &of)
    {
        subsae_sae *s = nullptr;
        check(subsae_sae_clone(of.get(), &s));
        return Sae(s);
    }

    Sae(Sae &&other) noexcept : SaeView(other.p_), h_(std::move(other.h_)) { other.p_ = nullptr; }
    Sae &operator=(Sae &&other) noexcept
    {
        h_ = std::move(other.h_);
        p_ = other.p_;
        other.p_ = nullptr;
        return *this;
    }
    Sae(const Sae &) = delete;
    Sae &operator=(const Sae &) = delete;

    void set_int(int option, int64_t value) { check(subsae_sae_set_int(get(), option, value)); }
    void set_double(int option, double value)
    {
        check(subsae_sae_set_double(get(), option, value));
    }
    // Caller metadata (a JSON object) for cfg.json.
    void set_metadata(const std::string &json)
    {
        check(subsae_sae_set_metadata(get(), json.c_str()));
    }
    void set_param(int param, const std::vector<float> &values)
    {
        check(subsae_sae_set_param(get(), param, values.data(),
                                   static_cast<int64_t>(values.size())));
    }
    void fold_scales() { check(subsae_sae_fold_scales(get())); }
    // SUBSAE_PRECISION_FP32, _BF16 (refused without native bf16) or _AUTO.
    void set_precision(int precision) { set_int(SUBSAE_SAE_PRECISION, precision); }

    subsae_sae *get() const noexcept { return h_.get(); }

private:
    explicit Sae(subsae_sae *owned) noexcept : SaeView(owned), h_(owned) {}
    handle<subsae_sae, subsae_sae_free> h_;
};

// ---- trainer ------------------------------------------------------------

// Trains a model on a buffer (or input -> target for a transcoder).
class Trainer {
public:
    Trainer()
    {
        subsae_trainer *t = nullptr;
        check(subsae_trainer_create(&t));
        h_.reset(t);
    }
    // Train a Matryoshka SAE (topk, batchtopk): nested prefixes of these
    // widths, strictly increasing, the last = features; empty for a plain
    // one. Before init.
    void set_matryoshka(const std::vector<int64_t> &widths)
    {
        check(subsae_trainer_set_matryoshka(get(), widths.data(),
                                            static_cast<int>(widths.size())));
    }
    // Resume from a checkpoint directory.
    static Trainer load_checkpoint(const std::string &dir)
    {
        subsae_trainer *t = nullptr;
        check(subsae_trainer_load_checkpoint(dir.c_str(), &t));
        return Trainer(t);
    }

    void set_int(int option, int64_t value) { check(subsae_trainer_set_int(get(), option, value)); }
    int64_t get_int(int option) const
    {
        int64_t v = 0;
        check(subsae_trainer_get_int(get(), option, &v));
        return v;
    }
    void set_double(int option, double value)
    {
        check(subsae_trainer_set_double(get(), option, value));
    }
    double get_double(int option) const
    {
        double v = 0;
        check(subsae_trainer_get_double(get(), option, &v));
        return v;
    }

    // Progress callback for init and fit (an empty function removes it).
    void set_callback(callback fn)
    {
        if (!fn) {
            check(subsae_trainer_set_callback(get(), nullptr, nullptr));
            cb_.reset();
            return;
        }
        auto state = std::make_unique<detail::callback_state>();
        state->fn = std::move(fn);
        check(subsae_trainer_set_callback(get(), detail::trampoline, state.get()));
        cb_ = std::move(state);
    }

    // Data-parallel worker `rank` of `size`: init, step and fit become
    // collective (batch is the global batch); `fn` sums in place over the
    // workers. A null fn detaches.
    void set_collective(subsae_allreduce_fn fn, int64_t rank, int64_t size, void *user)
    {
        check(subsae_trainer_set_collective(get(), fn, rank, size, user));
    }

    void init(const Buffer &input, const Buffer *target = nullptr)
    {
        detail::with_callback(cb_.get(), [&] {
            return subsae_trainer_init(get(), input.get(), target ? target->get() : nullptr);
        });
    }
    // One optimiser step on n raw rows (target null: an SAE).
    void step(const float *input, int64_t input_stride, int64_t n,
              const float *target = nullptr, int64_t target_stride = 0)
    {
        check(subsae_trainer_step(get(), input, input_stride, target, target_stride, n));
    }
    void fit(const Buffer &input, int64_t tokens) { fit(input, nullptr, tokens); }
    void fit(const Buffer &input, const Buffer *target, int64_t tokens)
    {
        detail::with_callback(cb_.get(), [&] {
            return subsae_trainer_fit(get(), input.get(), target ? target->get() : nullptr,
                                      tokens);
        });
    }
    metric_array metrics() const
    {
        metric_array m{};
        check(subsae_trainer_metrics(get(), m.data(), static_cast<int64_t>(m.size())));
        return m;
    }
    // Wall seconds per step of each phase (SUBSAE_PHASE_*), averaged over the
    // steps since creation or reset_timings(); NaN before a step.
    phase_array timings() const
    {
        phase_array s{};
        check(subsae_trainer_timings(get(), s.data(), static_cast<int64_t>(s.size())));
        return s;
    }
    void reset_timings() { check(subsae_trainer_reset_timings(get())); }
    // The model being trained (owned by the trainer; Sae::clone to keep it).
    SaeView sae() const
    {
        const subsae_sae *s = subsae_trainer_sae(get());
        if (!s)
            throw error(SUBSAE_E_STATE, SUBSAE_REASON_WRONG_STATE,
                        "the trainer has no model before init");
        return SaeView(s);
    }
    void save_checkpoint(const std::string &dir) const
    {
        check(subsae_trainer_save_checkpoint(get(), dir.c_str()));
    }
    // Each feature's share of the metrics window's tokens it fired on.
    std::vector<double> feature_density() const
    {
        std::vector<double> d(static_cast<size_t>(sae().d_sae()));
        check(subsae_trainer_feature_density(get(), d.data(), static_cast<int64_t>(d.size())));
        return d;
    }
    // The run's metadata (a JSON object), saved in checkpoints and cfg.json.
    void set_metadata(const std::string &json)
    {
        check(subsae_trainer_set_metadata(get(), json.c_str()));
    }
    std::string metadata() const
    {
        const char *text = nullptr;
        check(subsae_trainer_get_metadata(get(), &text));
        return text;
    }

    subsae_trainer *get() const noexcept { return h_.get(); }

private:
    explicit Trainer(subsae_trainer *owned) noexcept : h_(owned) {}
    handle<subsae_trainer, subsae_trainer_free> h_;
    std::unique_ptr<detail::callback_state> cb_;
};

} // namespace subsae

#endif // SUBSAE_HPP
