// example.cpp — libsubsae from C++ through the header-only wrapper.
//
//   cpp_example [ACTIVATIONS.npy [reference.json]]
//
// Ranks a file of the shared stories260K data and checks r99 (and the
// entropy rank) against reference.json, trains a tiny SAE with
// active-subspace initialisation, encodes a few rows, and shows errors and
// cancellation arriving as subsae::error. Exits non-zero on any mismatch.
// Defaults: $SUBSAE_SHARED (or ../shared)/data/stories260K/L2_attn_out.npy
// and the reference.json next to the file.
//
//   g++ -std=c++17 -Iexamples/cpp example.cpp $(pkg-config --cflags --libs subsae)
#include "subsae.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace {

int failures = 0;

void expect(bool ok, const std::string &what)
{
    if (!ok) {
        std::cerr << "cpp_example: check failed: " << what << "\n";
        failures++;
    }
}

// The number after "field": inside the object "key": {...} of a JSON file
// (reference.json is flat and regular enough for a string search).
double reference_value(const std::string &json_path, const std::string &key,
                       const std::string &field)
{
    std::ifstream in(json_path);
    if (!in)
        throw std::runtime_error("cannot read " + json_path);
    std::stringstream text;
    text << in.rdbuf();
    const std::string s = text.str();
    size_t at = s.find("\"" + key + "\"");
    if (at == std::string::npos)
        throw std::runtime_error(json_path + ": no entry " + key);
    const size_t end = s.find('}', at);
    at = s.find("\"" + field + "\"", at);
    if (at == std::string::npos || at > end)
        throw std::runtime_error(json_path + ": " + key + " has no " + field);
    at = s.find(':', at);
    return std::strtod(s.c_str() + at + 1, nullptr);
}

std::string default_file()
{
    const char *shared = std::getenv("SUBSAE_SHARED");
    return std::string(shared && *shared ? shared : "../shared") +
           "/data/stories260K/L2_attn_out.npy";
}

} // namespace

