//! Safe Rust binding of libsubsae, with no external crates.
//!
//! `sys` holds the raw `extern "C"` declarations of the whole C API; the
//! types here own its handles and free them on `Drop`: [`Buffer`],
//! [`Batches`], [`Subspace`], [`Sae`] (and [`SaeRef`], the model a
//! [`Trainer`] is training), [`Trainer`]. Every failing call returns
//! [`Error`], carrying the library's status, reason and message. Slices are
//! checked against the sizes they are declared with before they cross the
//! FFI boundary. Matrices are row-major `f32` with a row stride in elements.
//!
//! Linking: `build.rs` finds `libsubsae.so` through `SUBSAE_LIB_DIR` (else
//! `../../build`) and writes an rpath to it.

pub mod sys;

use std::any::Any;
use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, NonNull};

// ---- errors -------------------------------------------------------------

/// A libsubsae call failed: `status` is the `SUBSAE_E_*` code, `reason` the
/// `SUBSAE_REASON_*` code and `message` the library's detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: i32,
    pub reason: i32,
    pub message: String,
}

/// Result of a libsubsae call.
pub type Result<T> = std::result::Result<T, Error>;

fn static_str(p: *const c_char) -> &'static str {
    if p.is_null() {
        ""
    } else {
        // SAFETY: the library returns static NUL-terminated strings.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
    }
}

impl Error {
    /// The calling thread's last error, for a call that returned `status`.
    fn last(status: c_int) -> Error {
        // SAFETY: plain queries of thread-local state.
        let (reason, message) = unsafe {
            (
                sys::subsae_last_error_reason(),
                CStr::from_ptr(sys::subsae_last_error())
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        Error {
            status,
            reason,
            message,
        }
    }

    /// An argument this binding rejects before calling the library.
    fn invalid(message: String) -> Error {
        Error {
            status: sys::SUBSAE_E_INVALID,
            reason: 2, // SUBSAE_REASON_BAD_VALUE
            message,
        }
    }

    /// English name of the status ("invalid argument", "I/O error", ...).
    pub fn status_name(&self) -> &'static str {
        // SAFETY: returns a static string for any code.
        static_str(unsafe { sys::subsae_status_string(self.status) })
    }

    /// English name of the reason.
    pub fn reason_name(&self) -> &'static str {
        // SAFETY: returns a static string for any code.
        static_str(unsafe { sys::subsae_reason_string(self.reason) })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.status_name(),
            self.message,
            self.reason_name()
        )
    }
}

impl std::error::Error for Error {}

fn check(status: c_int) -> Result<()> {
    if status == sys::SUBSAE_OK {
        Ok(())
    } else {
        Err(Error::last(status))
    }
}

fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("string {:?} holds a NUL byte", s)))
}

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {:?} holds a NUL byte", p)))
}

/// A slice must hold `rows` rows of `cols` elements `stride` apart.
fn check_matrix(what: &str, len: usize, rows: usize, cols: usize, stride: usize) -> Result<()> {
    if stride < cols {
        return Err(Error::invalid(format!(
            "{}: row stride {} < {} columns",
            what, stride, cols
        )));
    }
    let need = if rows == 0 {
        0
    } else {
        (rows - 1) * stride + cols
    };
    if len < need {
        return Err(Error::invalid(format!(
            "{}: {} elements, {} rows of {} with stride {} need {}",
            what, len, rows, cols, stride, need
        )));
    }
    Ok(())
}

fn to_i64(n: usize) -> i64 {
    n as i64
}

// ---- library-wide -------------------------------------------------------

/// Version of the linked library, "MAJOR.MINOR.PATCH".
pub fn version() -> &'static str {
    // SAFETY: static string.
    static_str(unsafe { sys::subsae_version_string() })
}

/// Version of the linked library as MAJOR*10000 + MINOR*100 + PATCH.
pub fn version_number() -> u32 {
    // SAFETY: no arguments.
    unsafe { sys::subsae_version_number() }
}

/// oneDNN's instruction set for the encoder's product ("avx512_core_bf16", ...).
pub fn encoder_isa() -> &'static str {
    // SAFETY: static string.
    static_str(unsafe { sys::subsae_encoder_isa() })
}

/// The kernel of the encoder's product at a precision (`sys::SUBSAE_PRECISION_*`).
pub fn encoder_kernel(precision: i32) -> &'static str {
    // SAFETY: static string; any value is accepted.
    static_str(unsafe { sys::subsae_encoder_kernel(precision) })
}

/// What `SUBSAE_PRECISION_AUTO` means here: BF16 or FP32.
pub fn precision_resolve(precision: i32) -> i32 {
    // SAFETY: any value is accepted.
    unsafe { sys::subsae_precision_resolve(precision) }
}

/// Threads used by the library and OpenBLAS (n <= 0: all processors).
pub fn set_num_threads(n: i32) -> Result<()> {
    // SAFETY: no pointers.
    check(unsafe { sys::subsae_set_num_threads(n) })
}

/// Threads the library currently uses.
pub fn num_threads() -> i32 {
    // SAFETY: no arguments.
    unsafe { sys::subsae_get_num_threads() }
}

/// What the library says about one option (`subsae_option_*`): the values
/// its setters accept and the default of a new object.
#[derive(Debug, Clone)]
pub struct OptionInfo {
    pub option: i32,
    pub name: &'static str,
    pub description: &'static str,
    pub flags: i32,
    /// (min, max, default) of an int option.
    pub int_bounds: Option<(i64, i64, i64)>,
    /// (min, max, default) of a double option.
    pub double_bounds: Option<(f64, f64, f64)>,
}

/// Every option of `object` (`sys::SUBSAE_OBJECT_*`), in enum order.
pub fn options(object: i32) -> Result<Vec<OptionInfo>> {
    // SAFETY: no pointers.
    let n = unsafe { sys::subsae_option_count(object) };
    if n < 0 {
        return Err(Error::invalid(format!("unknown object {}", object)));
    }
    (0..n)
        .map(|i| option_info(object, unsafe { sys::subsae_option_id(object, i) }))
        .collect()
}

/// One option of `object`.
pub fn option_info(object: i32, option: i32) -> Result<OptionInfo> {
    let (mut name, mut description) = (ptr::null(), ptr::null());
    let (mut kind, mut flags) = (0, 0);
    // SAFETY: out pointers to locals; the strings are static.
    check(unsafe {
        sys::subsae_option_info(object, option, &mut name, &mut kind, &mut flags, &mut description)
    })?;
    let mut info = OptionInfo {
        option,
        name: static_str(name),
        description: static_str(description),
        flags,
        int_bounds: None,
        double_bounds: None,
    };
    if kind == sys::SUBSAE_OPTION_INT {
        let (mut lo, mut hi, mut def) = (0i64, 0i64, 0i64);
        // SAFETY: out pointers to locals.
        check(unsafe {
            sys::subsae_option_int_bounds(object, option, &mut lo, &mut hi, &mut def)
        })?;
        info.int_bounds = Some((lo, hi, def));
    } else {
        let (mut lo, mut hi, mut def) = (0f64, 0f64, 0f64);
        // SAFETY: out pointers to locals.
        check(unsafe {
            sys::subsae_option_double_bounds(object, option, &mut lo, &mut hi, &mut def)
        })?;
        info.double_bounds = Some((lo, hi, def));
    }
    Ok(info)
}

