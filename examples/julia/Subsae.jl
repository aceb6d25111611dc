"""
    Subsae

libsubsae from Julia through `ccall`: no compiler, no build step.

The library is found through the environment variable `SUBSAE_LIB` (the path
of libsubsae.so), else `../../build/libsubsae.so` next to this file. Every C
function of include/subsae.h is wrapped (the `ccall`s below); the handle types
free themselves in finalizers (or earlier with `close`), and a failing call
throws `Subsae.SubsaeError(status, reason, message)`.

# Matrices and memory order

The C API takes row-major float32 matrices with a row stride: row `i`
(a token) starts at element `i * stride`. Julia arrays are column-major, so
**a `d × n` Julia `Matrix` (one token per column) is exactly an `n × d`
row-major matrix with row stride `d`** (more generally, row stride
`stride(A, 2)` for a strided `d × n` array with unit column stride), and is
passed without copying. This binding therefore takes and returns matrices
with tokens as **columns**:

    X = rand(Float32, 64, 10_000)      # 64 dims × 10,000 tokens
    buf = Subsae.wrap(X)               # borrowed: no copy
    Z = Subsae.encode(sae, X)          # d_sae × n codes

A matrix with tokens as rows (`n × d`, the shape numpy or NPZ.jl give) must
be turned around first: `wrap(permutedims(A))`. Anything that is not a
strided matrix with unit column stride (a `transpose`, a view with a step) is
copied into the d × n layout before the call. Float16 and Float64 data are
passed as they are (`Matrix{Float16}`) and widened by the library. Indices
given to or returned by the C API (rows, features) are 0-based in C; this
binding converts token positions to 1-based and leaves feature indices of
`encode_sparse` 0-based, as the library reports them.

Status: written against include/subsae.h and kept syntax-correct, but
untested — Julia cannot be installed on the machine this library is
developed on (Debian bookworm has no julia package).
"""
module Subsae

export SubsaeError, Buffer, Subspace, Sae, Trainer,
       wrap, create_buffer, open_buffer, read_rows, fit!, effective_rank,
       entropy_rank, variances, explained_ratios, basis, encode, encode_sparse,
       decode, add_skip!, evaluate, save, load_sae, init!, step!, train!, metrics, model, timings,
       reset_timings!

const libsubsae = get(ENV, "SUBSAE_LIB",
                      normpath(joinpath(@__DIR__, "..", "..", "build", "libsubsae.so")))

# ---- constants (fixed ABI values of include/subsae.h) ---------------------

const OK = Cint(0)
const E_INVALID = Cint(-1)
const E_NOMEM = Cint(-2)
const E_IO = Cint(-3)
const E_FORMAT = Cint(-4)
const E_NONFINITE = Cint(-5)
const E_STATE = Cint(-6)
const E_UNSUPPORTED = Cint(-7)
const E_RANGE = Cint(-8)
const E_CANCELLED = Cint(-9)

const DTYPE_F32 = Cint(0)
const DTYPE_F16 = Cint(1)
const DTYPE_BF16 = Cint(2)
const DTYPE_F64 = Cint(3)
const COPY = Cint(0)
const BORROW = Cint(1)

const SUBSPACE_METHOD = Cint(0)
const SUBSPACE_RANK = Cint(1)
const SUBSPACE_DIM = Cint(101)
const SUBSPACE_RANK_FOUND = Cint(103)

const ACT_TOPK = Cint(0)
const ACT_GATED = Cint(4)
const PARAM_R_MAG = Cint(5) # gated models only
const PARAM_B_MAG = Cint(6)
const SAE_D_IN = Cint(0)
const SAE_D_OUT = Cint(1)
const SAE_D_SAE = Cint(2)
const SAE_K = Cint(4)
const SAE_TRANSCODER = Cint(9)
const SAE_PRECISION = Cint(10)
const SAE_SKIP = Cint(11)

const OBJECT_TRAINER = Cint(0)
const OBJECT_SUBSPACE = Cint(1)
const OBJECT_SAE = Cint(2)
const OPTION_INT = Cint(0)
const OPTION_DOUBLE = Cint(1)

const METRIC_NAMES = (:mse, :fvu, :explained_variance, :l0, :dead_fraction, :dead_features,
                      :dense_fraction, :zero_frequency_fraction, :tokens, :steps, :loss,
                      :lr, :loss_mse, :loss_sparsity, :loss_aux, :bf16_disagreement,
                      :step_mse, :step_explained_variance, :step_l0)
const METRIC_COUNT = length(METRIC_NAMES)
const MATRYOSHKA_MAX = 64  # most nested prefixes of a Matryoshka model

const INIT_RANDOM = 0
const INIT_ACTIVE_SUBSPACE = 1

const COEF_UNIFORM = 0
const COEF_GAUSSIAN = 1

# ---- errors ---------------------------------------------------------------

"""A libsubsae call failed: `status` (E_*), `reason` (REASON_*), `message`."""
struct SubsaeError <: Exception
    status::Cint
    reason::Cint
    message::String
end

status_string(s::Integer) = unsafe_string(ccall((:subsae_status_string, libsubsae), Cstring, (Cint,), s))
reason_string(r::Integer) = unsafe_string(ccall((:subsae_reason_string, libsubsae), Cstring, (Cint,), r))

Base.showerror(io::IO, e::SubsaeError) =
    print(io, "SubsaeError: ", status_string(e.status), ": ", e.message,
          " (", reason_string(e.reason), ")")

function check(status::Cint)
    if status != OK
        reason = ccall((:subsae_last_error_reason, libsubsae), Cint, ())
        message = unsafe_string(ccall((:subsae_last_error, libsubsae), Cstring, ()))
        throw(SubsaeError(status, reason, message))
    end
    return nothing
end

version() = unsafe_string(ccall((:subsae_version_string, libsubsae), Cstring, ()))
version_number() = ccall((:subsae_version_number, libsubsae), Cuint, ())
const PRECISION_FP32, PRECISION_BF16, PRECISION_AUTO = 0, 1, 2
encoder_isa() = unsafe_string(ccall((:subsae_encoder_isa, libsubsae), Cstring, ()))
encoder_kernel(precision::Integer = PRECISION_AUTO) =
    unsafe_string(ccall((:subsae_encoder_kernel, libsubsae), Cstring, (Cint,), precision))
