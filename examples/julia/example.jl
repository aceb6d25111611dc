# libsubsae from Julia: rank a file of the shared stories260K activations,
# check r99 against reference.json, train a tiny SAE and encode a few tokens.
#
#   julia examples/julia/example.jl [ACTIVATIONS.npy [reference.json]]
#
# Defaults: $SUBSAE_SHARED (or ../shared)/data/stories260K/L2_attn_out.npy and
# the reference.json next to it; the library: $SUBSAE_LIB or ../../build.
# Untested: Julia could not be installed where this was written (see
# Subsae.jl); the file is kept syntax-correct against the C API.

include(joinpath(@__DIR__, "Subsae.jl"))
using .Subsae

"""
Read a 2-D little-endian C-order .npy file of float16/float32 as a d × n
Julia matrix: the file's row-major n × d data *is* a column-major d × n
matrix, one token per column, which is the layout Subsae takes without a copy.
"""
function read_npy_tokens_as_columns(path::AbstractString)
    open(path, "r") do io
        magic = read(io, 6)
        magic == UInt8[0x93, UInt8('N'), UInt8('U'), UInt8('M'), UInt8('P'), UInt8('Y')] ||
            error("$path: not a .npy file")
        major = read(io, UInt8)
        read(io, UInt8)  # minor version
        hlen = major == 1 ? Int(ltoh(read(io, UInt16))) : Int(ltoh(read(io, UInt32)))
        header = String(read(io, hlen))
        occursin("'fortran_order': False", header) || error("$path: Fortran order")
        T = occursin("'<f2'", header) ? Float16 :
            occursin("'<f4'", header) ? Float32 : error("$path: dtype not <f2 or <f4")
        m = match(r"'shape': \((\d+), (\d+)\)", header)
        m === nothing && error("$path: not a 2-D array")
        n, d = parse(Int, m.captures[1]), parse(Int, m.captures[2])
        data = Vector{T}(undef, n * d)
        read!(io, data)
        return reshape(ltoh.(data), d, n)
    end
end

"""The number after "field": inside "key": {...} of reference.json."""
function reference_value(text::AbstractString, key::AbstractString, field::AbstractString)
    m = match(Regex("\"" * key * "\"\\s*:\\s*\\{[^}]*?\"" * field * "\"\\s*:\\s*([-+0-9.eE]+)"), text)
    m === nothing && error("reference.json: no $field for $key")
    return parse(Float64, m.captures[1])
end

function main(args)
    shared = get(ENV, "SUBSAE_SHARED", "../shared")
    path = length(args) >= 1 ? args[1] :
           joinpath(shared, "data", "stories260K", "L2_attn_out.npy")
    refpath = length(args) >= 2 ? args[2] : joinpath(dirname(path), "reference.json")
    name = basename(path)
    reftext = read(refpath, String)
    failures = 0
    function expect(ok, what)
        if !ok
            println(stderr, "julia example: check failed: ", what)
            failures += 1
        end
    end
    println("libsubsae ", Subsae.version())

    # Rank the file (opened by the library, memory-mapped).
    acts = open_buffer(path)
    space = fit!(Subspace(), acts)
    r99, exact = effective_rank(space, 0.99)
    ent, _ = entropy_rank(space)
    want = Int(reference_value(reftext, name, "r99"))
    want_entropy = reference_value(reftext, name, "entropy_rank")
    println("$name: $(Subsae.rows(acts)) × $(Subsae.dim(acts)), r99 = $r99 (reference $want), ",
            "entropy rank $(round(ent, digits = 3)) (reference $want_entropy)")
    expect(exact && r99 == want, "r99 $r99 != reference $want")
    expect(abs(ent - want_entropy) < 0.01, "entropy rank $ent")

    # The same tokens as a Julia matrix, one token per column, borrowed.
    X = read_npy_tokens_as_columns(path)           # 64 × 16384 Float16
    mem = wrap(X)
    expect(Subsae.rows(mem) == size(X, 2) && Subsae.dim(mem) == size(X, 1), "wrap shape")
    expect(read_rows(mem, 1, 3) == Float32.(X[:, 1:3]), "borrowed tokens read back")

    # Train a tiny SAE with active-subspace initialisation.
    trainer = Trainer(features = 128, k = 8, batch = 256, init_sample = 4096, seed = 4,
                      init = Subsae.INIT_ACTIVE_SUBSPACE)
    init!(trainer, mem)
    train!(trainer, mem, 16384)
    m = metrics(trainer)
    println("trained $(Int(m.tokens)) tokens: explained variance ",
            round(m.explained_variance, digits = 3), ", L0 ", round(m.l0, digits = 2))
    expect(m.tokens >= 16384, "tokens trained")
    expect(0.5 < m.explained_variance <= 1, "explained variance $(m.explained_variance)")
    expect(0 < m.l0 <= 8, "L0 $(m.l0)")

    # Encode four tokens (columns): dense and sparse codes agree.
    sae = model(trainer)
    x4 = Float32.(X[:, 1:4])
    Z = encode(sae, x4)                            # d_sae × 4
    idx, val = encode_sparse(sae, x4, 8)           # 8 × 4 each, 0-based features
    for t in 1:4, s in 1:8
        f = idx[s, t]
        f >= 0 && expect(isapprox(Z[f + 1, t], val[s, t]; rtol = 1e-5, atol = 1e-6),
                         "sparse code of token $t")
    end

    # Errors arrive as SubsaeError with the library's status and message.
    try
        open_buffer(joinpath(dirname(path), "no-such-file.npy"))
        expect(false, "opening a missing file throws")
    catch e
        e isa SubsaeError || rethrow()
        println("expected error: ", sprint(showerror, e))
        expect(e.status == Subsae.E_IO, "status of a missing file is E_IO")
        expect(occursin("no-such-file.npy", e.message), "the message names the file")
    end

    if failures > 0
        println(stderr, "julia example: $failures check(s) failed")
        return 1
    end
    println("julia example: all checks passed")
    return 0
end

exit(main(ARGS))