/// Element types accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    /// IEEE binary16, passed as raw `u16` bits.
    F16,
    /// bfloat16, passed as raw `u16` bits.
    BF16,
    F64,
}

impl Dtype {
    fn code(self) -> c_int {
        match self {
            Dtype::F32 => sys::SUBSAE_DTYPE_F32,
            Dtype::F16 => sys::SUBSAE_DTYPE_F16,
            Dtype::BF16 => sys::SUBSAE_DTYPE_BF16,
            Dtype::F64 => sys::SUBSAE_DTYPE_F64,
        }
    }
}

/// Metrics, in the order of the C enum `subsae_metric`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics(pub [f64; sys::SUBSAE_METRIC_COUNT]);

impl Metrics {
    pub fn mse(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_MSE]
    }
    pub fn fvu(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_FVU]
    }
    pub fn explained_variance(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_EXPLAINED_VARIANCE]
    }
    pub fn l0(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_L0]
    }
    pub fn dead_fraction(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_DEAD_FRACTION]
    }
    pub fn dead_features(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_DEAD_FEATURES]
    }
    pub fn dense_fraction(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_DENSE_FRACTION]
    }
    pub fn zero_frequency_fraction(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_ZERO_FREQUENCY_FRACTION]
    }
    pub fn tokens(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_TOKENS]
    }
    pub fn steps(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_STEPS]
    }
    pub fn loss(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_LOSS]
    }
    /// Training at bf16, last step: the fraction of the selected pairs the
    /// fp32 rescoring changed (NaN at fp32).
    pub fn bf16_disagreement(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_BF16_DISAGREEMENT]
    }
    /// Training, the last step's batch alone: MSE, explained variance
    /// (against the batch's own mean) and L0; NaN before the first step.
    pub fn step_mse(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_STEP_MSE]
    }
    pub fn step_explained_variance(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_STEP_EXPLAINED_VARIANCE]
    }
    pub fn step_l0(&self) -> f64 {
        self.0[sys::SUBSAE_METRIC_STEP_L0]
    }
}

// ---- callbacks ----------------------------------------------------------

/// What a callback is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `done` of `total` units (total -1: unknown).
    Progress,
    /// A log line in `message`.
    Log,
}

type CallbackFn = dyn FnMut(Event, &str, i64, i64, Option<&str>) -> bool + Send;

/// Owned by the handle that registered it; its address is what the library
/// gets as `user`.
struct CallbackState {
    f: Box<CallbackFn>,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn trampoline(
    event: c_int,
    phase: *const c_char,
    done: i64,
    total: i64,
    message: *const c_char,
    user: *mut c_void,
) -> c_int {
    // SAFETY: `user` is the CallbackState registered with the handle, alive
    // as long as the handle (or until replaced).
    let state = &mut *(user as *mut CallbackState);
    let phase = if phase.is_null() {
        ""
    } else {
        CStr::from_ptr(phase).to_str().unwrap_or("")
    };
    let message = if message.is_null() {
        None
    } else {
        CStr::from_ptr(message).to_str().ok()
    };
    let event = if event == sys::SUBSAE_EVENT_LOG {
        Event::Log
    } else {
        Event::Progress
    };
    let f = &mut state.f;
    // A panic must not unwind into C: keep it and rethrow after the call.
    match catch_unwind(AssertUnwindSafe(|| f(event, phase, done, total, message))) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(payload) => {
            state.panic = Some(payload);
            1
        }
    }
}

/// Status of a call that may have run the callback: resume its panic first.
fn after_callback(state: &mut Option<Box<CallbackState>>, status: c_int) -> Result<()> {
    if let Some(s) = state.as_mut() {
        if let Some(payload) = s.panic.take() {
            resume_unwind(payload);
        }
    }
    check(status)
}

// ---- buffers ------------------------------------------------------------

/// Statistics of a buffer (`subsae_buffer_stats`).
#[derive(Debug, Clone)]
pub struct BufferStats {
    pub mean: Vec<f32>,
    pub mean_norm: f64,
    pub nonfinite_values: i64,
    pub first_nonfinite_row: i64,
}

/// One source of a buffer (`subsae_buffer_source_info`).
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub path: Option<String>,
    pub format: i32,
    pub dtype: i32,
    pub shape: Vec<i64>,
}

/// A logical rows x dim `f32` matrix of activations. `'a` is the lifetime
/// of caller memory a borrowed buffer reads (`'static` otherwise).
pub struct Buffer<'a> {
    ptr: NonNull<sys::subsae_buffer>,
    _data: PhantomData<&'a [u8]>,
}

// SAFETY: a buffer is used by one thread at a time (&mut for the mutating
// calls); the library documents its const functions as safe to run
// concurrently on one buffer, which is what &self exposes.
unsafe impl Send for Buffer<'_> {}
unsafe impl Sync for Buffer<'_> {}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        // SAFETY: owned handle, freed once.
        unsafe { sys::subsae_buffer_free(self.ptr.as_ptr()) }
    }
}

fn new_buffer<'a>(status: c_int, p: *mut sys::subsae_buffer) -> Result<Buffer<'a>> {
    check(status)?;
    Ok(Buffer {
        ptr: NonNull::new(p).expect("libsubsae returned a NULL buffer"),
        _data: PhantomData,
    })
}