precision_resolve(precision::Integer = PRECISION_AUTO) =
    ccall((:subsae_precision_resolve, libsubsae), Cint, (Cint,), precision)
last_error() = unsafe_string(ccall((:subsae_last_error, libsubsae), Cstring, ()))
last_error_status() = ccall((:subsae_last_error_status, libsubsae), Cint, ())
last_error_reason() = ccall((:subsae_last_error_reason, libsubsae), Cint, ())
clear_error() = ccall((:subsae_clear_error, libsubsae), Cvoid, ())
set_num_threads(n::Integer) = check(ccall((:subsae_set_num_threads, libsubsae), Cint, (Cint,), n))
num_threads() = ccall((:subsae_get_num_threads, libsubsae), Cint, ())
dtype_name(d::Integer) = unsafe_string(ccall((:subsae_dtype_name, libsubsae), Cstring, (Cint,), d))
format_name(f::Integer) = unsafe_string(ccall((:subsae_format_name, libsubsae), Cstring, (Cint,), f))
activation_name(a::Integer) = unsafe_string(ccall((:subsae_activation_name, libsubsae), Cstring, (Cint,), a))
metric_count() = ccall((:subsae_metric_count, libsubsae), Cint, ())

# ---- option metadata -------------------------------------------------------

option_count(object::Integer) = ccall((:subsae_option_count, libsubsae), Cint, (Cint,), object)
option_id(object::Integer, index::Integer) =
    ccall((:subsae_option_id, libsubsae), Cint, (Cint, Cint), object, index)

"""The enum value of the option called `name` of `object` (OBJECT_*)."""
function find_option(object::Integer, name::AbstractString)
    option = Ref{Cint}(0)
    check(ccall((:subsae_option_find, libsubsae), Cint, (Cint, Cstring, Ref{Cint}), object, name,
                option))
    return option[]
end

"""What the library says about an option: name, type (:int or :double),
flags, description, min, max, default."""
function option_info(object::Integer, option::Integer)
    name = Ref{Ptr{UInt8}}(C_NULL)
    description = Ref{Ptr{UInt8}}(C_NULL)
    kind = Ref{Cint}(0)
    flags = Ref{Cint}(0)
    check(ccall((:subsae_option_info, libsubsae), Cint,
                (Cint, Cint, Ref{Ptr{UInt8}}, Ref{Cint}, Ref{Cint}, Ref{Ptr{UInt8}}),
                object, option, name, kind, flags, description))
    if kind[] == OPTION_INT
        lo, hi, def = Ref{Int64}(0), Ref{Int64}(0), Ref{Int64}(0)
        check(ccall((:subsae_option_int_bounds, libsubsae), Cint,
                    (Cint, Cint, Ref{Int64}, Ref{Int64}, Ref{Int64}), object, option, lo, hi, def))
    else
        lo, hi, def = Ref{Float64}(0), Ref{Float64}(0), Ref{Float64}(0)
        check(ccall((:subsae_option_double_bounds, libsubsae), Cint,
                    (Cint, Cint, Ref{Float64}, Ref{Float64}, Ref{Float64}), object, option, lo,
                    hi, def))
    end
    return (name = unsafe_string(name[]), type = kind[] == OPTION_INT ? :int : :double,
            flags = Int(flags[]), description = unsafe_string(description[]), min = lo[],
            max = hi[], default = def[])
end

"""option_info of every option of `object`."""
options(object::Integer) = [option_info(object, option_id(object, i))
                            for i in 0:option_count(object)-1]
phase_count() = ccall((:subsae_phase_count, libsubsae), Cint, ())
phase_name(p::Integer) = unsafe_string(ccall((:subsae_phase_name, libsubsae), Cstring, (Cint,), p))

# ---- matrices -------------------------------------------------------------

dtype_code(::Type{Float32}) = DTYPE_F32
dtype_code(::Type{Float16}) = DTYPE_F16
dtype_code(::Type{Float64}) = DTYPE_F64

"""
    row_layout(X) -> (array to keep alive, tokens n, dims d, row stride)

`X` holds one token per column (d × n). A strided matrix with unit column
stride is passed as is (row stride `stride(X, 2)`); anything else (a
`transpose`, a view with a step, another element type) is first copied into
a fresh d × n `Matrix` of the same float type (Float32 for non-floats).
"""
function row_layout(X::StridedMatrix{T}) where {T<:Union{Float32,Float16,Float64}}
    if stride(X, 1) == 1 && stride(X, 2) >= max(size(X, 1), 1)
        return X, size(X, 2), size(X, 1), stride(X, 2)
    end
    Y = Matrix{T}(X)
    return Y, size(Y, 2), size(Y, 1), size(Y, 1)
end
row_layout(X::AbstractMatrix{T}) where {T<:Union{Float32,Float16,Float64}} =
    row_layout(Matrix{T}(X))
row_layout(X::AbstractMatrix) = row_layout(Matrix{Float32}(X))

# ---- handles --------------------------------------------------------------

"""Activations: `rows` tokens of `dim` floats (memory, borrowed, or files)."""
mutable struct Buffer
    ptr::Ptr{Cvoid}
    keep::Any          # borrowed Julia memory, kept alive with the buffer
    function Buffer(ptr::Ptr{Cvoid}, keep = nothing)
        b = new(ptr, keep)
        finalizer(close, b)
        return b
    end
end

function Base.close(b::Buffer)
    if b.ptr != C_NULL
        ccall((:subsae_buffer_free, libsubsae), Cvoid, (Ptr{Cvoid},), b.ptr)
        b.ptr = C_NULL
    end
    return nothing
end

function handle(b)
    b.ptr == C_NULL && throw(ArgumentError("$(typeof(b)) is closed"))
    return b.ptr
end

"""An empty growable buffer of width `dim`."""
function create_buffer(dim::Integer)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:subsae_buffer_create, libsubsae), Cint, (Int64, Ref{Ptr{Cvoid}}), dim, out))
    return Buffer(out[])
end