int main(int argc, char **argv)
try {
    const std::string file = argc > 1 ? argv[1] : default_file();
    const size_t slash = file.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : file.substr(0, slash);
    const std::string name = slash == std::string::npos ? file : file.substr(slash + 1);
    const std::string reference = argc > 2 ? argv[2] : dir + "/reference.json";
    std::cout << "libsubsae " << subsae::version() << "\n";

    // Rank: exact spectrum of the centred activations.
    auto acts = subsae::Buffer::open(file);
    subsae::Subspace subspace;
    subspace.fit(acts);
    const auto r99 = subspace.effective_rank(0.99);
    const auto entropy = subspace.entropy_rank();
    const auto want_r99 = static_cast<int64_t>(reference_value(reference, name, "r99"));
    const double want_entropy = reference_value(reference, name, "entropy_rank");
    std::cout << name << ": " << acts.rows() << " x " << acts.dim() << ", r99 = " << r99.rank
              << " (reference " << want_r99 << "), entropy rank " << entropy.rank
              << " (reference " << want_entropy << ")\n";
    expect(r99.exact && r99.rank == want_r99, "r99 " + std::to_string(r99.rank) +
                                                  " != reference " + std::to_string(want_r99));
    expect(std::fabs(entropy.rank - want_entropy) < 0.01, "entropy rank " +
                                                              std::to_string(entropy.rank));
    const auto ratios = subspace.explained_ratios(acts.dim());
    double sum = 0;
    for (double r : ratios)
        sum += r;
    expect(std::fabs(sum - 1.0) < 1e-9, "explained ratios sum to " + std::to_string(sum));

    // Train a tiny SAE with active-subspace initialisation.
    subsae::Trainer trainer;
    trainer.set_int(SUBSAE_TRAIN_FEATURES, 128);
    trainer.set_int(SUBSAE_TRAIN_K, 8);
    trainer.set_int(SUBSAE_TRAIN_BATCH, 256);
    trainer.set_int(SUBSAE_TRAIN_INIT_SAMPLE, 4096);
    trainer.set_int(SUBSAE_TRAIN_SEED, 3);
    int64_t last_done = -1;
    int events = 0;
    trainer.set_callback([&](int event, const char *, int64_t done, int64_t, const std::string &) {
        if (event == SUBSAE_EVENT_PROGRESS) {
            events++;
            last_done = done;
        }
        return true;
    });
    trainer.init(acts);
    trainer.fit(acts, 16384);
    const auto m = trainer.metrics();
    std::cout << "trained " << m[SUBSAE_METRIC_TOKENS] << " tokens: explained variance "
              << m[SUBSAE_METRIC_EXPLAINED_VARIANCE] << ", L0 " << m[SUBSAE_METRIC_L0]
              << ", dead " << 100 * m[SUBSAE_METRIC_DEAD_FRACTION] << " % (" << events
              << " progress events)\n";
    expect(m[SUBSAE_METRIC_TOKENS] >= 16384, "tokens trained");
    expect(m[SUBSAE_METRIC_EXPLAINED_VARIANCE] > 0.5 && m[SUBSAE_METRIC_EXPLAINED_VARIANCE] <= 1,
           "explained variance " + std::to_string(m[SUBSAE_METRIC_EXPLAINED_VARIANCE]));
    expect(m[SUBSAE_METRIC_L0] > 0 && m[SUBSAE_METRIC_L0] <= 8, "L0");
    expect(events > 0 && last_done > 0, "the progress callback was called");

    // A Matryoshka SAE: nested prefixes of 32 and 128 features.
    subsae::Trainer nested;
    nested.set_int(SUBSAE_TRAIN_FEATURES, 128);
    nested.set_int(SUBSAE_TRAIN_K, 8);
    nested.set_int(SUBSAE_TRAIN_BATCH, 256);
    nested.set_int(SUBSAE_TRAIN_INIT_SAMPLE, 4096);
    nested.set_matryoshka({32, 128});
    nested.init(acts);
    nested.fit(acts, 8192);
    expect(nested.sae().matryoshka() == std::vector<int64_t>{32, 128}, "Matryoshka widths");
    const auto prefixes = nested.sae().evaluate_prefixes(acts);
    expect(prefixes.size() == 2 && prefixes[0] < prefixes[1], "prefix explained variance");

    // Encode a few rows: dense and sparse codes agree.
    const auto model = trainer.sae();
    const auto x = acts.read(0, 4);
    const auto z = model.encode(x.data(), 4, acts.dim());
    const auto codes = model.encode_sparse(x.data(), 4, acts.dim(), 8);
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 8; j++) {
            const int32_t f = codes.indices[i * 8 + j];
            if (f >= 0)
                expect(std::fabs(z[i * model.d_sae() + f] - codes.values[i * 8 + j]) <=
                           1e-5f * (1.0f + std::fabs(codes.values[i * 8 + j])),
                       "sparse code matches the dense one");
        }
    const auto back = model.decode_sparse(codes);
    expect(back.size() == x.size(), "decode_sparse size");

    // A gated SAE (SAELens "gated"): r_mag and b_mag beside the gate's bias b_enc.
    subsae::Trainer gated;
    gated.set_int(SUBSAE_TRAIN_FEATURES, 128);
    gated.set_int(SUBSAE_TRAIN_ACTIVATION, SUBSAE_ACT_GATED);
    gated.set_double(SUBSAE_TRAIN_L1_COEF, 2.0);
    gated.set_int(SUBSAE_TRAIN_BATCH, 256);
    gated.set_int(SUBSAE_TRAIN_INIT_SAMPLE, 4096);
    gated.init(acts);
    gated.fit(acts, 16384);
    const auto g = gated.sae();
    const auto ge = g.evaluate(acts);
    std::cout << "gated SAE: explained variance " << ge[SUBSAE_METRIC_EXPLAINED_VARIANCE]
              << " at L0 " << ge[SUBSAE_METRIC_L0] << "\n";
    expect(g.param(SUBSAE_PARAM_R_MAG).size() == 128, "a gated model has r_mag");
    expect(ge[SUBSAE_METRIC_L0] > 0 && ge[SUBSAE_METRIC_L0] < 128 &&
               ge[SUBSAE_METRIC_EXPLAINED_VARIANCE] > 0.5,
           "gated evaluation");

    // Errors arrive as subsae::error with the library's status and message.
    try {
        subsae::Buffer::open(dir + "/no-such-file.npy");
        expect(false, "opening a missing file throws");
    } catch (const subsae::error &e) {
        std::cout << "expected error: " << e.what() << " [" << e.reason_name() << "]\n";
        expect(e.status() == SUBSAE_E_IO, "status of a missing file is SUBSAE_E_IO");
        expect(e.message().find("no-such-file.npy") != std::string::npos,
               "the message names the file");
    }

    // A callback returning false cancels the call cleanly.
    trainer.set_callback([](int, const char *, int64_t, int64_t, const std::string &) {
        return false;
    });
    try {
        trainer.fit(acts, 4096);
        expect(false, "a cancelled fit throws");
    } catch (const subsae::error &e) {
        expect(e.status() == SUBSAE_E_CANCELLED, std::string("cancelled fit: ") + e.what());
    }

    if (failures) {
        std::cerr << "cpp_example: " << failures << " check(s) failed\n";
        return 1;
    }
    std::cout << "cpp_example: all checks passed\n";
    return 0;
} catch (const subsae::error &e) {
    std::cerr << "cpp_example: " << e.what() << " (status " << e.status() << ", reason "
              << e.reason_name() << ")\n";
    return 1;
} catch (const std::exception &e) {
    std::cerr << "cpp_example: " << e.what() << "\n";
    return 1;
}