impl Buffer<'static> {
    /// An empty growable buffer of width `dim`.
    pub fn create(dim: usize) -> Result<Self> {
        let mut p = ptr::null_mut();
        // SAFETY: valid out pointer.
        let status = unsafe { sys::subsae_buffer_create(to_i64(dim), &mut p) };
        new_buffer(status, p)
    }

    /// Synthetic activations: `tokens` rows of width `dim`, each `k` of
    /// `features` known unit atoms lying in a random `subspace_dim`-dimensional
    /// subspace; returns the buffer and the atoms (features x dim, row-major).
    pub fn synth(
        dim: usize,
        subspace_dim: usize,
        features: usize,
        k: usize,
        tokens: usize,
        seed: u64,
    ) -> Result<(Self, Vec<f32>)> {
        let mut atoms = vec![0.0f32; features * dim];
        let mut p = ptr::null_mut();
        // SAFETY: valid out pointer; `atoms` holds features x dim floats.
        let status = unsafe {
            sys::subsae_synth(
                to_i64(dim),
                to_i64(subspace_dim),
                to_i64(features),
                to_i64(k),
                to_i64(tokens),
                seed,
                &mut p,
                atoms.as_mut_ptr(),
            )
        };
        Ok((new_buffer(status, p)?, atoms))
    }

    /// One `.npy` or safetensors file (the only tensor of a safetensors file).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let c = c_path(path.as_ref())?;
        let mut p = ptr::null_mut();
        // SAFETY: NUL-terminated path, valid out pointer.
        let status = unsafe { sys::subsae_buffer_open(c.as_ptr(), ptr::null(), &mut p) };
        new_buffer(status, p)
    }

    /// A named tensor of a safetensors file.
    pub fn open_tensor(path: impl AsRef<Path>, tensor: &str) -> Result<Self> {
        let c = c_path(path.as_ref())?;
        let t = c_string(tensor)?;
        let mut p = ptr::null_mut();
        // SAFETY: NUL-terminated strings, valid out pointer.
        let status = unsafe { sys::subsae_buffer_open(c.as_ptr(), t.as_ptr(), &mut p) };
        new_buffer(status, p)
    }

    /// Several shards as one buffer, rows in order.
    pub fn open_shards<P: AsRef<Path>>(paths: &[P], tensor: Option<&str>) -> Result<Self> {
        let owned = paths
            .iter()
            .map(|p| c_path(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        let t = tensor.map(c_string).transpose()?;
        let mut p = ptr::null_mut();
        // SAFETY: array of NUL-terminated strings alive during the call.
        let status = unsafe {
            sys::subsae_buffer_open_shards(
                ptrs.as_ptr(),
                to_i64(ptrs.len()),
                t.as_ref().map_or(ptr::null(), |t| t.as_ptr()),
                &mut p,
            )
        };
        new_buffer(status, p)
    }

    /// A growable copy of `rows` rows of `dim` floats, `stride` apart.
    pub fn copy_from(data: &[f32], rows: usize, dim: usize, stride: usize) -> Result<Self> {
        check_matrix("Buffer::copy_from", data.len(), rows, dim, stride)?;
        let mut p = ptr::null_mut();
        // SAFETY: the slice holds the declared matrix.
        let status = unsafe {
            sys::subsae_buffer_wrap(
                data.as_ptr() as *const c_void,
                sys::SUBSAE_DTYPE_F32,
                to_i64(rows),
                to_i64(dim),
                to_i64(stride),
                sys::SUBSAE_COPY,
                &mut p,
            )
        };
        new_buffer(status, p)
    }
}

impl<'a> Buffer<'a> {
    /// A buffer reading `data` in place (no copy) for as long as it lives.
    pub fn borrow(data: &'a [f32], rows: usize, dim: usize, stride: usize) -> Result<Self> {
        check_matrix("Buffer::borrow", data.len(), rows, dim, stride)?;
        let mut p = ptr::null_mut();
        // SAFETY: the slice outlives the buffer ('a) and is immutable.
        let status = unsafe {
            sys::subsae_buffer_wrap(
                data.as_ptr() as *const c_void,
                sys::SUBSAE_DTYPE_F32,
                to_i64(rows),
                to_i64(dim),
                to_i64(stride),
                sys::SUBSAE_BORROW,
                &mut p,
            )
        };
        new_buffer(status, p)
    }

    /// A buffer reading 16-bit data (`Dtype::F16` or `Dtype::BF16` bits) in
    /// place, widened to f32 on each read.
    pub fn borrow_half(
        data: &'a [u16],
        dtype: Dtype,
        rows: usize,
        dim: usize,
        stride: usize,
    ) -> Result<Self> {
        if dtype != Dtype::F16 && dtype != Dtype::BF16 {
            return Err(Error::invalid(format!(
                "Buffer::borrow_half: dtype {:?}",
                dtype
            )));
        }
        check_matrix("Buffer::borrow_half", data.len(), rows, dim, stride)?;
        let mut p = ptr::null_mut();
        // SAFETY: as `borrow`.
        let status = unsafe {
            sys::subsae_buffer_wrap(
                data.as_ptr() as *const c_void,
                dtype.code(),
                to_i64(rows),
                to_i64(dim),
                to_i64(stride),
                sys::SUBSAE_BORROW,
                &mut p,
            )
        };
        new_buffer(status, p)
    }

    /// Rows [first, first + n) as a buffer sharing this one's storage; the
    /// borrow keeps this buffer alive and unchanged while the view exists.
    pub fn view(&self, first: usize, n: usize) -> Result<Buffer<'_>> {
        let mut p = ptr::null_mut();
        // SAFETY: valid handle and out pointer; the view borrows `self`.
        let status =
            unsafe { sys::subsae_buffer_view(self.ptr.as_ptr(), to_i64(first), to_i64(n), &mut p) };
        new_buffer(status, p)
    }

    /// Append `n_rows` rows (`stride` apart) to a growable buffer (copied).
    pub fn append(&mut self, rows: &[f32], n_rows: usize, stride: usize) -> Result<()> {
        check_matrix("Buffer::append", rows.len(), n_rows, self.dim(), stride)?;
        // SAFETY: the slice holds the declared rows.
        check(unsafe {
            sys::subsae_buffer_append(
                self.ptr.as_ptr(),
                rows.as_ptr() as *const c_void,
                sys::SUBSAE_DTYPE_F32,
                to_i64(n_rows),
                to_i64(stride),
            )
        })
    }

    /// Append 16-bit rows (`Dtype::F16` or `Dtype::BF16` bits), widened.
    pub fn append_half(
        &mut self,
        rows: &[u16],
        dtype: Dtype,
        n_rows: usize,
        stride: usize,
    ) -> Result<()> {
        if dtype != Dtype::F16 && dtype != Dtype::BF16 {
            return Err(Error::invalid(format!(
                "Buffer::append_half: dtype {:?}",
                dtype
            )));
        }
        check_matrix(
            "Buffer::append_half",
            rows.len(),
            n_rows,
            self.dim(),
            stride,
        )?;
        // SAFETY: the slice holds the declared rows.
        check(unsafe {
            sys::subsae_buffer_append(
                self.ptr.as_ptr(),
                rows.as_ptr() as *const c_void,
                dtype.code(),
                to_i64(n_rows),
                to_i64(stride),
            )
        })
    }

    pub fn rows(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::subsae_buffer_rows(self.ptr.as_ptr()) as usize }
    }

    pub fn dim(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::subsae_buffer_dim(self.ptr.as_ptr()) as usize }
    }

    /// Rows [first, first + n) into `out` (row stride `stride`).
    pub fn read_into(&self, first: usize, n: usize, out: &mut [f32], stride: usize) -> Result<()> {
        check_matrix("Buffer::read_into", out.len(), n, self.dim(), stride)?;
        // SAFETY: `out` holds n rows of dim floats.
        check(unsafe {
            sys::subsae_buffer_read(
                self.ptr.as_ptr(),
                to_i64(first),
                to_i64(n),
                out.as_mut_ptr(),
                to_i64(stride),
            )
        })
    }

    /// Rows [first, first + n) as a new n x dim matrix.
    pub fn read(&self, first: usize, n: usize) -> Result<Vec<f32>> {
        let d = self.dim();
        let mut out = vec![0f32; n * d];
        self.read_into(first, n, &mut out, d)?;
        Ok(out)
    }

    /// The listed rows (any order, repeats allowed) as a new matrix.
    pub fn gather(&self, rows: &[i64]) -> Result<Vec<f32>> {
        let d = self.dim();
        let mut out = vec![0f32; rows.len() * d];
        // SAFETY: `out` holds rows.len() rows of d floats.
        check(unsafe {
            sys::subsae_buffer_gather(
                self.ptr.as_ptr(),
                rows.as_ptr(),
                to_i64(rows.len()),
                out.as_mut_ptr(),
                to_i64(d),
            )
        })?;
        Ok(out)
    }

    /// Leave out rows holding NaN/inf from now on; returns how many.
    pub fn skip_nonfinite(&mut self) -> Result<i64> {
        let mut skipped = 0i64;
        // SAFETY: valid handle and out pointer.
        check(unsafe { sys::subsae_buffer_skip_nonfinite(self.ptr.as_ptr(), &mut skipped) })?;
        Ok(skipped)
    }

    pub fn stats(&self) -> Result<BufferStats> {
        let mut s = BufferStats {
            mean: vec![0f32; self.dim()],
            mean_norm: 0.0,
            nonfinite_values: 0,
            first_nonfinite_row: -1,
        };
        // SAFETY: `mean` holds dim floats.
        check(unsafe {
            sys::subsae_buffer_stats(
                self.ptr.as_ptr(),
                s.mean.as_mut_ptr(),
                &mut s.mean_norm,
                &mut s.nonfinite_values,
                &mut s.first_nonfinite_row,
            )
        })?;
        Ok(s)
    }

    pub fn save_npy(&self, path: impl AsRef<Path>, dtype: Dtype) -> Result<()> {
        let c = c_path(path.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::subsae_buffer_save_npy(self.ptr.as_ptr(), c.as_ptr(), dtype.code()) })
    }

    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        tensor: &str,
        dtype: Dtype,
    ) -> Result<()> {
        let c = c_path(path.as_ref())?;
        let t = c_string(tensor)?;
        // SAFETY: valid handle and strings.
        check(unsafe {
            sys::subsae_buffer_save_safetensors(
                self.ptr.as_ptr(),
                c.as_ptr(),
                t.as_ptr(),
                dtype.code(),
            )
        })
    }

    pub fn source_count(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { sys::subsae_buffer_source_count(self.ptr.as_ptr()) as usize }
    }

    pub fn source_info(&self, i: usize) -> Result<SourceInfo> {
        let mut path: *const c_char = ptr::null();
        let (mut format, mut dtype, mut ndim) = (0, 0, 0);
        let mut shape = [0i64; 8];
        // SAFETY: valid out pointers; `shape` has room for 8 sizes.
        check(unsafe {
            sys::subsae_buffer_source_info(
                self.ptr.as_ptr(),
                to_i64(i),
                &mut path,
                &mut format,
                &mut dtype,
                &mut ndim,
                shape.as_mut_ptr(),
                8,
            )
        })?;
        let path = if path.is_null() {
            None
        } else {
            // SAFETY: the string lives as long as the buffer.
            Some(
                unsafe { CStr::from_ptr(path) }
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        Ok(SourceInfo {
            path,
            format,
            dtype,
            shape: shape[..(ndim.clamp(0, 8) as usize)].to_vec(),
        })
    }

    /// The raw handle, for `sys` functions.
    pub fn as_ptr(&self) -> *const sys::subsae_buffer {
        self.ptr.as_ptr()
    }
}

/// Batches of a buffer, epoch after epoch; borrows the buffer.
pub struct Batches<'b> {
    ptr: NonNull<sys::subsae_batches>,
    dim: usize,
    batch: usize,
    _buf: PhantomData<&'b ()>,
}