"""Synthetic activations: `tokens` tokens of width `dim`, each made of `k` of
`features` known unit atoms lying in a random `subspace_dim`-dimensional
subspace. Returns the buffer and the atoms as a `dim x features` matrix (one
atom per column)."""
function synth(dim::Integer, subspace_dim::Integer, features::Integer, k::Integer,
               tokens::Integer; seed::Integer = 0)
    atoms = zeros(Float32, dim, features)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:subsae_synth, libsubsae), Cint,
                (Int64, Int64, Int64, Int64, Int64, UInt64, Ref{Ptr{Cvoid}}, Ptr{Float32}),
                dim, subspace_dim, features, k, tokens, seed, out, atoms))
    return Buffer(out[]), atoms
end

"""A .npy or safetensors file (`tensor`: the safetensors tensor, or nothing)."""
function open_buffer(path::AbstractString; tensor::Union{Nothing,AbstractString} = nothing)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    if tensor === nothing
        check(ccall((:subsae_buffer_open, libsubsae), Cint,
                    (Cstring, Ptr{UInt8}, Ref{Ptr{Cvoid}}), path, C_NULL, out))
    else
        check(ccall((:subsae_buffer_open, libsubsae), Cint,
                    (Cstring, Cstring, Ref{Ptr{Cvoid}}), path, tensor, out))
    end
    return Buffer(out[])
end

"""Several shards as one buffer, rows in order."""
function open_shards(paths::AbstractVector{<:AbstractString};
                     tensor::Union{Nothing,AbstractString} = nothing)
    strs = [String(p) for p in paths]     # Julia Strings are NUL-terminated
    ptrs = [pointer(s) for s in strs]
    out = Ref{Ptr{Cvoid}}(C_NULL)
    tstr = tensor === nothing ? nothing : String(tensor)
    t = tstr === nothing ? Ptr{UInt8}(C_NULL) : pointer(tstr)
    GC.@preserve strs ptrs tstr begin
        check(ccall((:subsae_buffer_open_shards, libsubsae), Cint,
                    (Ptr{Ptr{UInt8}}, Int64, Ptr{UInt8}, Ref{Ptr{Cvoid}}),
                    ptrs, length(ptrs), t, out))
    end
    return Buffer(out[])
end

"""
    wrap(X; copy = false)

A buffer over a matrix with one token per column (see the module docs).
Borrowed by default (no copy; `X` is kept alive by the buffer and must not
change); `copy = true` copies into library memory.
"""
function wrap(X::AbstractMatrix; copy::Bool = false)
    data, n, d, rs = row_layout(X)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve data begin
        check(ccall((:subsae_buffer_wrap, libsubsae), Cint,
                    (Ptr{Cvoid}, Cint, Int64, Int64, Int64, Cint, Ref{Ptr{Cvoid}}),
                    pointer(data), dtype_code(eltype(data)), n, d, rs,
                    copy ? COPY : BORROW, out))
    end
    return Buffer(out[], copy ? nothing : data)
end

"""Tokens `first:first+n-1` (1-based) of `b` as a buffer sharing its storage
(the view keeps `b` alive)."""
function buffer_view(b::Buffer, first::Integer, n::Integer)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:subsae_buffer_view, libsubsae), Cint, (Ptr{Cvoid}, Int64, Int64, Ref{Ptr{Cvoid}}),
                handle(b), first - 1, n, out))
    return Buffer(out[], b)
end

"""Append the tokens (columns) of `X` to a growable buffer (copied)."""
function Base.append!(b::Buffer, X::AbstractMatrix)
    data, n, d, rs = row_layout(X)
    d == dim(b) || throw(DimensionMismatch("rows have $d dims, the buffer $(dim(b))"))
    GC.@preserve data begin
        check(ccall((:subsae_buffer_append, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Cint, Int64, Int64),
                    handle(b), pointer(data), dtype_code(eltype(data)), n, rs))
    end
    return b
end

rows(b::Buffer) = Int(ccall((:subsae_buffer_rows, libsubsae), Int64, (Ptr{Cvoid},), handle(b)))
dim(b::Buffer) = Int(ccall((:subsae_buffer_dim, libsubsae), Int64, (Ptr{Cvoid},), handle(b)))

"""Tokens `first:first+n-1` (1-based) as a d × n Float32 matrix."""
function read_rows(b::Buffer, first::Integer = 1, n::Integer = rows(b) - first + 1)
    d = dim(b)
    out = Matrix{Float32}(undef, d, n)
    check(ccall((:subsae_buffer_read, libsubsae), Cint,
                (Ptr{Cvoid}, Int64, Int64, Ptr{Float32}, Int64),
                handle(b), first - 1, n, out, d))
    return out
end

"""The listed tokens (1-based, any order) as a d × length(idx) matrix."""
function gather(b::Buffer, idx::AbstractVector{<:Integer})
    d = dim(b)
    rowsv = Int64[i - 1 for i in idx]
    out = Matrix{Float32}(undef, d, length(rowsv))
    check(ccall((:subsae_buffer_gather, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Int64}, Int64, Ptr{Float32}, Int64),
                handle(b), rowsv, length(rowsv), out, d))
    return out
end

function skip_nonfinite!(b::Buffer)
    skipped = Ref{Int64}(0)
    check(ccall((:subsae_buffer_skip_nonfinite, libsubsae), Cint,
                (Ptr{Cvoid}, Ref{Int64}), handle(b), skipped))
    return Int(skipped[])
end

function stats(b::Buffer)
    mean = Vector{Float32}(undef, dim(b))
    norm = Ref{Float64}(0)
    bad = Ref{Int64}(0)
    first = Ref{Int64}(-1)
    check(ccall((:subsae_buffer_stats, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Float32}, Ref{Float64}, Ref{Int64}, Ref{Int64}),
                handle(b), mean, norm, bad, first))
    return (mean = mean, mean_norm = norm[], nonfinite_values = Int(bad[]),
            first_nonfinite_row = Int(first[]))
end

"""A 64-bit hash of the size and of `sample_rows` sample tokens."""
function fingerprint(b::Buffer; sample_rows::Integer = 256)
    h = Ref{UInt64}(0)
    check(ccall((:subsae_buffer_fingerprint, libsubsae), Cint, (Ptr{Cvoid}, Int64, Ref{UInt64}),
                handle(b), sample_rows, h))
    return h[]
end

save_npy(b::Buffer, path::AbstractString; dtype::Integer = DTYPE_F32) =
    check(ccall((:subsae_buffer_save_npy, libsubsae), Cint, (Ptr{Cvoid}, Cstring, Cint),
                handle(b), path, dtype))

