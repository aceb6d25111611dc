//! Raw `extern "C"` declarations of the whole libsubsae API
//! (include/subsae.h), with its enum values as constants. Everything here is
//! `unsafe`; the safe types are in the crate root.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_uint, c_void};

// ---- opaque handles -------------------------------------------------------
#[repr(C)]
pub struct subsae_buffer {
    _private: [u8; 0],
}
#[repr(C)]
pub struct subsae_batches {
    _private: [u8; 0],
}
#[repr(C)]
pub struct subsae_subspace {
    _private: [u8; 0],
}
#[repr(C)]
pub struct subsae_sae {
    _private: [u8; 0],
}
#[repr(C)]
pub struct subsae_trainer {
    _private: [u8; 0],
}

/// `int (*)(int event, const char *phase, int64_t done, int64_t total,
/// const char *message, void *user)`.
pub type subsae_callback = Option<
    unsafe extern "C" fn(
        event: c_int,
        phase: *const c_char,
        done: i64,
        total: i64,
        message: *const c_char,
        user: *mut c_void,
    ) -> c_int,
>;

/// `int (*)(void *data, int64_t count, int dtype, void *user)`: the caller's
/// all-reduce (sum in place over the workers, F32 or F64), e.g. around
/// MPI_Allreduce; see `subsae_trainer_set_collective`.
pub type subsae_allreduce_fn = Option<
    unsafe extern "C" fn(data: *mut c_void, count: i64, dtype: c_int, user: *mut c_void) -> c_int,
>;

// ---- constants (fixed ABI values) ---------------------------------------
pub const SUBSAE_OK: c_int = 0;
pub const SUBSAE_E_INVALID: c_int = -1;
pub const SUBSAE_E_NOMEM: c_int = -2;
pub const SUBSAE_E_IO: c_int = -3;
pub const SUBSAE_E_FORMAT: c_int = -4;
pub const SUBSAE_E_NONFINITE: c_int = -5;
pub const SUBSAE_E_STATE: c_int = -6;
pub const SUBSAE_E_UNSUPPORTED: c_int = -7;
pub const SUBSAE_E_RANGE: c_int = -8;
pub const SUBSAE_E_CANCELLED: c_int = -9;

pub const SUBSAE_EVENT_PROGRESS: c_int = 0;
pub const SUBSAE_EVENT_LOG: c_int = 1;

pub const SUBSAE_DTYPE_F32: c_int = 0;
pub const SUBSAE_DTYPE_F16: c_int = 1;
pub const SUBSAE_DTYPE_BF16: c_int = 2;
pub const SUBSAE_DTYPE_F64: c_int = 3;
pub const SUBSAE_DTYPE_I32: c_int = 4;

pub const SUBSAE_COPY: c_int = 0;
pub const SUBSAE_BORROW: c_int = 1;

pub const SUBSAE_FORMAT_MEMORY: c_int = 0;
pub const SUBSAE_FORMAT_NPY: c_int = 1;
pub const SUBSAE_FORMAT_SAFETENSORS: c_int = 2;

pub const SUBSAE_BATCH_SHUFFLE: c_int = 1;
pub const SUBSAE_BATCH_DROP_LAST: c_int = 2;

pub const SUBSAE_METHOD_AUTO: c_int = 0;
pub const SUBSAE_METHOD_EXACT: c_int = 1;
pub const SUBSAE_METHOD_RANDOMIZED: c_int = 2;

pub const SUBSAE_SUBSPACE_METHOD: c_int = 0;
pub const SUBSAE_SUBSPACE_RANK: c_int = 1;
pub const SUBSAE_SUBSPACE_OVERSAMPLE: c_int = 2;
pub const SUBSAE_SUBSPACE_POWER_ITERS: c_int = 3;
pub const SUBSAE_SUBSPACE_SEED: c_int = 4;
pub const SUBSAE_SUBSPACE_CENTER: c_int = 5;
pub const SUBSAE_SUBSPACE_BATCH_ROWS: c_int = 6;
pub const SUBSAE_SUBSPACE_THRESHOLD: c_int = 7;
pub const SUBSAE_SUBSPACE_METHOD_USED: c_int = 100;
pub const SUBSAE_SUBSPACE_DIM: c_int = 101;
pub const SUBSAE_SUBSPACE_ROWS: c_int = 102;
pub const SUBSAE_SUBSPACE_RANK_FOUND: c_int = 103;
pub const SUBSAE_SUBSPACE_SECONDS: c_int = 104;