// SAFETY: a handle may move to another thread; it is not Sync, so one
// thread uses it at a time, as the library requires.
unsafe impl Send for Batches<'_> {}

impl Drop for Batches<'_> {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::subsae_batches_free(self.ptr.as_ptr()) }
    }
}

impl<'b> Batches<'b> {
    /// `flags`: `sys::SUBSAE_BATCH_SHUFFLE | sys::SUBSAE_BATCH_DROP_LAST`.
    pub fn new(buf: &'b Buffer<'_>, batch_size: usize, seed: u64, flags: i32) -> Result<Self> {
        let mut p = ptr::null_mut();
        // SAFETY: valid handle and out pointer; the borrow keeps `buf` alive.
        check(unsafe {
            sys::subsae_batches_create(buf.as_ptr(), to_i64(batch_size), seed, flags, &mut p)
        })?;
        Ok(Batches {
            ptr: NonNull::new(p).expect("libsubsae returned a NULL iterator"),
            dim: buf.dim(),
            batch: batch_size,
            _buf: PhantomData,
        })
    }

    /// The next batch into `out` (resized to batch x dim): (rows, epoch).
    pub fn next_into(&mut self, out: &mut Vec<f32>) -> Result<(usize, i64)> {
        out.resize(self.batch * self.dim, 0.0);
        let (mut n, mut epoch) = (0i64, 0i64);
        // SAFETY: `out` has room for a full batch.
        check(unsafe {
            sys::subsae_batches_next(
                self.ptr.as_ptr(),
                out.as_mut_ptr(),
                to_i64(self.dim),
                &mut n,
                &mut epoch,
            )
        })?;
        Ok((n as usize, epoch))
    }

    /// The next batch's row indices and its epoch.
    pub fn next_indices(&mut self) -> Result<(Vec<i64>, i64)> {
        let mut rows = vec![0i64; self.batch];
        let (mut n, mut epoch) = (0i64, 0i64);
        // SAFETY: `rows` has room for a full batch.
        check(unsafe {
            sys::subsae_batches_next_indices(
                self.ptr.as_ptr(),
                rows.as_mut_ptr(),
                &mut n,
                &mut epoch,
            )
        })?;
        rows.truncate(n as usize);
        Ok((rows, epoch))
    }

    /// (epoch, position within it).
    pub fn tell(&self) -> Result<(i64, i64)> {
        let (mut e, mut p) = (0i64, 0i64);
        // SAFETY: valid out pointers.
        check(unsafe { sys::subsae_batches_tell(self.ptr.as_ptr(), &mut e, &mut p) })?;
        Ok((e, p))
    }

    pub fn seek(&mut self, epoch: i64, position: i64) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe { sys::subsae_batches_seek(self.ptr.as_ptr(), epoch, position) })
    }
}

// ---- subspace -----------------------------------------------------------

/// Spectrum, effective rank and principal directions of a buffer.
pub struct Subspace {
    ptr: NonNull<sys::subsae_subspace>,
    callback: Option<Box<CallbackState>>,
}