save_safetensors(b::Buffer, path::AbstractString, tensor::AbstractString;
                 dtype::Integer = DTYPE_F32) =
    check(ccall((:subsae_buffer_save_safetensors, libsubsae), Cint,
                (Ptr{Cvoid}, Cstring, Cstring, Cint), handle(b), path, tensor, dtype))

source_count(b::Buffer) =
    Int(ccall((:subsae_buffer_source_count, libsubsae), Int64, (Ptr{Cvoid},), handle(b)))

"""Source `i` (1-based): (path, format, dtype, shape as stored, row-major)."""
function source_info(b::Buffer, i::Integer)
    path = Ref{Ptr{UInt8}}(C_NULL)
    fmt = Ref{Cint}(0)
    dt = Ref{Cint}(0)
    nd = Ref{Cint}(0)
    shape = zeros(Int64, 8)
    check(ccall((:subsae_buffer_source_info, libsubsae), Cint,
                (Ptr{Cvoid}, Int64, Ref{Ptr{UInt8}}, Ref{Cint}, Ref{Cint}, Ref{Cint},
                 Ptr{Int64}, Cint),
                handle(b), i - 1, path, fmt, dt, nd, shape, 8))
    return (path = path[] == C_NULL ? nothing : unsafe_string(path[]),
            format = format_name(fmt[]), dtype = dtype_name(dt[]),
            shape = Tuple(shape[1:clamp(nd[], 0, 8)]))
end

"""Batches of a buffer, epoch after epoch (keeps the buffer alive)."""
mutable struct Batches
    ptr::Ptr{Cvoid}
    buffer::Buffer
    batch::Int
    function Batches(b::Buffer, batch_size::Integer; seed::Integer = 0, flags::Integer = 1)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check(ccall((:subsae_batches_create, libsubsae), Cint,
                    (Ptr{Cvoid}, Int64, UInt64, Cint, Ref{Ptr{Cvoid}}),
                    handle(b), batch_size, seed, flags, out))
        it = new(out[], b, batch_size)
        finalizer(close, it)
        return it
    end
end

function Base.close(it::Batches)
    if it.ptr != C_NULL
        ccall((:subsae_batches_free, libsubsae), Cvoid, (Ptr{Cvoid},), it.ptr)
        it.ptr = C_NULL
    end
    return nothing
end

"""The next batch as a d × n matrix and its epoch (0-based)."""
function next_batch(it::Batches)
    d = dim(it.buffer)
    out = Matrix{Float32}(undef, d, it.batch)
    n = Ref{Int64}(0)
    epoch = Ref{Int64}(0)
    check(ccall((:subsae_batches_next, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Float32}, Int64, Ref{Int64}, Ref{Int64}),
                handle(it), out, d, n, epoch))
    return out[:, 1:n[]], Int(epoch[])
end

"""The next batch's token indices (0-based, as the C API counts) and epoch."""
function next_indices(it::Batches)
    idx = Vector{Int64}(undef, it.batch)
    n = Ref{Int64}(0)
    epoch = Ref{Int64}(0)
    check(ccall((:subsae_batches_next_indices, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Int64}, Ref{Int64}, Ref{Int64}), handle(it), idx, n, epoch))
    return idx[1:n[]], Int(epoch[])
end

function tell(it::Batches)
    epoch = Ref{Int64}(0)
    position = Ref{Int64}(0)
    check(ccall((:subsae_batches_tell, libsubsae), Cint,
                (Ptr{Cvoid}, Ref{Int64}, Ref{Int64}), handle(it), epoch, position))
    return Int(epoch[]), Int(position[])
end

seek!(it::Batches, epoch::Integer, position::Integer) =
    check(ccall((:subsae_batches_seek, libsubsae), Cint, (Ptr{Cvoid}, Int64, Int64),
                handle(it), epoch, position))

# ---- callbacks ------------------------------------------------------------

# The C callback: `user` is a pointer to the Julia function (kept alive by the
# handle that registered it). An exception in it is stored and cancels the call.
mutable struct CallbackState
    fn::Function
    error::Any
end

function callback_trampoline(event::Cint, phase::Ptr{UInt8}, done::Int64, total::Int64,
                             message::Ptr{UInt8}, user::Ptr{Cvoid})::Cint
    state = unsafe_pointer_to_objref(user)::CallbackState
    try
        keep = state.fn(Int(event), phase == C_NULL ? "" : unsafe_string(phase), Int(done),
                        Int(total), message == C_NULL ? nothing : unsafe_string(message))
        return keep === false ? Cint(1) : Cint(0)
    catch e
        state.error = e
        return Cint(1)
    end
end

function rethrow_callback(state)
    if state !== nothing && state.error !== nothing
        e = state.error
        state.error = nothing
        throw(e)
    end
end

callback_pointer() =
    @cfunction(callback_trampoline, Cint, (Cint, Ptr{UInt8}, Int64, Int64, Ptr{UInt8}, Ptr{Cvoid}))

# ---- subspace -------------------------------------------------------------

"""Spectrum, effective rank and principal directions of a buffer."""
mutable struct Subspace
    ptr::Ptr{Cvoid}
    callback::Union{Nothing,CallbackState}
    function Subspace()
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check(ccall((:subsae_subspace_create, libsubsae), Cint, (Ref{Ptr{Cvoid}},), out))
        s = new(out[], nothing)
        finalizer(close, s)
        return s
    end
end

function Base.close(s::Subspace)
    if s.ptr != C_NULL
        ccall((:subsae_subspace_free, libsubsae), Cvoid, (Ptr{Cvoid},), s.ptr)
        s.ptr = C_NULL
    end
    return nothing
end

set_int!(s::Subspace, option::Integer, value::Integer) =
    check(ccall((:subsae_subspace_set_int, libsubsae), Cint, (Ptr{Cvoid}, Cint, Int64),
                handle(s), option, value))
function get_int(s::Subspace, option::Integer)
    v = Ref{Int64}(0)
    check(ccall((:subsae_subspace_get_int, libsubsae), Cint, (Ptr{Cvoid}, Cint, Ref{Int64}),
                handle(s), option, v))
    return Int(v[])
end
set_double!(s::Subspace, option::Integer, value::Real) =
    check(ccall((:subsae_subspace_set_double, libsubsae), Cint, (Ptr{Cvoid}, Cint, Float64),
                handle(s), option, value))