pub const SUBSAE_ACT_TOPK: c_int = 0;
pub const SUBSAE_ACT_BATCHTOPK: c_int = 1;
pub const SUBSAE_ACT_JUMPRELU: c_int = 2;
pub const SUBSAE_ACT_RELU: c_int = 3;
pub const SUBSAE_PRECISION_FP32: c_int = 0;
pub const SUBSAE_PRECISION_BF16: c_int = 1;
pub const SUBSAE_PRECISION_AUTO: c_int = 2;
pub const SUBSAE_ACT_GATED: c_int = 4;

pub const SUBSAE_PARAM_W_ENC: c_int = 0;
pub const SUBSAE_PARAM_B_ENC: c_int = 1;
pub const SUBSAE_PARAM_W_DEC: c_int = 2;
pub const SUBSAE_PARAM_B_DEC: c_int = 3;
pub const SUBSAE_PARAM_THRESHOLD: c_int = 4;
/// Gated models only (b_enc is the gate bias, SAELens' b_gate).
pub const SUBSAE_PARAM_R_MAG: c_int = 5;
pub const SUBSAE_PARAM_B_MAG: c_int = 6;

pub const SUBSAE_SAE_D_IN: c_int = 0;
pub const SUBSAE_SAE_D_OUT: c_int = 1;
pub const SUBSAE_SAE_D_SAE: c_int = 2;
pub const SUBSAE_SAE_ACTIVATION: c_int = 3;
pub const SUBSAE_SAE_K: c_int = 4;
pub const SUBSAE_SAE_APPLY_B_DEC_TO_INPUT: c_int = 5;
pub const SUBSAE_SAE_RANK_BY_DECODER_NORM: c_int = 6;
pub const SUBSAE_SAE_INPUT_SCALE: c_int = 7;
pub const SUBSAE_SAE_OUTPUT_SCALE: c_int = 8;
pub const SUBSAE_SAE_TRANSCODER: c_int = 9;
pub const SUBSAE_SAE_PRECISION: c_int = 10;
pub const SUBSAE_SAE_SKIP: c_int = 11;

pub const SUBSAE_OBJECT_TRAINER: c_int = 0;
pub const SUBSAE_OBJECT_SUBSPACE: c_int = 1;
pub const SUBSAE_OBJECT_SAE: c_int = 2;
pub const SUBSAE_OPTION_INT: c_int = 0;
pub const SUBSAE_OPTION_DOUBLE: c_int = 1;
pub const SUBSAE_OPTION_READ_ONLY: c_int = 1;
pub const SUBSAE_OPTION_STRUCTURAL: c_int = 2;
pub const SUBSAE_OPTION_MIN_EXCLUSIVE: c_int = 4;
pub const SUBSAE_OPTION_MAX_EXCLUSIVE: c_int = 8;
pub const SUBSAE_OPTION_ZERO_MEANS_AUTO: c_int = 16;
pub const SUBSAE_OPTION_CHOICE: c_int = 32;

pub const SUBSAE_METRIC_MSE: usize = 0;
pub const SUBSAE_METRIC_FVU: usize = 1;
pub const SUBSAE_METRIC_EXPLAINED_VARIANCE: usize = 2;
pub const SUBSAE_METRIC_L0: usize = 3;
pub const SUBSAE_METRIC_DEAD_FRACTION: usize = 4;
pub const SUBSAE_METRIC_DEAD_FEATURES: usize = 5;
pub const SUBSAE_METRIC_DENSE_FRACTION: usize = 6;
pub const SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION: usize = 7;
pub const SUBSAE_METRIC_TOKENS: usize = 8;
pub const SUBSAE_METRIC_STEPS: usize = 9;
pub const SUBSAE_METRIC_LOSS: usize = 10;
pub const SUBSAE_METRIC_LR: usize = 11;
pub const SUBSAE_METRIC_LOSS_MSE: usize = 12;
pub const SUBSAE_METRIC_LOSS_SPARSITY: usize = 13;
pub const SUBSAE_METRIC_LOSS_AUX: usize = 14;
pub const SUBSAE_METRIC_BF16_DISAGREEMENT: usize = 15;
pub const SUBSAE_METRIC_STEP_MSE: usize = 16;
pub const SUBSAE_METRIC_STEP_EXPLAINED_VARIANCE: usize = 17;
pub const SUBSAE_METRIC_STEP_L0: usize = 18;
pub const SUBSAE_METRIC_COUNT: usize = 19;