// SAFETY: a handle may move to another thread; it is not Sync, so one
// thread uses it at a time, as the library requires.
unsafe impl Send for Subspace {}

/// `set_int`, `get_int`, `set_double`, `get_double` of a handle type whose
/// `ptr` is a `NonNull` of the C handle, through the given C functions.
macro_rules! typed_options {
    ($set_int:ident, $get_int:ident, $set_double:ident, $get_double:ident) => {
        pub fn set_int(&mut self, option: i32, value: i64) -> Result<()> {
            // SAFETY: valid handle.
            check(unsafe { sys::$set_int(self.ptr.as_ptr(), option, value) })
        }
        pub fn get_int(&self, option: i32) -> Result<i64> {
            let mut v = 0i64;
            // SAFETY: valid handle and out pointer.
            check(unsafe { sys::$get_int(self.ptr.as_ptr(), option, &mut v) })?;
            Ok(v)
        }
        pub fn set_double(&mut self, option: i32, value: f64) -> Result<()> {
            // SAFETY: valid handle.
            check(unsafe { sys::$set_double(self.ptr.as_ptr(), option, value) })
        }
        pub fn get_double(&self, option: i32) -> Result<f64> {
            let mut v = 0f64;
            // SAFETY: valid handle and out pointer.
            check(unsafe { sys::$get_double(self.ptr.as_ptr(), option, &mut v) })?;
            Ok(v)
        }
    };
}