function get_double(s::Subspace, option::Integer)
    v = Ref{Float64}(0)
    check(ccall((:subsae_subspace_get_double, libsubsae), Cint, (Ptr{Cvoid}, Cint, Ref{Float64}),
                handle(s), option, v))
    return v[]
end

"""Worker `rank` of `size`: fit then fits the union of the workers' buffers.
`allreduce` is a C function pointer `int (*)(void *data, int64_t count, int dtype,
void *user)` summing in place over the workers (e.g. a `@cfunction` around
MPI.Allreduce!); C_NULL detaches."""
function set_collective!(s::Subspace, allreduce::Ptr{Cvoid}, rank::Integer, size::Integer,
                         user::Ptr{Cvoid}=C_NULL)
    check(ccall((:subsae_subspace_set_collective, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Cvoid}, Int64, Int64, Ptr{Cvoid}), handle(s), allreduce,
                rank, size, user))
    return s
end

"""fn(event, phase, done, total, message) -> false to cancel; nothing removes it."""
function set_callback!(s::Subspace, fn::Union{Nothing,Function})
    if fn === nothing
        check(ccall((:subsae_subspace_set_callback, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}), handle(s), C_NULL, C_NULL))
        s.callback = nothing
    else
        state = CallbackState(fn, nothing)
        check(ccall((:subsae_subspace_set_callback, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}), handle(s), callback_pointer(),
                    pointer_from_objref(state)))
        s.callback = state
    end
    return s
end

function fit!(s::Subspace, b::Buffer)
    status = ccall((:subsae_subspace_fit, libsubsae), Cint, (Ptr{Cvoid}, Ptr{Cvoid}),
                   handle(s), handle(b))
    rethrow_callback(s.callback)
    check(status)
    return s
end

function spectrum(fname::Symbol, s::Subspace, count::Integer)
    out = Vector{Float64}(undef, count)
    status = if fname === :variances
        ccall((:subsae_subspace_variances, libsubsae), Cint, (Ptr{Cvoid}, Ptr{Float64}, Int64),
              handle(s), out, count)
    elseif fname === :singular_values
        ccall((:subsae_subspace_singular_values, libsubsae), Cint,
              (Ptr{Cvoid}, Ptr{Float64}, Int64), handle(s), out, count)
    else
        ccall((:subsae_subspace_explained_ratios, libsubsae), Cint,
              (Ptr{Cvoid}, Ptr{Float64}, Int64), handle(s), out, count)
    end
    check(status)
    return out
end

variances(s::Subspace, count::Integer = get_int(s, SUBSPACE_RANK_FOUND)) =
    spectrum(:variances, s, count)
singular_values(s::Subspace, count::Integer = get_int(s, SUBSPACE_RANK_FOUND)) =
    spectrum(:singular_values, s, count)
explained_ratios(s::Subspace, count::Integer = get_int(s, SUBSPACE_RANK_FOUND)) =
    spectrum(:explained_ratios, s, count)

function total_variance(s::Subspace)
    v = Ref{Float64}(0)
    check(ccall((:subsae_subspace_total_variance, libsubsae), Cint, (Ptr{Cvoid}, Ref{Float64}),
                handle(s), v))
    return v[]
end

function mean(s::Subspace)
    out = Vector{Float32}(undef, get_int(s, SUBSPACE_DIM))
    check(ccall((:subsae_subspace_mean, libsubsae), Cint, (Ptr{Cvoid}, Ptr{Float32}),
                handle(s), out))
    return out
end

"""The top k directions as the columns of a d × k matrix."""
function basis(s::Subspace, k::Integer)
    d = get_int(s, SUBSPACE_DIM)
    out = Matrix{Float32}(undef, d, k)
    check(ccall((:subsae_subspace_basis, libsubsae), Cint,
                (Ptr{Cvoid}, Int64, Ptr{Float32}, Int64), handle(s), k, out, d))
    return out
end

"""(r, exact): the smallest r holding a fraction tau of the variance."""
function effective_rank(s::Subspace, tau::Real = 0.99)
    r = Ref{Int64}(0)
    exact = Ref{Cint}(0)
    check(ccall((:subsae_subspace_effective_rank, libsubsae), Cint,
                (Ptr{Cvoid}, Float64, Ref{Int64}, Ref{Cint}), handle(s), tau, r, exact))
    return Int(r[]), exact[] != 0
end

function entropy_rank(s::Subspace)
    r = Ref{Float64}(0)
    exact = Ref{Cint}(0)
    check(ccall((:subsae_subspace_entropy_rank, libsubsae), Cint,
                (Ptr{Cvoid}, Ref{Float64}, Ref{Cint}), handle(s), r, exact))
    return r[], exact[] != 0
end

"""Coordinates (k × n) of the tokens (columns) of X in the top-k basis."""
function project(s::Subspace, X::AbstractMatrix, k::Integer)
    data, n, d, rs = row_layout(Matrix{Float32}(X))
    out = Matrix{Float32}(undef, k, n)
    GC.@preserve data begin
        check(ccall((:subsae_subspace_project, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Float32}, Int64, Int64, Int64, Ptr{Float32}, Int64),
                    handle(s), pointer(data), n, rs, k, out, k))
    end
    return out
end

"""Tokens (d × n) back from coordinates (k × n)."""
function reconstruct(s::Subspace, C::AbstractMatrix)
    data, n, k, rs = row_layout(Matrix{Float32}(C))
    d = get_int(s, SUBSPACE_DIM)
    out = Matrix{Float32}(undef, d, n)
    GC.@preserve data begin
        check(ccall((:subsae_subspace_reconstruct, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Float32}, Int64, Int64, Int64, Ptr{Float32}, Int64),
                    handle(s), pointer(data), n, rs, k, out, d))
    end
    return out
end

# ---- SAE models -----------------------------------------------------------

"""An SAE or transcoder. `owner` is the Trainer for the model it trains
(not freed here), nothing for an owned model."""
mutable struct Sae
    ptr::Ptr{Cvoid}
    owner::Any
    function Sae(ptr::Ptr{Cvoid}, owner = nothing)
        m = new(ptr, owner)
        owner === nothing && finalizer(close, m)
        return m
    end
end

