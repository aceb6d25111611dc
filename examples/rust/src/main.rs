//! libsubsae from Rust: rank a file of the shared stories260K activations,
//! check r99 against reference.json, train a tiny SAE with active-subspace
//! initialisation and encode a few rows. Exits non-zero on any mismatch.
//!
//!   cargo run --offline --release -- [ACTIVATIONS.npy [reference.json]]
//!
//! Defaults: $SUBSAE_SHARED (or the source tree's ../shared)
//! /data/stories260K/L2_attn_out.npy and the reference.json next to it.
use std::env;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use subsae::{sys, Buffer, Model, Subspace, Trainer};

/// The number after `"field":` inside the object `"key": {...}` of
/// reference.json (flat and regular: a string search is enough).
fn reference_value(json: &str, key: &str, field: &str) -> Option<f64> {
    let start = json.find(&format!("\"{}\"", key))?;
    let object = &json[start..];
    let object = &object[..object.find('}')?];
    let at = object.find(&format!("\"{}\"", field))?;
    let rest = object[at..].split_once(':')?.1.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn default_file() -> PathBuf {
    let shared = match env::var("SUBSAE_SHARED") {
        Ok(s) if !s.is_empty() => PathBuf::from(s),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    shared.join("data/stories260K/L2_attn_out.npy")
}

struct Checks(u32);

impl Checks {
    fn expect(&mut self, ok: bool, what: &str) {
        if !ok {
            eprintln!("rust example: check failed: {}", what);
            self.0 += 1;
        }
    }
}

fn run() -> Result<u32, Box<dyn std::error::Error>> {
    let args: Vec<String> = env::args().collect();
    let file = args.get(1).map(PathBuf::from).unwrap_or_else(default_file);
    let reference = args.get(2).map(PathBuf::from).unwrap_or_else(|| {
        file.parent()
            .unwrap_or(Path::new("."))
            .join("reference.json")
    });
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    let mut checks = Checks(0);
    println!("libsubsae {}", subsae::version());

    // Rank.
    let acts = Buffer::open(&file)?;
    let mut subspace = Subspace::new()?;
    subspace.fit(&acts)?;
    let (r99, exact) = subspace.effective_rank(0.99)?;
    let (entropy, _) = subspace.entropy_rank()?;
    let json = std::fs::read_to_string(&reference)?;
    let want_r99 = reference_value(&json, &name, "r99")
        .ok_or_else(|| format!("{}: no r99 for {}", reference.display(), name))?;
    let want_entropy = reference_value(&json, &name, "entropy_rank")
        .ok_or_else(|| format!("{}: no entropy_rank for {}", reference.display(), name))?;
    println!(
        "{}: {} x {}, r99 = {} (reference {}), entropy rank {:.3} (reference {})",
        name,
        acts.rows(),
        acts.dim(),
        r99,
        want_r99,
        entropy,
        want_entropy
    );
    checks.expect(
        exact && r99 as f64 == want_r99,
        &format!("r99 {} != reference {}", r99, want_r99),
    );
    checks.expect(
        (entropy - want_entropy).abs() < 0.01,
        &format!("entropy rank {}", entropy),
    );

    // Train a tiny SAE (ASI is the default initialisation).
    let mut trainer = Trainer::new()?;
    trainer.set_int(sys::SUBSAE_TRAIN_FEATURES, 128)?;
    trainer.set_int(sys::SUBSAE_TRAIN_K, 8)?;
    trainer.set_int(sys::SUBSAE_TRAIN_BATCH, 256)?;
    trainer.set_int(sys::SUBSAE_TRAIN_INIT_SAMPLE, 4096)?;
    trainer.set_int(sys::SUBSAE_TRAIN_SEED, 5)?;
    let progress = Arc::new(AtomicI64::new(-1));
    let seen = Arc::clone(&progress);
    trainer.set_callback(move |event, _phase, done, _total, _message| {
        if event == subsae::Event::Progress {
            seen.store(done, Ordering::Relaxed);
        }
        true
    })?;
    trainer.init(&acts, None)?;
    trainer.fit(&acts, None, 16384)?;
    let m = trainer.metrics()?;
    println!(
        "trained {} tokens: explained variance {:.3}, L0 {:.2}, dead {:.1} %",
        m.tokens(),
        m.explained_variance(),
        m.l0(),
        100.0 * m.dead_fraction()
    );
    checks.expect(m.tokens() >= 16384.0, "tokens trained");
    checks.expect(
        m.explained_variance() > 0.5 && m.explained_variance() <= 1.0,
        &format!("explained variance {}", m.explained_variance()),
    );
    checks.expect(m.l0() > 0.0 && m.l0() <= 8.0, &format!("L0 {}", m.l0()));
    checks.expect(
        progress.load(Ordering::Relaxed) > 0,
        "the progress callback was called",
    );

    // Encode a few rows and decode them back.
    let model = trainer.sae().ok_or("no model after init")?;
    let d = acts.dim();
    let x = acts.read(0, 4)?;
    let codes = model.encode_sparse(&x, 4, d, 8)?;
    for row in 0..4 {
        let slots = &codes.indices[row * 8..row * 8 + 8];
        let values = &codes.values[row * 8..row * 8 + 8];
        let shown: Vec<String> = slots
            .iter()
            .zip(values)
            .filter(|(i, _)| **i >= 0)
            .map(|(i, v)| format!("{}:{:.3}", i, v))
            .collect();
        println!("row {}: {}", row, shown.join(" "));
        checks.expect(
            slots
                .iter()
                .all(|&i| i == -1 || (i >= 0 && (i as usize) < model.d_sae())),
            "indices in range",
        );
        checks.expect(values.windows(2).all(|w| w[0] >= w[1]), "values descending");
    }
    let back = model.decode_sparse(&codes)?;
    let tail = acts.view(acts.rows() - 2048, 2048)?;
    let e = model.evaluate(&tail, None)?;
    println!(
        "evaluated on the last 2048 rows: explained variance {:.3}",
        e.explained_variance()
    );
    checks.expect(tail.rows() == 2048, "view rows");
    checks.expect(
        e.explained_variance() > 0.5,
        "evaluation explained variance",
    );
    checks.expect(back.len() == 4 * d, "decode_sparse size");

    // A gated SAE (SAELens "gated"): r_mag and b_mag beside the gate's bias b_enc.
    let mut gated = Trainer::new()?;
    gated.set_int(sys::SUBSAE_TRAIN_FEATURES, 128)?;
    gated.set_int(sys::SUBSAE_TRAIN_ACTIVATION, sys::SUBSAE_ACT_GATED.into())?;
    gated.set_double(sys::SUBSAE_TRAIN_L1_COEF, 2.0)?;
    gated.set_int(sys::SUBSAE_TRAIN_BATCH, 256)?;
    gated.set_int(sys::SUBSAE_TRAIN_INIT_SAMPLE, 4096)?;
    gated.init(&acts, None)?;
    gated.fit(&acts, None, 16384)?;
    let g = gated.sae().ok_or("no gated model after init")?;
    let r_mag = g.param(sys::SUBSAE_PARAM_R_MAG)?;
    let ge = g.evaluate(&tail, None)?;
    println!(
        "gated SAE: explained variance {:.3} at L0 {:.1}",
        ge.explained_variance(),
        ge.l0()
    );
    checks.expect(r_mag.len() == 128, "a gated model has r_mag");
    checks.expect(
        ge.l0() > 0.0 && ge.l0() < 128.0 && ge.explained_variance() > 0.5,
        "gated evaluation",
    );

    // A Matryoshka SAE: nested prefixes of 32 and 128 features.
    let mut nested = Trainer::new()?;
    nested.set_int(sys::SUBSAE_TRAIN_FEATURES, 128)?;
    nested.set_int(sys::SUBSAE_TRAIN_K, 8)?;
    nested.set_int(sys::SUBSAE_TRAIN_BATCH, 256)?;
    nested.set_int(sys::SUBSAE_TRAIN_INIT_SAMPLE, 4096)?;
    nested.set_matryoshka(&[32, 128])?;
    nested.init(&acts, None)?;
    nested.fit(&acts, None, 8192)?;
    let nested_model = nested.sae().ok_or("no model after init")?;
    checks.expect(nested_model.matryoshka()? == vec![32, 128], "Matryoshka widths");
    let prefixes = nested_model.evaluate_prefixes(&tail, None)?;
    checks.expect(
        prefixes.len() == 2 && prefixes[0] < prefixes[1],
        "prefix explained variance",
    );

    // Errors carry the library's status and message.
    match Buffer::open(file.with_file_name("no-such-file.npy")) {
        Ok(_) => checks.expect(false, "opening a missing file fails"),
        Err(e) => {
            println!("expected error: {} [status {}]", e, e.status);
            checks.expect(
                e.status == sys::SUBSAE_E_IO,
                "missing file gives SUBSAE_E_IO",
            );
            checks.expect(
                e.message.contains("no-such-file.npy"),
                "the message names the file",
            );
        }
    }
    Ok(checks.0)
}

fn main() -> ExitCode {
    match run() {
        Ok(0) => {
            println!("rust example: all checks passed");
            ExitCode::SUCCESS
        }
        Ok(n) => {
            eprintln!("rust example: {} check(s) failed", n);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rust example: {}", e);
            ExitCode::FAILURE
        }
    }
}