/// `set_callback` (progress and log events; return false to cancel) and
/// `clear_callback` of a handle type with a `callback: Option<Box<CallbackState>>`
/// field that keeps the closure alive while it is registered.
macro_rules! progress_callback {
    ($(#[$doc:meta])* $set_callback:ident) => {
        $(#[$doc])*
        pub fn set_callback<F>(&mut self, f: F) -> Result<()>
        where
            F: FnMut(Event, &str, i64, i64, Option<&str>) -> bool + Send + 'static,
        {
            let mut state = Box::new(CallbackState {
                f: Box::new(f),
                panic: None,
            });
            let user = &mut *state as *mut CallbackState as *mut c_void;
            // SAFETY: the state lives in `self.callback` as long as it is registered.
            check(unsafe { sys::$set_callback(self.ptr.as_ptr(), Some(trampoline), user) })?;
            self.callback = Some(state);
            Ok(())
        }

        pub fn clear_callback(&mut self) -> Result<()> {
            // SAFETY: valid handle.
            check(unsafe { sys::$set_callback(self.ptr.as_ptr(), None, ptr::null_mut()) })?;
            self.callback = None;
            Ok(())
        }
    };
}

impl Drop for Subspace {
    fn drop(&mut self) {
        // SAFETY: owned handle; the callback state is dropped after it.
        unsafe { sys::subsae_subspace_free(self.ptr.as_ptr()) }
    }
}

impl Subspace {
    pub fn new() -> Result<Self> {
        let mut p = ptr::null_mut();
        // SAFETY: valid out pointer.
        check(unsafe { sys::subsae_subspace_create(&mut p) })?;
        Ok(Subspace {
            ptr: NonNull::new(p).expect("NULL subspace"),
            callback: None,
        })
    }

    typed_options!(
        subsae_subspace_set_int,
        subsae_subspace_get_int,
        subsae_subspace_set_double,
        subsae_subspace_get_double
    );

    progress_callback!(
        /// Progress callback for `fit`: return false to cancel it.
        subsae_subspace_set_callback
    );

    /// Fit on all rows of `buf`.
    pub fn fit(&mut self, buf: &Buffer<'_>) -> Result<()> {
        // SAFETY: valid handles.
        let status = unsafe { sys::subsae_subspace_fit(self.ptr.as_ptr(), buf.as_ptr()) };
        after_callback(&mut self.callback, status)
    }

    pub fn dim(&self) -> Result<usize> {
        Ok(self.get_int(sys::SUBSAE_SUBSPACE_DIM)? as usize)
    }

    fn doubles(
        &self,
        count: usize,
        f: unsafe extern "C" fn(*const sys::subsae_subspace, *mut f64, i64) -> c_int,
    ) -> Result<Vec<f64>> {
        let mut v = vec![0f64; count];
        // SAFETY: `v` holds `count` doubles.
        check(unsafe { f(self.ptr.as_ptr(), v.as_mut_ptr(), to_i64(count)) })?;
        Ok(v)
    }

    /// The first `count` covariance eigenvalues, descending.
    pub fn variances(&self, count: usize) -> Result<Vec<f64>> {
        self.doubles(count, sys::subsae_subspace_variances)
    }
    pub fn singular_values(&self, count: usize) -> Result<Vec<f64>> {
        self.doubles(count, sys::subsae_subspace_singular_values)
    }
    pub fn explained_ratios(&self, count: usize) -> Result<Vec<f64>> {
        self.doubles(count, sys::subsae_subspace_explained_ratios)
    }

    pub fn total_variance(&self) -> Result<f64> {
        let mut v = 0f64;
        // SAFETY: valid out pointer.
        check(unsafe { sys::subsae_subspace_total_variance(self.ptr.as_ptr(), &mut v) })?;
        Ok(v)
    }

    pub fn mean(&self) -> Result<Vec<f32>> {
        let mut v = vec![0f32; self.dim()?];
        // SAFETY: `v` holds d floats.
        check(unsafe { sys::subsae_subspace_mean(self.ptr.as_ptr(), v.as_mut_ptr()) })?;
        Ok(v)
    }

    /// The top `k` directions, k x d row-major.
    pub fn basis(&self, k: usize) -> Result<Vec<f32>> {
        let d = self.dim()?;
        let mut v = vec![0f32; k * d];
        // SAFETY: `v` holds k rows of d floats.
        check(unsafe {
            sys::subsae_subspace_basis(self.ptr.as_ptr(), to_i64(k), v.as_mut_ptr(), to_i64(d))
        })?;
        Ok(v)
    }

    /// (r, exact): the smallest r holding a fraction `tau` of the variance.
    pub fn effective_rank(&self, tau: f64) -> Result<(usize, bool)> {
        let (mut r, mut exact) = (0i64, 0 as c_int);
        // SAFETY: valid out pointers.
        check(unsafe {
            sys::subsae_subspace_effective_rank(self.ptr.as_ptr(), tau, &mut r, &mut exact)
        })?;
        Ok((r as usize, exact != 0))
    }

    /// (rank, exact): the entropy effective rank.
    pub fn entropy_rank(&self) -> Result<(f64, bool)> {
        let (mut r, mut exact) = (0f64, 0 as c_int);
        // SAFETY: valid out pointers.
        check(unsafe { sys::subsae_subspace_entropy_rank(self.ptr.as_ptr(), &mut r, &mut exact) })?;
        Ok((r, exact != 0))
    }

    /// Coordinates (n x k) of n rows (`stride` apart) in the top-k basis.
    pub fn project(&self, x: &[f32], n: usize, stride: usize, k: usize) -> Result<Vec<f32>> {
        check_matrix("Subspace::project", x.len(), n, self.dim()?, stride)?;
        let mut c = vec![0f32; n * k];
        // SAFETY: sizes checked above.
        check(unsafe {
            sys::subsae_subspace_project(
                self.ptr.as_ptr(),
                x.as_ptr(),
                to_i64(n),
                to_i64(stride),
                to_i64(k),
                c.as_mut_ptr(),
                to_i64(k),
            )
        })?;
        Ok(c)
    }

    /// Rows (n x d) back from coordinates (n x k).
    pub fn reconstruct(&self, coords: &[f32], n: usize, k: usize) -> Result<Vec<f32>> {
        let d = self.dim()?;
        check_matrix("Subspace::reconstruct", coords.len(), n, k, k)?;
        let mut x = vec![0f32; n * d];
        // SAFETY: sizes checked above.
        check(unsafe {
            sys::subsae_subspace_reconstruct(
                self.ptr.as_ptr(),
                coords.as_ptr(),
                to_i64(n),
                to_i64(k),
                to_i64(k),
                x.as_mut_ptr(),
                to_i64(d),
            )
        })?;
        Ok(x)
    }
}

// ---- SAE models ---------------------------------------------------------

/// Sparse codes of `rows` rows: `slots` (index, value) pairs per row,
/// largest first; index -1 marks an unused slot.
#[derive(Debug, Clone)]
pub struct SparseCodes {
    pub rows: usize,
    pub slots: usize,
    pub indices: Vec<i32>,
    pub values: Vec<f32>,
}

/// Read-only operations on a model, shared by [`Sae`] and [`SaeRef`].
pub trait Model {
    /// The raw handle, for `sys` functions.
    fn as_ptr(&self) -> *const sys::subsae_sae;

    fn get_int(&self, option: i32) -> Result<i64> {
        let mut v = 0i64;
        // SAFETY: valid handle and out pointer.
        check(unsafe { sys::subsae_sae_get_int(self.as_ptr(), option, &mut v) })?;
        Ok(v)
    }
    fn get_double(&self, option: i32) -> Result<f64> {
        let mut v = 0f64;
        // SAFETY: valid handle and out pointer.
        check(unsafe { sys::subsae_sae_get_double(self.as_ptr(), option, &mut v) })?;
        Ok(v)
    }
    fn d_in(&self) -> usize {
        self.get_int(sys::SUBSAE_SAE_D_IN).unwrap_or(0) as usize
    }
    fn d_out(&self) -> usize {
        self.get_int(sys::SUBSAE_SAE_D_OUT).unwrap_or(0) as usize
    }
    fn d_sae(&self) -> usize {
        self.get_int(sys::SUBSAE_SAE_D_SAE).unwrap_or(0) as usize
    }
    /// A transcoder reconstructs another site than its input.
    fn is_transcoder(&self) -> bool {
        self.get_int(sys::SUBSAE_SAE_TRANSCODER).unwrap_or(0) != 0
    }
    /// `SUBSAE_PRECISION_FP32` or `_BF16`: the encoder's product (a bf16
    /// model holds only a bf16 W_enc).
    fn precision(&self) -> i32 {
        self.get_int(sys::SUBSAE_SAE_PRECISION)
            .unwrap_or(sys::SUBSAE_PRECISION_FP32 as i64) as i32
    }
    /// A skip transcoder: its output adds x W_skip^T (see `add_skip`).
    fn has_skip(&self) -> bool {
        self.get_int(sys::SUBSAE_SAE_SKIP).unwrap_or(0) != 0
    }
    /// The caller metadata saved in cfg.json (JSON text, "{}" when none).
    fn metadata(&self) -> String {
        let mut p: *const c_char = ptr::null();
        // SAFETY: valid handle and out pointer; the text is copied at once.
        match check(unsafe { sys::subsae_sae_get_metadata(self.as_ptr(), &mut p) }) {
            Ok(()) => unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned(),
            Err(_) => String::from("{}"),
        }
    }

    /// A parameter (`sys::SUBSAE_PARAM_*`) as stored.
    fn param(&self, param: i32) -> Result<Vec<f32>> {
        // SAFETY: valid handle.
        let n = unsafe { sys::subsae_sae_param_size(self.as_ptr(), param) };
        if n < 0 {
            return Err(Error::invalid(format!("unknown parameter {}", param)));
        }
        let mut v = vec![0f32; n as usize];
        // SAFETY: `v` holds n floats.
        check(unsafe { sys::subsae_sae_get_param(self.as_ptr(), param, v.as_mut_ptr(), n) })?;
        Ok(v)
    }

    /// Dense codes (n x d_sae) of n raw rows `stride` apart.
    fn encode(&self, x: &[f32], n: usize, stride: usize) -> Result<Vec<f32>> {
        check_matrix("encode", x.len(), n, self.d_in(), stride)?;
        let f = self.d_sae();
        let mut z = vec![0f32; n * f];
        // SAFETY: sizes checked above.
        check(unsafe {
            sys::subsae_sae_encode(
                self.as_ptr(),
                x.as_ptr(),
                to_i64(n),
                to_i64(stride),
                z.as_mut_ptr(),
                to_i64(f),
            )
        })?;
        Ok(z)
    }

    /// The `slots` largest active features of each of n raw rows.
    fn encode_sparse(
        &self,
        x: &[f32],
        n: usize,
        stride: usize,
        slots: usize,
    ) -> Result<SparseCodes> {
        check_matrix("encode_sparse", x.len(), n, self.d_in(), stride)?;
        let mut c = SparseCodes {
            rows: n,
            slots,
            indices: vec![0; n * slots],
            values: vec![0.0; n * slots],
        };
        // SAFETY: sizes checked above.
        check(unsafe {
            sys::subsae_sae_encode_sparse(
                self.as_ptr(),
                x.as_ptr(),
                to_i64(n),
                to_i64(stride),
                to_i64(slots),
                c.indices.as_mut_ptr(),
                c.values.as_mut_ptr(),
            )
        })?;
        Ok(c)
    }

    /// Reconstruction (n x d_out) from dense codes (n x d_sae).
    fn decode(&self, z: &[f32], n: usize) -> Result<Vec<f32>> {
        let (f, d) = (self.d_sae(), self.d_out());
        check_matrix("decode", z.len(), n, f, f)?;
        let mut out = vec![0f32; n * d];
        // SAFETY: sizes checked above.
        check(unsafe {
            sys::subsae_sae_decode(
                self.as_ptr(),
                z.as_ptr(),
                to_i64(n),
                to_i64(f),
                out.as_mut_ptr(),
                to_i64(d),
            )
        })?;
        Ok(out)
    }

    /// Reconstruction from sparse codes.
    fn decode_sparse(&self, c: &SparseCodes) -> Result<Vec<f32>> {
        if c.indices.len() < c.rows * c.slots || c.values.len() < c.rows * c.slots {
            return Err(Error::invalid(
                "decode_sparse: codes shorter than rows x slots".into(),
            ));
        }
        let d = self.d_out();
        let mut out = vec![0f32; c.rows * d];
        // SAFETY: sizes checked above.
        check(unsafe {
            sys::subsae_sae_decode_sparse(
                self.as_ptr(),
                c.indices.as_ptr(),
                c.values.as_ptr(),
                to_i64(c.rows),
                to_i64(c.slots),
                out.as_mut_ptr(),
                to_i64(d),
            )
        })?;
        Ok(out)
    }

    /// A skip transcoder's linear path: adds x W_skip^T of the n input rows
    /// `x` (n x d_in) to `out` (n x d_out, a decode); nothing for other models.
    fn add_skip(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        let (d_in, d_out) = (self.d_in(), self.d_out());
        check_matrix("add_skip", x.len(), n, d_in, d_in)?;
        check_matrix("add_skip", out.len(), n, d_out, d_out)?;
        // SAFETY: sizes checked above.
        check(unsafe {
            sys::subsae_sae_add_skip(
                self.as_ptr(),
                x.as_ptr(),
                to_i64(n),
                to_i64(d_in),
                out.as_mut_ptr(),
                to_i64(d_out),
            )
        })
    }

    /// Metrics on all rows of `input` (against `target`, or the input).
    fn evaluate(&self, input: &Buffer<'_>, target: Option<&Buffer<'_>>) -> Result<Metrics> {
        let mut m = Metrics([0.0; sys::SUBSAE_METRIC_COUNT]);
        // SAFETY: valid handles; `m` holds COUNT doubles.
        check(unsafe {
            sys::subsae_sae_evaluate(
                self.as_ptr(),
                input.as_ptr(),
                target.map_or(ptr::null(), |t| t.as_ptr()),
                m.0.as_mut_ptr(),
                to_i64(m.0.len()),
            )
        })?;
        Ok(m)
    }

    /// The Matryoshka prefix widths (empty for a plain model).
    fn matryoshka(&self) -> Result<Vec<i64>> {
        let mut w = vec![0i64; sys::SUBSAE_MATRYOSHKA_MAX];
        let mut count: c_int = 0;
        // SAFETY: valid handle; `w` holds MATRYOSHKA_MAX widths.
        check(unsafe {
            sys::subsae_sae_get_matryoshka(self.as_ptr(), w.as_mut_ptr(), w.len() as c_int, &mut count)
        })?;
        w.truncate(count as usize);
        Ok(w)
    }

    /// Explained variance of each Matryoshka prefix (one value for a plain
    /// model), the last the model's.
    fn evaluate_prefixes(&self, input: &Buffer<'_>, target: Option<&Buffer<'_>>) -> Result<Vec<f64>> {
        let mut ev = vec![0f64; sys::SUBSAE_MATRYOSHKA_MAX];
        let mut count: c_int = 0;
        // SAFETY: valid handles; `ev` holds MATRYOSHKA_MAX doubles.
        check(unsafe {
            sys::subsae_sae_evaluate_prefixes(
                self.as_ptr(),
                input.as_ptr(),
                target.map_or(ptr::null(), |t| t.as_ptr()),
                ev.as_mut_ptr(),
                ev.len() as c_int,
                &mut count,
            )
        })?;
        ev.truncate(count as usize);
        Ok(ev)
    }

    /// Save as an SAELens-layout directory (scales folded in).
    fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let c = c_path(dir.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::subsae_sae_save(self.as_ptr(), c.as_ptr()) })
    }

    /// A deep copy that owns its weights.
    fn to_owned_sae(&self) -> Result<Sae> {
        let mut p = ptr::null_mut();
        // SAFETY: valid handle and out pointer.
        check(unsafe { sys::subsae_sae_clone(self.as_ptr(), &mut p) })?;
        Ok(Sae {
            ptr: NonNull::new(p).expect("NULL model"),
        })
    }
}