function Base.close(m::Sae)
    if m.ptr != C_NULL && m.owner === nothing
        ccall((:subsae_sae_free, libsubsae), Cvoid, (Ptr{Cvoid},), m.ptr)
    end
    m.ptr = C_NULL
    return nothing
end

function create_sae(d_in::Integer, d_out::Integer, d_sae::Integer; activation::Integer = ACT_TOPK)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:subsae_sae_create, libsubsae), Cint,
                (Int64, Int64, Int64, Cint, Ref{Ptr{Cvoid}}), d_in, d_out, d_sae, activation, out))
    return Sae(out[])
end

"""Load a saved SAE directory (this library / SAELens, sparsify, lm-saes)."""
function load_sae(dir::AbstractString)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:subsae_sae_load, libsubsae), Cint, (Cstring, Ref{Ptr{Cvoid}}), dir, out))
    return Sae(out[])
end

function Base.copy(m::Sae)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:subsae_sae_clone, libsubsae), Cint, (Ptr{Cvoid}, Ref{Ptr{Cvoid}}),
                handle(m), out))
    return Sae(out[])
end

set_int!(m::Sae, option::Integer, value::Integer) =
    check(ccall((:subsae_sae_set_int, libsubsae), Cint, (Ptr{Cvoid}, Cint, Int64),
                handle(m), option, value))
function get_int(m::Sae, option::Integer)
    v = Ref{Int64}(0)
    check(ccall((:subsae_sae_get_int, libsubsae), Cint, (Ptr{Cvoid}, Cint, Ref{Int64}),
                handle(m), option, v))
    return Int(v[])
end
set_double!(m::Sae, option::Integer, value::Real) =
    check(ccall((:subsae_sae_set_double, libsubsae), Cint, (Ptr{Cvoid}, Cint, Float64),
                handle(m), option, value))
function get_double(m::Sae, option::Integer)
    v = Ref{Float64}(0)
    check(ccall((:subsae_sae_get_double, libsubsae), Cint, (Ptr{Cvoid}, Cint, Ref{Float64}),
                handle(m), option, v))
    return v[]
end

d_in(m::Sae) = get_int(m, SAE_D_IN)
d_out(m::Sae) = get_int(m, SAE_D_OUT)
d_sae(m::Sae) = get_int(m, SAE_D_SAE)

"""A parameter (PARAM_* value 0-6; 5 and 6 in gated models only) as stored, flat in C
(row-major) order."""
function param(m::Sae, p::Integer)
    n = ccall((:subsae_sae_param_size, libsubsae), Int64, (Ptr{Cvoid}, Cint), handle(m), p)
    n < 0 && throw(ArgumentError("unknown parameter $p"))
    out = Vector{Float32}(undef, n)
    check(ccall((:subsae_sae_get_param, libsubsae), Cint, (Ptr{Cvoid}, Cint, Ptr{Float32}, Int64),
                handle(m), p, out, n))
    return out
end

function set_param!(m::Sae, p::Integer, values::AbstractVector{<:Real})
    v = Vector{Float32}(values)
    check(ccall((:subsae_sae_set_param, libsubsae), Cint, (Ptr{Cvoid}, Cint, Ptr{Float32}, Int64),
                handle(m), p, v, length(v)))
    return m
end

fold_scales!(m::Sae) =
    check(ccall((:subsae_sae_fold_scales, libsubsae), Cint, (Ptr{Cvoid},), handle(m)))

"""Dense codes (d_sae × n) of the tokens (columns) of X."""
function encode(m::Sae, X::AbstractMatrix)
    data, n, d, rs = row_layout(Matrix{Float32}(X))
    f = d_sae(m)
    Z = Matrix{Float32}(undef, f, n)
    GC.@preserve data begin
        check(ccall((:subsae_sae_encode, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Float32}, Int64, Int64, Ptr{Float32}, Int64),
                    handle(m), pointer(data), n, rs, Z, f))
    end
    return Z
end

"""(indices, values), each slots × n: the active features of each token,
largest first; indices are 0-based as in C (-1: unused slot)."""
function encode_sparse(m::Sae, X::AbstractMatrix, slots::Integer = get_int(m, SAE_K))
    data, n, d, rs = row_layout(Matrix{Float32}(X))
    idx = Matrix{Int32}(undef, slots, n)
    val = Matrix{Float32}(undef, slots, n)
    GC.@preserve data begin
        check(ccall((:subsae_sae_encode_sparse, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Float32}, Int64, Int64, Int64, Ptr{Int32}, Ptr{Float32}),
                    handle(m), pointer(data), n, rs, slots, idx, val))
    end
    return idx, val
end

"""Reconstruction (d_out × n) from dense codes (d_sae × n)."""
function decode(m::Sae, Z::AbstractMatrix)
    data, n, f, rs = row_layout(Matrix{Float32}(Z))
    d = d_out(m)
    out = Matrix{Float32}(undef, d, n)
    GC.@preserve data begin
        check(ccall((:subsae_sae_decode, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Float32}, Int64, Int64, Ptr{Float32}, Int64),
                    handle(m), pointer(data), n, rs, out, d))
    end
    return out
end

"""Reconstruction (d_out × n) from sparse codes (slots × n each)."""
function decode_sparse(m::Sae, idx::AbstractMatrix{<:Integer}, val::AbstractMatrix{<:Real})
    size(idx) == size(val) || throw(DimensionMismatch("indices and values differ in size"))
    I = Matrix{Int32}(idx)
    V = Matrix{Float32}(val)
    slots, n = size(I)
    d = d_out(m)
    out = Matrix{Float32}(undef, d, n)
    check(ccall((:subsae_sae_decode_sparse, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Int32}, Ptr{Float32}, Int64, Int64, Ptr{Float32}, Int64),
                handle(m), I, V, n, slots, out, d))
    return out
end

"""A skip transcoder's linear path: adds x W_skip^T of the input columns `X`
(d_in × n) to `out` (d_out × n, a decode); nothing for other models."""
function add_skip!(m::Sae, X::AbstractMatrix, out::Matrix{Float32})
    data, n, f, rs = row_layout(Matrix{Float32}(X))
    d = d_out(m)
    size(out) == (d, n) || throw(DimensionMismatch("out must be d_out × n"))
    GC.@preserve data begin
        check(ccall((:subsae_sae_add_skip, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Float32}, Int64, Int64, Ptr{Float32}, Int64),
                    handle(m), pointer(data), n, rs, out, d))
    end
    return out