pub const SUBSAE_PHASE_ENCODE_GEMM: usize = 0;
pub const SUBSAE_PHASE_TOPK: usize = 1;
pub const SUBSAE_PHASE_DECODE: usize = 2;
pub const SUBSAE_PHASE_BACKWARD: usize = 3;
pub const SUBSAE_PHASE_OPTIMIZER: usize = 4;
pub const SUBSAE_PHASE_PREPARE: usize = 5;
pub const SUBSAE_PHASE_READ: usize = 6;
pub const SUBSAE_PHASE_STEP: usize = 7;
pub const SUBSAE_PHASE_COUNT: usize = 8;

pub const SUBSAE_INIT_RANDOM: i64 = 0;
pub const SUBSAE_INIT_ACTIVE_SUBSPACE: i64 = 1;
pub const SUBSAE_DECODER_FREE: i64 = 0;
pub const SUBSAE_DECODER_UNIT: i64 = 1;
pub const SUBSAE_COEF_UNIFORM: i64 = 0;
pub const SUBSAE_COEF_GAUSSIAN: i64 = 1;

pub const SUBSAE_TRAIN_FEATURES: c_int = 0;
pub const SUBSAE_TRAIN_ACTIVATION: c_int = 1;
pub const SUBSAE_TRAIN_K: c_int = 2;
pub const SUBSAE_TRAIN_LR: c_int = 3;
pub const SUBSAE_TRAIN_BATCH: c_int = 4;
pub const SUBSAE_TRAIN_WARMUP_STEPS: c_int = 5;
pub const SUBSAE_TRAIN_COOLDOWN_STEPS: c_int = 6;
pub const SUBSAE_TRAIN_CLIP_NORM: c_int = 7;
pub const SUBSAE_TRAIN_SEED: c_int = 8;
pub const SUBSAE_TRAIN_DEAD_WINDOW: c_int = 9;
pub const SUBSAE_TRAIN_INIT: c_int = 10;
pub const SUBSAE_TRAIN_SUBSPACE_DIM: c_int = 11;
pub const SUBSAE_TRAIN_SCALE_SEARCH: c_int = 12;
pub const SUBSAE_TRAIN_DECODER_NORM: c_int = 13;
pub const SUBSAE_TRAIN_SPARSE_ADAM: c_int = 14;
pub const SUBSAE_TRAIN_THREADS: c_int = 15;
pub const SUBSAE_TRAIN_INIT_SAMPLE: c_int = 16;
pub const SUBSAE_TRAIN_ADAM_BETA1: c_int = 17;
pub const SUBSAE_TRAIN_ADAM_BETA2: c_int = 18;
pub const SUBSAE_TRAIN_ADAM_EPS: c_int = 19;
pub const SUBSAE_TRAIN_AUXK_COEF: c_int = 20;
pub const SUBSAE_TRAIN_AUXK_K: c_int = 21;
pub const SUBSAE_TRAIN_L1_COEF: c_int = 22;
pub const SUBSAE_TRAIN_L0_COEF: c_int = 23;
pub const SUBSAE_TRAIN_JUMPRELU_BANDWIDTH: c_int = 24;
pub const SUBSAE_TRAIN_INIT_THRESHOLD: c_int = 25;
pub const SUBSAE_TRAIN_SUBSPACE_COEFFICIENTS: c_int = 26;
pub const SUBSAE_TRAIN_PRECISION: c_int = 27;
pub const SUBSAE_TRAIN_COEF_WARMUP_STEPS: c_int = 28;
pub const SUBSAE_MATRYOSHKA_MAX: usize = 64;
pub const SUBSAE_TRAIN_SKIP: c_int = 29;