/// An owned model.
pub struct Sae {
    ptr: NonNull<sys::subsae_sae>,
}

// SAFETY: a handle may move to another thread; it is not Sync, so one
// thread uses it at a time, as the library requires.
unsafe impl Send for Sae {}

impl Drop for Sae {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::subsae_sae_free(self.ptr.as_ptr()) }
    }
}

impl Model for Sae {
    fn as_ptr(&self) -> *const sys::subsae_sae {
        self.ptr.as_ptr()
    }
}

impl Sae {
    /// Zero weights; `activation` is `sys::SUBSAE_ACT_*`.
    pub fn create(d_in: usize, d_out: usize, d_sae: usize, activation: i32) -> Result<Sae> {
        let mut p = ptr::null_mut();
        // SAFETY: valid out pointer.
        check(unsafe {
            sys::subsae_sae_create(
                to_i64(d_in),
                to_i64(d_out),
                to_i64(d_sae),
                activation,
                &mut p,
            )
        })?;
        Ok(Sae {
            ptr: NonNull::new(p).expect("NULL model"),
        })
    }

    /// Load a saved directory (this library / SAELens, sparsify, lm-saes).
    pub fn load(dir: impl AsRef<Path>) -> Result<Sae> {
        let c = c_path(dir.as_ref())?;
        let mut p = ptr::null_mut();
        // SAFETY: valid path and out pointer.
        check(unsafe { sys::subsae_sae_load(c.as_ptr(), &mut p) })?;
        Ok(Sae {
            ptr: NonNull::new(p).expect("NULL model"),
        })
    }

    pub fn set_int(&mut self, option: i32, value: i64) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe { sys::subsae_sae_set_int(self.ptr.as_ptr(), option, value) })
    }
    pub fn set_double(&mut self, option: i32, value: f64) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe { sys::subsae_sae_set_double(self.ptr.as_ptr(), option, value) })
    }
    pub fn set_param(&mut self, param: i32, values: &[f32]) -> Result<()> {
        // SAFETY: the library checks `count` against the parameter's size.
        check(unsafe {
            sys::subsae_sae_set_param(
                self.ptr.as_ptr(),
                param,
                values.as_ptr(),
                to_i64(values.len()),
            )
        })
    }
    pub fn fold_scales(&mut self) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe { sys::subsae_sae_fold_scales(self.ptr.as_ptr()) })
    }
    /// Encode at `SUBSAE_PRECISION_FP32`, `_BF16` (refused without native
    /// bf16) or `_AUTO`.
    pub fn set_precision(&mut self, precision: i32) -> Result<()> {
        self.set_int(sys::SUBSAE_SAE_PRECISION, precision as i64)
    }
}

/// The model a [`Trainer`] is training, borrowed from it.
pub struct SaeRef<'t> {
    ptr: NonNull<sys::subsae_sae>,
    _trainer: PhantomData<&'t Trainer>,
}