end

metrics_tuple(v::Vector{Float64}) = NamedTuple{METRIC_NAMES}(Tuple(v))

"""Metrics (a NamedTuple) on all tokens of `input` (against `target`)."""
function evaluate(m::Sae, input::Buffer, target::Union{Nothing,Buffer} = nothing)
    out = Vector{Float64}(undef, METRIC_COUNT)
    check(ccall((:subsae_sae_evaluate, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Float64}, Int64),
                handle(m), handle(input), target === nothing ? C_NULL : handle(target),
                out, METRIC_COUNT))
    return metrics_tuple(out)
end

"""Metrics and each feature's share of the tokens it fired on."""
function evaluate_density(m::Sae, input::Buffer, target::Union{Nothing,Buffer} = nothing)
    out = Vector{Float64}(undef, METRIC_COUNT)
    density = Vector{Float64}(undef, d_sae(m))
    check(ccall((:subsae_sae_evaluate_density, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Float64}, Int64, Ptr{Float64}, Int64),
                handle(m), handle(input), target === nothing ? C_NULL : handle(target),
                out, METRIC_COUNT, density, length(density)))
    return metrics_tuple(out), density
end

"""The Matryoshka prefix widths (empty for a plain model)."""
function matryoshka(m::Sae)
    widths = Vector{Int64}(undef, MATRYOSHKA_MAX)
    count = Ref{Cint}(0)
    check(ccall((:subsae_sae_get_matryoshka, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Int64}, Cint, Ref{Cint}), handle(m), widths, MATRYOSHKA_MAX,
                count))
    return widths[1:count[]]
end

"""Explained variance of each Matryoshka prefix (one value for a plain model)."""
function evaluate_prefixes(m::Sae, input::Buffer, target::Union{Nothing,Buffer} = nothing)
    ev = Vector{Float64}(undef, MATRYOSHKA_MAX)
    count = Ref{Cint}(0)
    check(ccall((:subsae_sae_evaluate_prefixes, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Float64}, Cint, Ref{Cint}),
                handle(m), handle(input), target === nothing ? C_NULL : handle(target), ev,
                MATRYOSHKA_MAX, count))
    return ev[1:count[]]
end

"""SAELens' sparsity.safetensors (log10 densities) at `path`."""
save_sparsity(m::Sae, path::AbstractString, density::Vector{Float64}) =
    check(ccall((:subsae_sae_save_sparsity, libsubsae), Cint,
                (Ptr{Cvoid}, Cstring, Ptr{Float64}, Int64), handle(m), path, density,
                length(density)))

"""Whether the model is a transcoder (reconstructs another site)."""
transcoder(m::Sae) = get_int(m, SAE_TRANSCODER) != 0

"""PRECISION_FP32 or PRECISION_BF16: the encoder's product (set it with
`set_int!(m, SAE_PRECISION, p)`; BF16 is refused without native bf16)."""
encoder_precision(m::Sae) = get_int(m, SAE_PRECISION)
"""Whether the model is a skip transcoder (its output adds x W_skip^T)."""
skip(m::Sae) = get_int(m, SAE_SKIP) != 0

"""The caller metadata of cfg.json, as JSON text."""
function metadata(m::Sae)
    text = Ref{Ptr{UInt8}}(C_NULL)
    check(ccall((:subsae_sae_get_metadata, libsubsae), Cint, (Ptr{Cvoid}, Ref{Ptr{UInt8}}),
                handle(m), text))
    return unsafe_string(text[])
end

set_metadata!(m::Sae, json::AbstractString) =
    check(ccall((:subsae_sae_set_metadata, libsubsae), Cint, (Ptr{Cvoid}, Cstring), handle(m),
                json))

"""Save as an SAELens-layout directory (scales folded in)."""
save(m::Sae, dir::AbstractString) =
    check(ccall((:subsae_sae_save, libsubsae), Cint, (Ptr{Cvoid}, Cstring), handle(m), dir))

# ---- trainer --------------------------------------------------------------

"""Trains a TopK SAE with active-subspace initialisation.
Options by keyword: Trainer(features = 256, k = 8, seed = 1)."""
mutable struct Trainer
    ptr::Ptr{Cvoid}
    callback::Union{Nothing,CallbackState}
    function Trainer(ptr::Ptr{Cvoid})
        t = new(ptr, nothing)
        finalizer(close, t)
        return t
    end
end

function Trainer(; options...)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:subsae_trainer_create, libsubsae), Cint, (Ref{Ptr{Cvoid}},), out))
    t = Trainer(out[])
    for (name, value) in options
        set!(t, name, value)
    end
    return t
end

function Base.close(t::Trainer)
    if t.ptr != C_NULL
        ccall((:subsae_trainer_free, libsubsae), Cvoid, (Ptr{Cvoid},), t.ptr)
        t.ptr = C_NULL
    end
    return nothing
end

"""Train a Matryoshka SAE (topk, batchtopk): nested prefixes of these widths,
strictly increasing, the last = features; empty for a plain one. Before init."""
set_matryoshka!(t::Trainer, widths::Vector{Int64}) =
    check(ccall((:subsae_trainer_set_matryoshka, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Int64}, Cint), handle(t), widths, length(widths)))

function load_checkpoint(dir::AbstractString)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:subsae_trainer_load_checkpoint, libsubsae), Cint, (Cstring, Ref{Ptr{Cvoid}}),
                dir, out))
    return Trainer(out[])
end

set_int!(t::Trainer, option::Integer, value::Integer) =
    check(ccall((:subsae_trainer_set_int, libsubsae), Cint, (Ptr{Cvoid}, Cint, Int64),
                handle(t), option, value))
function get_int(t::Trainer, option::Integer)
    v = Ref{Int64}(0)
    check(ccall((:subsae_trainer_get_int, libsubsae), Cint, (Ptr{Cvoid}, Cint, Ref{Int64}),
                handle(t), option, v))
    return Int(v[])
end
set_double!(t::Trainer, option::Integer, value::Real) =
    check(ccall((:subsae_trainer_set_double, libsubsae), Cint, (Ptr{Cvoid}, Cint, Float64),
                handle(t), option, value))