extern "C" {
    // ---- version, errors, threads --------------------------------------
    pub fn subsae_version_number() -> c_uint;
    pub fn subsae_version_string() -> *const c_char;
    pub fn subsae_encoder_isa() -> *const c_char;
    pub fn subsae_encoder_kernel(precision: c_int) -> *const c_char;
    pub fn subsae_precision_resolve(precision: c_int) -> c_int;
    pub fn subsae_status_string(status: c_int) -> *const c_char;
    pub fn subsae_reason_string(reason: c_int) -> *const c_char;
    pub fn subsae_last_error() -> *const c_char;
    pub fn subsae_last_error_status() -> c_int;
    pub fn subsae_last_error_reason() -> c_int;
    pub fn subsae_clear_error();
    pub fn subsae_set_num_threads(n: c_int) -> c_int;
    pub fn subsae_get_num_threads() -> c_int;
    pub fn subsae_dtype_name(dtype: c_int) -> *const c_char;

    // ---- buffers -------------------------------------------------------
    pub fn subsae_buffer_create(dim: i64, out: *mut *mut subsae_buffer) -> c_int;
    pub fn subsae_buffer_append(
        buf: *mut subsae_buffer,
        rows: *const c_void,
        dtype: c_int,
        n_rows: i64,
        row_stride: i64,
    ) -> c_int;
    pub fn subsae_buffer_wrap(
        data: *const c_void,
        dtype: c_int,
        n_rows: i64,
        dim: i64,
        row_stride: i64,
        ownership: c_int,
        out: *mut *mut subsae_buffer,
    ) -> c_int;
    pub fn subsae_buffer_open(
        path: *const c_char,
        tensor: *const c_char,
        out: *mut *mut subsae_buffer,
    ) -> c_int;
    pub fn subsae_buffer_open_shards(
        paths: *const *const c_char,
        n_paths: i64,
        tensor: *const c_char,
        out: *mut *mut subsae_buffer,
    ) -> c_int;
    pub fn subsae_buffer_view(
        buf: *const subsae_buffer,
        first_row: i64,
        n_rows: i64,
        out: *mut *mut subsae_buffer,
    ) -> c_int;
    pub fn subsae_synth(
        dim: i64,
        subspace_dim: i64,
        features: i64,
        k: i64,
        tokens: i64,
        seed: u64,
        out: *mut *mut subsae_buffer,
        dictionary: *mut f32,
    ) -> c_int;
    pub fn subsae_buffer_free(buf: *mut subsae_buffer);
    pub fn subsae_buffer_rows(buf: *const subsae_buffer) -> i64;
    pub fn subsae_buffer_dim(buf: *const subsae_buffer) -> i64;
    pub fn subsae_buffer_read(
        buf: *const subsae_buffer,
        first_row: i64,
        n_rows: i64,
        out: *mut f32,
        out_stride: i64,
    ) -> c_int;
    pub fn subsae_buffer_gather(
        buf: *const subsae_buffer,
        rows: *const i64,
        n_rows: i64,
        out: *mut f32,
        out_stride: i64,
    ) -> c_int;
    pub fn subsae_buffer_skip_nonfinite(buf: *mut subsae_buffer, skipped: *mut i64) -> c_int;
    pub fn subsae_buffer_stats(
        buf: *const subsae_buffer,
        mean: *mut f32,
        mean_norm: *mut f64,
        nonfinite_values: *mut i64,
        first_nonfinite_row: *mut i64,
    ) -> c_int;
    pub fn subsae_buffer_save_npy(
        buf: *const subsae_buffer,
        path: *const c_char,
        dtype: c_int,
    ) -> c_int;
    pub fn subsae_buffer_save_safetensors(
        buf: *const subsae_buffer,
        path: *const c_char,
        tensor: *const c_char,
        dtype: c_int,
    ) -> c_int;
    pub fn subsae_format_name(format: c_int) -> *const c_char;
    pub fn subsae_buffer_source_count(buf: *const subsae_buffer) -> i64;
    pub fn subsae_buffer_source_info(
        buf: *const subsae_buffer,
        i: i64,
        path: *mut *const c_char,
        format: *mut c_int,
        dtype: *mut c_int,
        ndim: *mut c_int,
        shape: *mut i64,
        max_dims: c_int,
    ) -> c_int;

    // ---- batches -------------------------------------------------------
    pub fn subsae_batches_create(
        buf: *const subsae_buffer,
        batch_size: i64,
        seed: u64,
        flags: c_int,
        out: *mut *mut subsae_batches,
    ) -> c_int;
    pub fn subsae_batches_next_indices(
        it: *mut subsae_batches,
        rows: *mut i64,
        n_rows: *mut i64,
        epoch: *mut i64,
    ) -> c_int;
    pub fn subsae_batches_next(
        it: *mut subsae_batches,
        out: *mut f32,
        out_stride: i64,
        n_rows: *mut i64,
        epoch: *mut i64,
    ) -> c_int;
    pub fn subsae_batches_tell(
        it: *const subsae_batches,
        epoch: *mut i64,
        position: *mut i64,
    ) -> c_int;
    pub fn subsae_batches_seek(it: *mut subsae_batches, epoch: i64, position: i64) -> c_int;
    pub fn subsae_batches_free(it: *mut subsae_batches);

    // ---- subspace ------------------------------------------------------
    pub fn subsae_subspace_create(out: *mut *mut subsae_subspace) -> c_int;
    pub fn subsae_subspace_free(s: *mut subsae_subspace);
    pub fn subsae_subspace_set_int(s: *mut subsae_subspace, option: c_int, value: i64) -> c_int;
    pub fn subsae_subspace_get_int(
        s: *const subsae_subspace,
        option: c_int,
        value: *mut i64,
    ) -> c_int;
    pub fn subsae_subspace_set_double(s: *mut subsae_subspace, option: c_int, value: f64) -> c_int;
    pub fn subsae_subspace_get_double(
        s: *const subsae_subspace,
        option: c_int,
        value: *mut f64,
    ) -> c_int;
    pub fn subsae_subspace_set_callback(
        s: *mut subsae_subspace,
        callback: subsae_callback,
        user: *mut c_void,
    ) -> c_int;
    pub fn subsae_subspace_set_collective(
        s: *mut subsae_subspace,
        allreduce: subsae_allreduce_fn,
        rank: i64,
        size: i64,
        user: *mut c_void,
    ) -> c_int;
    pub fn subsae_subspace_fit(s: *mut subsae_subspace, buf: *const subsae_buffer) -> c_int;
    pub fn subsae_subspace_variances(s: *const subsae_subspace, out: *mut f64, count: i64)
        -> c_int;
    pub fn subsae_subspace_singular_values(
        s: *const subsae_subspace,
        out: *mut f64,
        count: i64,
    ) -> c_int;
    pub fn subsae_subspace_explained_ratios(
        s: *const subsae_subspace,
        out: *mut f64,
        count: i64,
    ) -> c_int;
    pub fn subsae_subspace_total_variance(s: *const subsae_subspace, out: *mut f64) -> c_int;
    pub fn subsae_subspace_mean(s: *const subsae_subspace, out: *mut f32) -> c_int;
    pub fn subsae_subspace_basis(
        s: *const subsae_subspace,
        k: i64,
        out: *mut f32,
        out_stride: i64,
    ) -> c_int;
    pub fn subsae_subspace_effective_rank(
        s: *const subsae_subspace,
        tau: f64,
        r: *mut i64,
        exact: *mut c_int,
    ) -> c_int;
    pub fn subsae_subspace_entropy_rank(
        s: *const subsae_subspace,
        rank: *mut f64,
        exact: *mut c_int,
    ) -> c_int;
    pub fn subsae_subspace_project(
        s: *const subsae_subspace,
        x: *const f32,
        n: i64,
        x_stride: i64,
        k: i64,
        coords: *mut f32,
        coords_stride: i64,
    ) -> c_int;
    pub fn subsae_subspace_reconstruct(
        s: *const subsae_subspace,
        coords: *const f32,
        n: i64,
        coords_stride: i64,
        k: i64,
        x: *mut f32,
        x_stride: i64,
    ) -> c_int;

    // ---- SAE models ----------------------------------------------------
    pub fn subsae_activation_name(activation: c_int) -> *const c_char;
    pub fn subsae_sae_create(
        d_in: i64,
        d_out: i64,
        d_sae: i64,
        activation: c_int,
        out: *mut *mut subsae_sae,
    ) -> c_int;
    pub fn subsae_sae_clone(sae: *const subsae_sae, out: *mut *mut subsae_sae) -> c_int;
    pub fn subsae_sae_free(sae: *mut subsae_sae);
    pub fn subsae_sae_set_int(sae: *mut subsae_sae, option: c_int, value: i64) -> c_int;
    pub fn subsae_sae_get_int(sae: *const subsae_sae, option: c_int, value: *mut i64) -> c_int;
    pub fn subsae_sae_set_double(sae: *mut subsae_sae, option: c_int, value: f64) -> c_int;
    pub fn subsae_sae_get_double(sae: *const subsae_sae, option: c_int, value: *mut f64) -> c_int;
    pub fn subsae_sae_param_size(sae: *const subsae_sae, param: c_int) -> i64;
    pub fn subsae_sae_get_param(
        sae: *const subsae_sae,
        param: c_int,
        out: *mut f32,
        count: i64,
    ) -> c_int;
    pub fn subsae_sae_set_param(
        sae: *mut subsae_sae,
        param: c_int,
        input: *const f32,
        count: i64,
    ) -> c_int;
    pub fn subsae_sae_fold_scales(sae: *mut subsae_sae) -> c_int;
    pub fn subsae_sae_encode(
        sae: *const subsae_sae,
        x: *const f32,
        n: i64,
        x_stride: i64,
        z: *mut f32,
        z_stride: i64,
    ) -> c_int;
    pub fn subsae_sae_encode_sparse(
        sae: *const subsae_sae,
        x: *const f32,
        n: i64,
        x_stride: i64,
        slots: i64,
        indices: *mut i32,
        values: *mut f32,
    ) -> c_int;
    pub fn subsae_sae_decode(
        sae: *const subsae_sae,
        z: *const f32,
        n: i64,
        z_stride: i64,
        out: *mut f32,
        out_stride: i64,
    ) -> c_int;
    pub fn subsae_sae_decode_sparse(
        sae: *const subsae_sae,
        indices: *const i32,
        values: *const f32,
        n: i64,
        slots: i64,
        out: *mut f32,
        out_stride: i64,
    ) -> c_int;
    pub fn subsae_sae_add_skip(
        sae: *const subsae_sae,
        x: *const f32,
        n: i64,
        x_stride: i64,
        out: *mut f32,
        out_stride: i64,
    ) -> c_int;
    pub fn subsae_metric_count() -> c_int;
    pub fn subsae_sae_evaluate(
        sae: *const subsae_sae,
        input: *const subsae_buffer,
        target: *const subsae_buffer,
        metrics: *mut f64,
        n_metrics: i64,
    ) -> c_int;
    pub fn subsae_sae_evaluate_density(
        sae: *const subsae_sae,
        input: *const subsae_buffer,
        target: *const subsae_buffer,
        metrics: *mut f64,
        n_metrics: i64,
        density: *mut f64,
        n_density: i64,
    ) -> c_int;
    pub fn subsae_sae_save_sparsity(
        sae: *const subsae_sae,
        path: *const c_char,
        density: *const f64,
        n: i64,
    ) -> c_int;
    pub fn subsae_sae_set_metadata(sae: *mut subsae_sae, json: *const c_char) -> c_int;
    pub fn subsae_sae_get_metadata(sae: *const subsae_sae, json: *mut *const c_char) -> c_int;
    pub fn subsae_sae_save(sae: *const subsae_sae, dir: *const c_char) -> c_int;
    pub fn subsae_sae_load(dir: *const c_char, out: *mut *mut subsae_sae) -> c_int;
    pub fn subsae_sae_get_matryoshka(
        sae: *const subsae_sae,
        widths: *mut i64,
        capacity: c_int,
        count: *mut c_int,
    ) -> c_int;
    pub fn subsae_sae_evaluate_prefixes(
        sae: *const subsae_sae,
        input: *const subsae_buffer,
        target: *const subsae_buffer,
        ev: *mut f64,
        capacity: c_int,
        count: *mut c_int,
    ) -> c_int;
    pub fn subsae_trainer_set_matryoshka(
        t: *mut subsae_trainer,
        widths: *const i64,
        count: c_int,
    ) -> c_int;

    // ---- trainer -------------------------------------------------------
    pub fn subsae_trainer_create(out: *mut *mut subsae_trainer) -> c_int;
    pub fn subsae_trainer_free(t: *mut subsae_trainer);
    pub fn subsae_trainer_set_int(t: *mut subsae_trainer, option: c_int, value: i64) -> c_int;
    pub fn subsae_trainer_get_int(
        t: *const subsae_trainer,
        option: c_int,
        value: *mut i64,
    ) -> c_int;
    pub fn subsae_trainer_set_double(t: *mut subsae_trainer, option: c_int, value: f64) -> c_int;
    pub fn subsae_trainer_get_double(
        t: *const subsae_trainer,
        option: c_int,
        value: *mut f64,
    ) -> c_int;
    pub fn subsae_trainer_set_callback(
        t: *mut subsae_trainer,
        callback: subsae_callback,
        user: *mut c_void,
    ) -> c_int;
    pub fn subsae_trainer_set_collective(
        t: *mut subsae_trainer,
        allreduce: subsae_allreduce_fn,
        rank: i64,
        size: i64,
        user: *mut c_void,
    ) -> c_int;
    pub fn subsae_trainer_init(
        t: *mut subsae_trainer,
        input: *const subsae_buffer,
        target: *const subsae_buffer,
    ) -> c_int;
    pub fn subsae_trainer_step(
        t: *mut subsae_trainer,
        input: *const f32,
        input_stride: i64,
        target: *const f32,
        target_stride: i64,
        n: i64,
    ) -> c_int;
    pub fn subsae_trainer_fit(
        t: *mut subsae_trainer,
        input: *const subsae_buffer,
        target: *const subsae_buffer,
        tokens: i64,
    ) -> c_int;
    pub fn subsae_trainer_metrics(
        t: *const subsae_trainer,
        metrics: *mut f64,
        n_metrics: i64,
    ) -> c_int;
    pub fn subsae_trainer_feature_density(
        t: *const subsae_trainer,
        density: *mut f64,
        n: i64,
    ) -> c_int;
    pub fn subsae_trainer_set_metadata(t: *mut subsae_trainer, json: *const c_char) -> c_int;
    pub fn subsae_trainer_get_metadata(
        t: *const subsae_trainer,
        json: *mut *const c_char,
    ) -> c_int;
    pub fn subsae_phase_count() -> c_int;
    pub fn subsae_phase_name(phase: c_int) -> *const c_char;
    pub fn subsae_trainer_timings(
        t: *const subsae_trainer,
        seconds_per_step: *mut f64,
        n: i64,
    ) -> c_int;
    pub fn subsae_trainer_reset_timings(t: *mut subsae_trainer) -> c_int;
    pub fn subsae_trainer_sae(t: *const subsae_trainer) -> *const subsae_sae;
    pub fn subsae_trainer_save_checkpoint(t: *const subsae_trainer, dir: *const c_char) -> c_int;
    pub fn subsae_trainer_load_checkpoint(
        dir: *const c_char,
        out: *mut *mut subsae_trainer,
    ) -> c_int;

    // ---- option metadata ------------------------------------------------
    pub fn subsae_option_count(object: c_int) -> c_int;
    pub fn subsae_option_id(object: c_int, index: c_int) -> c_int;
    pub fn subsae_option_find(object: c_int, name: *const c_char, option: *mut c_int) -> c_int;
    pub fn subsae_option_info(
        object: c_int,
        option: c_int,
        name: *mut *const c_char,
        kind: *mut c_int,
        flags: *mut c_int,
        description: *mut *const c_char,
    ) -> c_int;
    pub fn subsae_option_int_bounds(
        object: c_int,
        option: c_int,
        min: *mut i64,
        max: *mut i64,
        default_value: *mut i64,
    ) -> c_int;
    pub fn subsae_option_double_bounds(
        object: c_int,
        option: c_int,
        min: *mut f64,
        max: *mut f64,
        default_value: *mut f64,
    ) -> c_int;

    // ---- fingerprints ---------------------------------------------------
    pub fn subsae_buffer_fingerprint(
        buf: *const subsae_buffer,
        sample_rows: i64,
        out: *mut u64,
    ) -> c_int;
}