impl Model for SaeRef<'_> {
    fn as_ptr(&self) -> *const sys::subsae_sae {
        self.ptr.as_ptr()
    }
}

// ---- trainer ------------------------------------------------------------

/// Trains a TopK SAE (or transcoder) on buffers.
pub struct Trainer {
    ptr: NonNull<sys::subsae_trainer>,
    callback: Option<Box<CallbackState>>,
}

// SAFETY: a handle may move to another thread; it is not Sync, so one
// thread uses it at a time, as the library requires.
unsafe impl Send for Trainer {}

impl Drop for Trainer {
    fn drop(&mut self) {
        // SAFETY: owned handle (and the model it owns).
        unsafe { sys::subsae_trainer_free(self.ptr.as_ptr()) }
    }
}

impl Trainer {
    pub fn new() -> Result<Trainer> {
        let mut p = ptr::null_mut();
        // SAFETY: valid out pointer.
        check(unsafe { sys::subsae_trainer_create(&mut p) })?;
        Ok(Trainer {
            ptr: NonNull::new(p).expect("NULL trainer"),
            callback: None,
        })
    }

    /// Train a Matryoshka SAE (topk, batchtopk): nested prefixes of these
    /// widths, strictly increasing, the last = features; empty for a plain
    /// one. Before `init`.
    pub fn set_matryoshka(&mut self, widths: &[i64]) -> Result<()> {
        let count = c_int::try_from(widths.len())
            .map_err(|_| Error::invalid(String::from("too many Matryoshka widths")))?;
        // SAFETY: valid handle; `widths` holds `count` values.
        check(unsafe { sys::subsae_trainer_set_matryoshka(self.ptr.as_ptr(), widths.as_ptr(), count) })
    }

    /// Resume from a checkpoint directory.
    pub fn load_checkpoint(dir: impl AsRef<Path>) -> Result<Trainer> {
        let c = c_path(dir.as_ref())?;
        let mut p = ptr::null_mut();
        // SAFETY: valid path and out pointer.
        check(unsafe { sys::subsae_trainer_load_checkpoint(c.as_ptr(), &mut p) })?;
        Ok(Trainer {
            ptr: NonNull::new(p).expect("NULL trainer"),
            callback: None,
        })
    }

    typed_options!(
        subsae_trainer_set_int,
        subsae_trainer_get_int,
        subsae_trainer_set_double,
        subsae_trainer_get_double
    );

    progress_callback!(
        /// Progress callback for `init` and `fit`: return false to cancel.
        subsae_trainer_set_callback
    );

    /// Initialise the model from data (target None: an SAE).
    pub fn init(&mut self, input: &Buffer<'_>, target: Option<&Buffer<'_>>) -> Result<()> {
        // SAFETY: valid handles.
        let status = unsafe {
            sys::subsae_trainer_init(
                self.ptr.as_ptr(),
                input.as_ptr(),
                target.map_or(ptr::null(), |t| t.as_ptr()),
            )
        };
        after_callback(&mut self.callback, status)
    }

    /// One optimiser step on n raw rows `stride` apart (an SAE).
    pub fn step(&mut self, input: &[f32], n: usize, stride: usize) -> Result<()> {
        let d_in = self.sae().map(|s| s.d_in()).unwrap_or(0);
        check_matrix("Trainer::step", input.len(), n, d_in, stride)?;
        // SAFETY: sizes checked above (before init the library fails first).
        check(unsafe {
            sys::subsae_trainer_step(
                self.ptr.as_ptr(),
                input.as_ptr(),
                to_i64(stride),
                ptr::null(),
                0,
                to_i64(n),
            )
        })
    }

    /// One optimiser step of a transcoder: input rows -> target rows.
    pub fn step_transcoder(
        &mut self,
        input: &[f32],
        input_stride: usize,
        target: &[f32],
        target_stride: usize,
        n: usize,
    ) -> Result<()> {
        let (d_in, d_out) = self.sae().map(|s| (s.d_in(), s.d_out())).unwrap_or((0, 0));
        check_matrix("Trainer::step input", input.len(), n, d_in, input_stride)?;
        check_matrix(
            "Trainer::step target",
            target.len(),
            n,
            d_out,
            target_stride,
        )?;
        // SAFETY: sizes checked above.
        check(unsafe {
            sys::subsae_trainer_step(
                self.ptr.as_ptr(),
                input.as_ptr(),
                to_i64(input_stride),
                target.as_ptr(),
                to_i64(target_stride),
                to_i64(n),
            )
        })
    }

    /// Train on `tokens` more tokens of shuffled batches.
    pub fn fit(
        &mut self,
        input: &Buffer<'_>,
        target: Option<&Buffer<'_>>,
        tokens: u64,
    ) -> Result<()> {
        // SAFETY: valid handles.
        let status = unsafe {
            sys::subsae_trainer_fit(
                self.ptr.as_ptr(),
                input.as_ptr(),
                target.map_or(ptr::null(), |t| t.as_ptr()),
                tokens as i64,
            )
        };
        after_callback(&mut self.callback, status)
    }

    pub fn metrics(&self) -> Result<Metrics> {
        let mut m = Metrics([0.0; sys::SUBSAE_METRIC_COUNT]);
        // SAFETY: `m` holds COUNT doubles.
        check(unsafe {
            sys::subsae_trainer_metrics(self.ptr.as_ptr(), m.0.as_mut_ptr(), to_i64(m.0.len()))
        })?;
        Ok(m)
    }

    /// Wall seconds per step of each phase (`sys::SUBSAE_PHASE_*`), averaged
    /// over the steps since creation or `reset_timings`; NaN before a step.
    pub fn timings(&self) -> Result<[f64; sys::SUBSAE_PHASE_COUNT]> {
        let mut s = [0.0; sys::SUBSAE_PHASE_COUNT];
        // SAFETY: `s` holds PHASE_COUNT doubles.
        check(unsafe {
            sys::subsae_trainer_timings(self.ptr.as_ptr(), s.as_mut_ptr(), to_i64(s.len()))
        })?;
        Ok(s)
    }

    /// Forget the timings collected so far (e.g. after warm-up steps).
    pub fn reset_timings(&mut self) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe { sys::subsae_trainer_reset_timings(self.ptr.as_ptr()) })
    }

    /// The model being trained (None before `init`).
    pub fn sae(&self) -> Option<SaeRef<'_>> {
        // SAFETY: valid handle; the model lives as long as the trainer.
        let p = unsafe { sys::subsae_trainer_sae(self.ptr.as_ptr()) };
        NonNull::new(p as *mut sys::subsae_sae).map(|ptr| SaeRef {
            ptr,
            _trainer: PhantomData,
        })
    }

    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        let c = c_path(dir.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::subsae_trainer_save_checkpoint(self.ptr.as_ptr(), c.as_ptr()) })
    }

    /// The raw handle, for `sys` functions.
    pub fn as_ptr(&self) -> *const sys::subsae_trainer {
        self.ptr.as_ptr()
    }
}