function get_double(t::Trainer, option::Integer)
    v = Ref{Float64}(0)
    check(ccall((:subsae_trainer_get_double, libsubsae), Cint, (Ptr{Cvoid}, Cint, Ref{Float64}),
                handle(t), option, v))
    return v[]
end

"""Data-parallel worker `rank` of `size`: init, step and fit become collective
(batch is the global batch). `allreduce` is a C function pointer `int (*)(void *data,
int64_t count, int dtype, void *user)` summing in place over the workers; C_NULL
detaches."""
function set_collective!(t::Trainer, allreduce::Ptr{Cvoid}, rank::Integer, size::Integer,
                         user::Ptr{Cvoid}=C_NULL)
    check(ccall((:subsae_trainer_set_collective, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Cvoid}, Int64, Int64, Ptr{Cvoid}), handle(t), allreduce,
                rank, size, user))
    return t
end

"""Set a trainer option by name (:features, :k, :lr, ...)."""
function set!(t::Trainer, name::Symbol, value)
    # The option's number and type are the library's word (subsae_option_*).
    option = find_option(OBJECT_TRAINER, String(name))
    if option_info(OBJECT_TRAINER, option).type === :double
        set_double!(t, option, Float64(value))
    else
        set_int!(t, option, Int64(value))
    end
    return t
end

function set_callback!(t::Trainer, fn::Union{Nothing,Function})
    if fn === nothing
        check(ccall((:subsae_trainer_set_callback, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}), handle(t), C_NULL, C_NULL))
        t.callback = nothing
    else
        state = CallbackState(fn, nothing)
        check(ccall((:subsae_trainer_set_callback, libsubsae), Cint,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}), handle(t), callback_pointer(),
                    pointer_from_objref(state)))
        t.callback = state
    end
    return t
end

function init!(t::Trainer, input::Buffer, target::Union{Nothing,Buffer} = nothing)
    status = ccall((:subsae_trainer_init, libsubsae), Cint, (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}),
                   handle(t), handle(input), target === nothing ? C_NULL : handle(target))
    rethrow_callback(t.callback)
    check(status)
    return t
end

"""One optimiser step on the tokens (columns) of X (and target columns)."""
function step!(t::Trainer, X::AbstractMatrix, Y::Union{Nothing,AbstractMatrix} = nothing)
    data, n, d, rs = row_layout(Matrix{Float32}(X))
    if Y === nothing
        GC.@preserve data begin
            check(ccall((:subsae_trainer_step, libsubsae), Cint,
                        (Ptr{Cvoid}, Ptr{Float32}, Int64, Ptr{Float32}, Int64, Int64),
                        handle(t), pointer(data), rs, C_NULL, 0, n))
        end
    else
        tdata, tn, td, trs = row_layout(Matrix{Float32}(Y))
        tn == n || throw(DimensionMismatch("input has $n tokens, target $tn"))
        GC.@preserve data tdata begin
            check(ccall((:subsae_trainer_step, libsubsae), Cint,
                        (Ptr{Cvoid}, Ptr{Float32}, Int64, Ptr{Float32}, Int64, Int64),
                        handle(t), pointer(data), rs, pointer(tdata), trs, n))
        end
    end
    return t
end

"""Train on `tokens` more tokens of shuffled batches."""
function train!(t::Trainer, input::Buffer, tokens::Integer; target::Union{Nothing,Buffer} = nothing)
    status = ccall((:subsae_trainer_fit, libsubsae), Cint,
                   (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Int64),
                   handle(t), handle(input), target === nothing ? C_NULL : handle(target), tokens)
    rethrow_callback(t.callback)
    check(status)
    return t
end

function metrics(t::Trainer)
    out = Vector{Float64}(undef, METRIC_COUNT)
    check(ccall((:subsae_trainer_metrics, libsubsae), Cint, (Ptr{Cvoid}, Ptr{Float64}, Int64),
                handle(t), out, METRIC_COUNT))
    return metrics_tuple(out)
end

"""Each feature's share of the metrics window's tokens it fired on."""
function feature_density(t::Trainer)
    n = Int(get_int(t, find_option(OBJECT_TRAINER, "features")))
    out = Vector{Float64}(undef, n)
    check(ccall((:subsae_trainer_feature_density, libsubsae), Cint,
                (Ptr{Cvoid}, Ptr{Float64}, Int64), handle(t), out, n))
    return out
end

"""The run's metadata (a JSON object text), saved in checkpoints and cfg.json."""
set_metadata!(t::Trainer, json::AbstractString) =
    check(ccall((:subsae_trainer_set_metadata, libsubsae), Cint, (Ptr{Cvoid}, Cstring),
                handle(t), json))

function metadata(t::Trainer)
    text = Ref{Ptr{UInt8}}(C_NULL)
    check(ccall((:subsae_trainer_get_metadata, libsubsae), Cint, (Ptr{Cvoid}, Ref{Ptr{UInt8}}),
                handle(t), text))
    return unsafe_string(text[])
end

"""Wall seconds per step of each phase (Symbol => seconds: :encode_gemm,
:topk, :decode, :backward, :optimizer, :prepare, :read, :step), averaged over
the steps since creation or `reset_timings!`; NaN before a step."""
function timings(t::Trainer)
    n = phase_count()
    out = Vector{Float64}(undef, n)
    check(ccall((:subsae_trainer_timings, libsubsae), Cint, (Ptr{Cvoid}, Ptr{Float64}, Int64),
                handle(t), out, n))
    return Dict(Symbol(phase_name(i - 1)) => out[i] for i in 1:n)
end

reset_timings!(t::Trainer) =
    check(ccall((:subsae_trainer_reset_timings, libsubsae), Cint, (Ptr{Cvoid},), handle(t)))

"""The model being trained (owned by the trainer; `copy` it to keep it)."""
function model(t::Trainer)
    p = ccall((:subsae_trainer_sae, libsubsae), Ptr{Cvoid}, (Ptr{Cvoid},), handle(t))
    p == C_NULL && throw(SubsaeError(E_STATE, Cint(22), "the trainer has no model before init!"))
    return Sae(p, t)
end

save_checkpoint(t::Trainer, dir::AbstractString) =
    check(ccall((:subsae_trainer_save_checkpoint, libsubsae), Cint, (Ptr{Cvoid}, Cstring),
                handle(t), dir))

end # module
