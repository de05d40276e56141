//! `veltix_rs._native`: the PyO3 layer between the pure-Python `veltix_rs` package and the
//! veltix-rs core (`crates/veltix`).
//!
//! ## Threads and the GIL (granian/Robyn model)
//! - Sockets, framing, handshakes, routing, request correlation, ping and reconnects run on the
//!   core's tokio runtime. No tokio task ever attaches to the interpreter.
//! - Python callbacks run on the core's process-wide handler pool (shared by every server and
//!   client, sized to the largest `max_workers`; `VELTIX_HANDLER_THREADS` fixes it). Each batch
//!   of one connection's messages (up to 64) runs under one GIL acquisition (`around_handlers`),
//!   and a pool thread keeps the GIL across the batches already queued behind it (up to 64
//!   tasks, [`run_with_python`]); it releases the GIL before it waits for work.
//! - The authenticate hook (`Server.authenticate`) is the core's sync hook: it runs on tokio's
//!   blocking pool (`spawn_blocking`, OS threads outside any async task), which attaches to the
//!   interpreter only for the Python call ([`run_auth_hook`]), within `handshake_timeout`.
//! - Every call from Python that can block (`connect`, `send_and_wait`, `ping`, `close_all`,
//!   `disconnect`, `restart`, large sends) releases the GIL (`Python::detach`) first, so a
//!   callback may call them, and other Python threads keep running meanwhile.
//! - Interpreter shutdown: the package's `atexit` hook closes live servers and clients and calls
//!   [`shutdown`], which stops workers from attaching to the interpreter again and waits
//!   (bounded, GIL released) for the batches still running: CPython 3.11 ends a thread that
//!   re-enters a finalizing interpreter with `pthread_exit`, whose forced unwind through the
//!   core's `catch_unwind` would abort the process.
//!
//! Everything Python-facing here is thin: validation, enums, the event bus, tags and the 1.6
//! facade live in the Python package (`python/veltix_rs`).

#![deny(unsafe_code)]

mod tstate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{
    PyConnectionError, PyConnectionRefusedError, PyOSError, PyRuntimeError, PyTimeoutError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use veltix::auth::{AuthDecision, AuthRequest};
use veltix::tls::{ClientTls, ServerTls, TlsInfo};
use veltix::{
    ClientConfig, ClientInfo, DisconnectReason, DisconnectState, Error, Generation,
    PerformanceMode, ReconnectPolicy, Request, Response, ServerConfig,
};

/// Set by the package's `atexit` hook: workers stop calling into Python.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// `code -> MessageType` resolver installed by the package (`veltix_rs._types`).
static TYPE_FACTORY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// `veltix_rs.exceptions.InvalidContentError`.
static INVALID_CONTENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Sends at least this large release the GIL while the frame is copied and queued.
const DETACH_SEND_BYTES: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn secs(timeout: f64) -> PyResult<Duration> {
    if !timeout.is_finite() || timeout < 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout must be a finite number of seconds >= 0, got {timeout}"
        )));
    }
    Ok(Duration::from_secs_f64(timeout.min(1e9)))
}

/// GIL acquisitions by handler-pool workers (one per batch), process-wide; see
/// [`gil_acquisitions`].
static BATCHES: AtomicU64 = AtomicU64::new(0);

/// Runs and batches of Python callbacks in progress right now (see [`shutdown`]).
static IN_FLIGHT: Mutex<usize> = Mutex::new(0);
static IN_FLIGHT_DONE: Condvar = Condvar::new();

struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        *lock(&IN_FLIGHT) += 1;
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = lock(&IN_FLIGHT);
        *n -= 1;
        if *n == 0 {
            IN_FLIGHT_DONE.notify_all();
        }
    }
}

/// Runs `f` on a worker thread with the GIL, unless the interpreter is shutting down.
fn with_python(f: impl for<'py> FnOnce(Python<'py>)) {
    if SHUTDOWN.load(Ordering::Acquire) {
        return;
    }
    tstate::keep();
    let _ = Python::try_attach(f);
}

/// The handler pool's run wrapper ([`veltix::wrap_handler_runs`]): a pool thread takes the GIL
/// once for a run of queued tasks (several connections' batches back to back) instead of once
/// per batch, so a busy pool does not pass the GIL between its threads after every batch (each
/// pass is a thread switch). Other threads still get the GIL at CPython's switch interval, and
/// whenever a callback blocks (the package's blocking calls release the GIL). The pool ends a
/// run before its thread waits for work, so an idle pool thread never holds the GIL.
///
/// A run counts as in flight for [`shutdown`] like a batch: `with_python` checks `SHUTDOWN`
/// again after the count went up, so either `shutdown` waits for this run or the run never
/// attaches (attaching to a finalizing interpreter would end the thread with `pthread_exit`).
fn run_with_python(run: &mut dyn FnMut()) {
    let mut run = Some(run);
    if !SHUTDOWN.load(Ordering::Acquire) {
        let _running = InFlight::enter();
        with_python(|_py| {
            if let Some(run) = run.take() {
                run();
            }
        });
    }
    // Interpreter gone or going: the tasks still run (their callbacks are skipped).
    if let Some(run) = run.take() {
        run();
    }
}

/// Runs one batch of callbacks under one GIL acquisition (the `around_handlers` wrapper; every
/// Python callback runs inside one), counted in [`IN_FLIGHT`].
fn batch_with_python(batch: &mut dyn FnMut()) {
    if SHUTDOWN.load(Ordering::Acquire) {
        return;
    }
    BATCHES.fetch_add(1, Ordering::Relaxed);
    let _running = InFlight::enter();
    with_python(|_py| batch());
}

/// Reports an exception raised by a user callback through the owner's `on_error(func, exc)`
/// (which logs it with its traceback and emits `ErrorEvent.CALLBACK`); if that fails too, the
/// exception goes to `sys.unraisablehook`.
fn report(py: Python<'_>, on_error: &Py<PyAny>, func: &Py<PyAny>, err: PyErr) {
    // `into_value` attaches the traceback to the exception object (`exc.__traceback__`).
    let exc = err.into_value(py);
    if let Err(e) = on_error.call1(py, (func.clone_ref(py), exc)) {
        e.write_unraisable(py, Some(func.bind(py)));
    }
}

fn invalid_content(py: Python<'_>, msg: String) -> PyErr {
    match INVALID_CONTENT.get(py) {
        Some(cls) => match cls.call1(py, (msg.clone(),)) {
            Ok(e) => PyErr::from_value(e.into_bound(py)),
            Err(e) => e,
        },
        None => PyValueError::new_err(msg),
    }
}

// ---------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------

/// A received message: `type`, `content`, `request_id`, and the lazily decoded, cached `text` and
/// `json` (3.3.0's `Response`). On the Gen 1 wire (`veltix_rs.v1`), `request_id` is the 4-byte
/// `bytes` id of 1.6.9 and `timestamp`, `received_at`, `latency` and `hash` are available too.
///
/// Its state sits behind one lock so that a dispatcher can reuse the object for the next
/// message when the callback kept no reference to it (see [`PyResponse::for_dispatch`]): a
/// burst then allocates and frees no Python object per message.
#[pyclass(module = "veltix_rs._native", name = "Response", frozen)]
pub struct PyResponse {
    s: Mutex<RespState>,
}

/// (`Default` is the cleared state of a spare, never seen by Python.)
#[derive(Default)]
struct RespState {
    code: u16,
    request_id: u32,
    gen1: bool,
    type_obj: Option<Py<PyAny>>,
    /// The payload as `bytes`, made on first use: a handler that never reads `content`
    /// costs no copy. Until then `raw` holds the core's frame (a view of the read buffer), which
    /// [`PyResponse::materialize`] releases when the object outlives its callback.
    content: Option<Py<PyBytes>>,
    raw: Option<Response>,
    text: Option<Result<Py<PyAny>, String>>,
    json: Option<Result<Py<PyAny>, String>>,
}

impl RespState {
    fn of(m: Response, gen1: bool) -> RespState {
        RespState {
            code: m.message_type(),
            request_id: m.request_id(),
            gen1,
            type_obj: None,
            content: None,
            raw: Some(m),
            text: None,
            json: None,
        }
    }

    fn content(&mut self, py: Python<'_>) -> Py<PyBytes> {
        if let Some(c) = &self.content {
            return c.clone_ref(py);
        }
        let bytes: &[u8] = self.raw.as_ref().map(|m| &m.content()[..]).unwrap_or(&[]);
        let c = PyBytes::new(py, bytes).unbind();
        self.content = Some(c.clone_ref(py));
        c
    }
}

thread_local! {
    /// A `Response` that a callback on this thread did not keep, ready for the next message
    /// (see [`PyResponse::for_dispatch`]).
    static SPARE: std::cell::RefCell<Option<Py<PyResponse>>> =
        const { std::cell::RefCell::new(None) };
}

impl PyResponse {
    fn from_core(py: Python<'_>, m: Response, gen1: bool) -> PyResult<Py<PyResponse>> {
        Py::new(
            py,
            PyResponse {
                s: Mutex::new(RespState::of(m, gen1)),
            },
        )
    }

    /// A received message for a Python caller that keeps it (the payload copied now).
    fn from_core_owned(py: Python<'_>, m: &Response, gen1: bool) -> PyResult<Py<PyResponse>> {
        let r = Self::from_core(py, m.clone(), gen1)?;
        r.get().materialize(py);
        Ok(r)
    }

    /// The `Response` handed to a callback: this thread's spare one refilled with `m` if there
    /// is one that nobody else references, else a new one. Give it back with
    /// [`PyResponse::after_dispatch`] once the callback returned.
    // `get_refcnt` is deprecated in favour of `ffi::Py_REFCNT`, which is unsafe; a count is all
    // this needs.
    #[allow(deprecated)]
    fn for_dispatch(py: Python<'_>, m: Response, gen1: bool) -> PyResult<Py<PyResponse>> {
        let spare = SPARE.try_with(|s| s.borrow_mut().take()).ok().flatten();
        match spare {
            // With the GIL held, a count of 1 means this thread holds the only reference (the
            // type has no weak references), and nobody can take another meanwhile.
            Some(r) if r.get_refcnt(py) == 1 => {
                let old = std::mem::replace(&mut *lock(&r.get().s), RespState::of(m, gen1));
                drop(old);
                Ok(r)
            }
            _ => Self::from_core(py, m, gen1),
        }
    }

    /// After a callback got `resp`: if it kept a reference (stored it, or an exception's
    /// traceback holds it), the payload is materialized (see [`PyResponse::materialize`]);
    /// otherwise its state is cleared (the read buffer released) and it becomes this thread's
    /// spare for the next message.
    #[allow(deprecated)]
    fn after_dispatch(py: Python<'_>, resp: Py<PyResponse>) {
        if resp.get_refcnt(py) > 1 {
            resp.get().materialize(py);
            return;
        }
        let old = std::mem::take(&mut *lock(&resp.get().s));
        drop(old);
        let previous = SPARE
            .try_with(|s| s.borrow_mut().replace(resp))
            .ok()
            .flatten();
        drop(previous);
    }

    fn content_obj(&self, py: Python<'_>) -> Py<PyBytes> {
        lock(&self.s).content(py)
    }

    /// Copies the payload into `bytes` (if not done yet) and lets go of the core's frame, so a
    /// Response kept by Python pins no read buffer.
    fn materialize(&self, py: Python<'_>) {
        let frame = {
            let mut s = lock(&self.s);
            s.content(py);
            s.raw.take()
        };
        drop(frame);
    }

    fn text_cached(&self, py: Python<'_>) -> Result<Py<PyAny>, String> {
        // No Python code runs under the lock (a UTF-8 check and a `str` allocation).
        let mut s = lock(&self.s);
        if let Some(t) = &s.text {
            return t.as_ref().map(|t| t.clone_ref(py)).map_err(Clone::clone);
        }
        let content = s.content(py);
        let text = match std::str::from_utf8(content.as_bytes(py)) {
            Ok(t) => Ok(pyo3::types::PyString::new(py, t).into_any().unbind()),
            Err(e) => Err(format!("content is not valid UTF-8: {e}")),
        };
        let out = text.as_ref().map(|t| t.clone_ref(py)).map_err(Clone::clone);
        s.text = Some(text);
        out
    }

    fn json_cached(&self, py: Python<'_>) -> Result<Py<PyAny>, String> {
        if let Some(j) = &lock(&self.s).json {
            return j.as_ref().map(|j| j.clone_ref(py)).map_err(Clone::clone);
        }
        // `json.loads` is Python code: it runs without the lock; the first result stored wins.
        let parsed = self.text_cached(py).and_then(|text| {
            let loads = py
                .import("json")
                .and_then(|m| m.getattr("loads"))
                .map_err(|e| e.to_string())?;
            loads
                .call1((text,))
                .map(|v| v.unbind())
                .map_err(|e| format!("content is not valid JSON: {e}"))
        });
        let mut s = lock(&self.s);
        let j = s.json.get_or_insert(parsed);
        j.as_ref().map(|j| j.clone_ref(py)).map_err(Clone::clone)
    }
}

#[pymethods]
impl PyResponse {
    /// `Response(_type, content, _hash=b"", _request_id=0, request_id=None)` as in 3.3.0.
    #[new]
    #[pyo3(signature = (_type, content, _hash = None, _request_id = 0, request_id = None))]
    fn new(
        _type: Bound<'_, PyAny>,
        content: Bound<'_, PyBytes>,
        _hash: Option<Bound<'_, PyAny>>,
        _request_id: u32,
        request_id: Option<u32>,
    ) -> PyResult<Self> {
        let code: u16 = _type.getattr("code")?.extract()?;
        Ok(PyResponse {
            s: Mutex::new(RespState {
                code,
                request_id: request_id.unwrap_or(_request_id),
                gen1: false,
                type_obj: Some(_type.unbind()),
                content: Some(content.unbind()),
                raw: None,
                text: None,
                json: None,
            }),
        })
    }

    /// The message type (a `MessageType`).
    #[getter(r#type)]
    fn get_type(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let code = {
            let s = lock(&self.s);
            if let Some(t) = &s.type_obj {
                return Ok(t.clone_ref(py));
            }
            s.code
        };
        // The factory is Python code: called without the lock; the first result stored wins.
        let factory = TYPE_FACTORY
            .get(py)
            .ok_or_else(|| PyRuntimeError::new_err("veltix_rs is not initialised"))?;
        let t = factory.call1(py, (code,))?;
        Ok(lock(&self.s).type_obj.get_or_insert(t).clone_ref(py))
    }

    /// The raw payload.
    #[getter]
    fn content(&self, py: Python<'_>) -> Py<PyBytes> {
        self.content_obj(py)
    }

    /// The correlation id: an `int` (0-65535) on the Gen 3 wire, 4 `bytes` on Gen 1.
    #[getter]
    fn request_id(&self, py: Python<'_>) -> Py<PyAny> {
        let (id, gen1) = {
            let s = lock(&self.s);
            (s.request_id, s.gen1)
        };
        if gen1 {
            PyBytes::new(py, &id.to_be_bytes()).into_any().unbind()
        } else {
            id.into_pyobject(py)
                .map(|v| v.into_any().unbind())
                .unwrap_or_else(|e| match e {})
        }
    }

    /// The numeric type code.
    #[getter]
    fn type_code(&self) -> u16 {
        lock(&self.s).code
    }

    /// The content decoded as UTF-8 (cached). Raises `InvalidContentError` if it is not UTF-8.
    #[getter]
    fn text(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.text_cached(py).map_err(|e| invalid_content(py, e))
    }

    /// The content parsed as JSON (cached). Raises `InvalidContentError` if it is not JSON.
    #[getter]
    fn json(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.json_cached(py).map_err(|e| invalid_content(py, e))
    }

    /// True if the content is valid UTF-8 (never raises).
    #[getter]
    fn is_text(&self, py: Python<'_>) -> bool {
        self.text_cached(py).is_ok()
    }

    /// True if the content is valid JSON (never raises).
    #[getter]
    fn is_json(&self, py: Python<'_>) -> bool {
        self.json_cached(py).is_ok()
    }

    /// 1.6.9: CRC32 of the content, 4 big-endian bytes.
    #[getter]
    fn hash(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let crc: u32 = py
            .import("zlib")?
            .call_method1("crc32", (self.content_obj(py).bind(py),))?
            .extract()?;
        Ok(PyBytes::new(py, &crc.to_be_bytes()).unbind())
    }

    /// 1.6.9: the sender's timestamp (not exposed by the core: always 0).
    #[getter]
    fn timestamp(&self) -> u64 {
        0
    }

    /// 1.6.9: the receive timestamp (not exposed by the core: always 0).
    #[getter]
    fn received_at(&self) -> u64 {
        0
    }

    /// 1.6.9: `received_at - timestamp` (always 0 here).
    #[getter]
    fn latency(&self) -> i64 {
        0
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let content = self.content_obj(py);
        let c = content.as_bytes(py);
        let shown = &c[..c.len().min(20)];
        let more = if c.len() > 20 { "..." } else { "" };
        let (code, id) = {
            let s = lock(&self.s);
            (s.code, s.request_id)
        };
        format!(
            "Response(type={code}, request_id={id}, content={}{more})",
            PyBytes::new(py, shown)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

fn request(code: u16, content: &[u8], request_id: Option<u32>) -> Request {
    let r = Request::new(code, content.to_vec());
    match request_id {
        Some(id) => r.with_request_id(id),
        None => r,
    }
}

/// The fields of an outgoing message, the native base class of `veltix_rs.Request` (and so of
/// `veltix_rs.v1.Request`). The package's `Request.__init__` validates and sets them; a send
/// reads them here under one lock instead of four Python attribute lookups (`type`, `type.code`,
/// `content`, `request_id`), all made under the GIL. Sends refuse anything that is not one.
#[pyclass(module = "veltix_rs._native", name = "RequestBase", subclass, frozen)]
pub struct RequestBase {
    fields: Mutex<RequestFields>,
}

struct RequestFields {
    type_obj: Py<PyAny>,
    /// `type.code` when `type` was set, if it has a `u16` code.
    code: Option<u16>,
    content: Py<PyAny>,
    request_id: Py<PyAny>,
    flags: Py<PyAny>,
}

impl RequestBase {
    /// Replaces one field; the old value is dropped after the lock is released (dropping it may
    /// run Python code, which may read this request).
    fn replace(&self, set: impl FnOnce(&mut RequestFields) -> Py<PyAny>) {
        let old = set(&mut lock(&self.fields));
        drop(old);
    }
}

#[pymethods]
impl RequestBase {
    /// Every field starts as None; `Request.__init__` sets them (extra arguments are its own).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, pyo3::types::PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> Self {
        RequestBase {
            fields: Mutex::new(RequestFields {
                type_obj: py.None(),
                code: None,
                content: py.None(),
                request_id: py.None(),
                flags: py.None(),
            }),
        }
    }
    /// The `MessageType`.
    #[getter(r#type)]
    fn get_type(&self, py: Python<'_>) -> Py<PyAny> {
        lock(&self.fields).type_obj.clone_ref(py)
    }
    #[setter(r#type)]
    fn set_type(&self, value: Bound<'_, PyAny>) {
        // Read before locking: `code` may be a Python property.
        let code = value
            .getattr(pyo3::intern!(value.py(), "code"))
            .and_then(|c| c.extract::<u16>())
            .ok();
        let value = value.unbind();
        self.replace(|f| {
            f.code = code;
            std::mem::replace(&mut f.type_obj, value)
        });
    }
    /// The payload (`bytes`).
    #[getter]
    fn get_content(&self, py: Python<'_>) -> Py<PyAny> {
        lock(&self.fields).content.clone_ref(py)
    }
    #[setter]
    fn set_content(&self, value: Py<PyAny>) {
        self.replace(|f| std::mem::replace(&mut f.content, value));
    }
    /// The request id (an int or None; 4 `bytes` on the 1.6 wire).
    #[getter]
    fn get_request_id(&self, py: Python<'_>) -> Py<PyAny> {
        lock(&self.fields).request_id.clone_ref(py)
    }
    #[setter]
    fn set_request_id(&self, value: Py<PyAny>) {
        self.replace(|f| std::mem::replace(&mut f.request_id, value));
    }
    /// The frame's flags byte (0).
    #[getter]
    fn get_flags(&self, py: Python<'_>) -> Py<PyAny> {
        lock(&self.fields).flags.clone_ref(py)
    }
    #[setter]
    fn set_flags(&self, value: Py<PyAny>) {
        self.replace(|f| std::mem::replace(&mut f.flags, value));
    }
    /// `(type, content, request_id, flags)`, for `copy` and `pickle`.
    fn __getstate__(&self, py: Python<'_>) -> (Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>) {
        let f = lock(&self.fields);
        (
            f.type_obj.clone_ref(py),
            f.content.clone_ref(py),
            f.request_id.clone_ref(py),
            f.flags.clone_ref(py),
        )
    }
    fn __setstate__(&self, state: (Bound<'_, PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>)) {
        let (type_obj, content, request_id, flags) = state;
        self.set_type(type_obj);
        self.set_content(content);
        self.set_request_id(request_id);
        self.set_flags(flags);
    }
}

/// Reads a `veltix_rs.Request` (any [`RequestBase`]); None if it is not one or its fields do not
/// make a message (a type without a `u16` code, content that is not `bytes`, a bad id). A 1.6 id
/// (4 bytes) becomes its big-endian `u32`. The content is the request's own `bytes` object (one
/// more reference, no copy): a send encodes straight from it.
fn read_request(req: &Bound<'_, PyAny>) -> Option<(u16, Py<PyBytes>, Option<u32>)> {
    let py = req.py();
    let base = req.cast::<RequestBase>().ok()?;
    // No Python code runs while the lock is held (a type check and two increfs); the id is
    // converted after it is released (`__index__` of an int-like id is Python code).
    let (code, content, rid) = {
        let f = lock(&base.get().fields);
        let content = f.content.bind(py).cast::<PyBytes>().ok()?.clone().unbind();
        (f.code?, content, f.request_id.clone_ref(py))
    };
    let rid = rid.bind(py);
    let rid = if rid.is_none() {
        None
    } else if let Ok(b) = rid.cast::<PyBytes>() {
        let b: [u8; 4] = b.as_bytes().try_into().ok()?;
        Some(u32::from_be_bytes(b))
    } else {
        Some(rid.extract::<u32>().ok()?)
    };
    Some((code, content, rid))
}

/// Sends one message from borrowed parts with `send(code, request_id, content)` (a core
/// `send_slice`), releasing the GIL around it for a large payload. `content` is a `bytes`
/// object's buffer (immutable, and kept alive by the caller for the whole call), so reading it
/// with the GIL released is sound.
fn send_parts(
    py: Python<'_>,
    send: impl FnOnce(u16, Option<u32>, &[u8]) -> bool + Send,
    code: u16,
    request_id: Option<u32>,
    content: &[u8],
) -> bool {
    if content.len() >= DETACH_SEND_BYTES {
        py.detach(move || send(code, request_id, content))
    } else {
        send(code, request_id, content)
    }
}

fn reason_name(r: DisconnectReason) -> &'static str {
    match r {
        DisconnectReason::Manual => "MANUAL",
        DisconnectReason::ServerClosed => "SERVER_CLOSED",
        DisconnectReason::ServerFull => "SERVER_FULL",
        DisconnectReason::HandshakeFailed => "HANDSHAKE_FAILED",
        DisconnectReason::KeepAliveTimeout => "KEEPALIVE_TIMEOUT",
        _ => "ERROR",
    }
}

fn generation(gen: u8) -> PyResult<Generation> {
    match gen {
        3 => Ok(Generation::Gen3),
        1 => Ok(Generation::Gen1),
        g => Err(PyValueError::new_err(format!(
            "wire generation must be 3 or 1, got {g}"
        ))),
    }
}

fn performance(mode: &str) -> PyResult<PerformanceMode> {
    match mode.to_ascii_lowercase().as_str() {
        // 1.6.9's AUTO was a placeholder for BALANCED.
        "balanced" | "auto" => Ok(PerformanceMode::Balanced),
        "low" => Ok(PerformanceMode::Low),
        "high" => Ok(PerformanceMode::High),
        o => Err(PyValueError::new_err(format!(
            "unknown performance mode {o:?} (low, balanced, high, auto)"
        ))),
    }
}

/// The core's error as a Python exception, for the calls that raise (`start`, `connect`).
fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::Bind { addr, source } => PyOSError::new_err((
            source.raw_os_error().unwrap_or(0),
            format!("cannot listen on {addr}: {source}"),
        )),
        Error::Io(source) => PyOSError::new_err((
            source.raw_os_error().unwrap_or(0),
            format!("I/O error: {source}"),
        )),
        Error::ConnectionRefused { .. } => PyConnectionRefusedError::new_err(e.to_string()),
        Error::ConnectTimeout { .. } | Error::HandshakeTimeout(_) => {
            PyTimeoutError::new_err(e.to_string())
        }
        Error::ServerFull(reason) => package_exc(py, "ServerFullError", reason),
        // A refusal after our hello (the authenticate hook): a ConnectionError subclass, so
        // `Client.connect()` returns False as 3.3.0 does; it keeps the reason.
        Error::Rejected(reason) => package_exc(py, "RejectedError", reason),
        Error::TlsConfig(_) => package_exc(py, "TlsConfigError", e.to_string()),
        Error::Tls(_) => package_exc(py, "TlsError", e.to_string()),
        Error::Config(_) => PyValueError::new_err(e.to_string()),
        other => PyConnectionError::new_err(other.to_string()),
    }
}

/// An exception class of `veltix_rs.exceptions`, built with one message argument.
fn package_exc(py: Python<'_>, name: &str, msg: String) -> PyErr {
    match py
        .import("veltix_rs.exceptions")
        .and_then(|m| m.getattr(name))
        .and_then(|cls| cls.call1((msg,)))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// TLS and authentication
// ---------------------------------------------------------------------------------------------

/// What a TLS connection negotiated (`ClientInfo.tls`, `AuthRequest.tls`): `protocol`
/// (`"TLSv1.3"` / `"TLSv1.2"`), `cipher` (e.g. `"TLS13_AES_256_GCM_SHA384"`) and, under mutual
/// TLS, the client's verified certificate: `peer_subject` (`"CN=sensor-17, O=Acme"`),
/// `peer_cn` and `peer_certificate` (DER bytes); these three are None without one.
#[pyclass(module = "veltix_rs._native", name = "TlsInfo", frozen)]
pub struct PyTlsInfo {
    info: TlsInfo,
}

#[pymethods]
impl PyTlsInfo {
    /// The negotiated protocol version: `"TLSv1.3"` or `"TLSv1.2"`.
    #[getter]
    fn protocol(&self) -> &str {
        &self.info.protocol
    }
    /// The negotiated cipher suite, e.g. `"TLS13_AES_256_GCM_SHA384"`.
    #[getter]
    fn cipher(&self) -> &str {
        &self.info.cipher_suite
    }
    /// The subject of the client's verified certificate (`"CN=..., O=..."`), or None.
    #[getter]
    fn peer_subject(&self) -> Option<&str> {
        self.info
            .peer_certificate
            .as_ref()
            .map(|c| c.subject.as_str())
    }
    /// The common name (CN) of the client's verified certificate, or None.
    #[getter]
    fn peer_cn(&self) -> Option<&str> {
        self.info
            .peer_certificate
            .as_ref()
            .and_then(|c| c.common_name.as_deref())
    }
    /// The client's verified certificate (DER bytes), or None.
    #[getter]
    fn peer_certificate(&self, py: Python<'_>) -> Option<Py<PyBytes>> {
        self.info
            .peer_certificate
            .as_ref()
            .map(|c| PyBytes::new(py, &c.der).unbind())
    }

    fn __repr__(&self) -> String {
        let subject = match self.peer_subject() {
            Some(s) => format!("{s:?}"),
            None => "None".into(),
        };
        format!(
            "TlsInfo(protocol={:?}, cipher={:?}, peer_subject={subject})",
            self.info.protocol, self.info.cipher_suite
        )
    }
}

fn py_tls(py: Python<'_>, info: Option<&TlsInfo>) -> PyResult<Option<Py<PyTlsInfo>>> {
    info.map(|i| Py::new(py, PyTlsInfo { info: i.clone() }))
        .transpose()
}

/// A JSON value of the core as a Python object (through `json.loads`).
fn json_to_py(
    py: Python<'_>,
    v: &serde_json::Map<String, serde_json::Value>,
) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(v).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(py
        .import("json")?
        .getattr("loads")?
        .call1((text,))?
        .unbind())
}

/// What the server's authenticate hook is shown about a client that completed the protocol
/// handshake: `peer` (`(ip, port)`), `meta` (the hello's `meta` dict: `{}` for Python 3.3.0
/// and Gen 1 clients), `token` (`meta["token"]` when a string), `peer_version`, `tls` (a
/// `TlsInfo` on a TLS server, else None), `certificate_subject` / `certificate_cn` (the
/// client's verified certificate under mutual TLS, else None).
#[pyclass(module = "veltix_rs._native", name = "AuthRequest", frozen)]
pub struct PyAuthRequest {
    ip: String,
    port: u16,
    meta: Py<PyAny>,
    meta_keys: Vec<String>,
    token: Option<String>,
    peer_version: String,
    tls: Option<Py<PyTlsInfo>>,
    subject: Option<String>,
    cn: Option<String>,
}

impl PyAuthRequest {
    fn from_core(py: Python<'_>, r: &AuthRequest) -> PyResult<Py<PyAuthRequest>> {
        let cert = r.tls.as_ref().and_then(|t| t.peer_certificate.as_ref());
        Py::new(
            py,
            PyAuthRequest {
                ip: r.peer.ip().to_string(),
                port: r.peer.port(),
                meta: json_to_py(py, &r.meta)?,
                meta_keys: r.meta.keys().cloned().collect(),
                token: r.token().map(String::from),
                peer_version: r.peer_version.clone(),
                tls: py_tls(py, r.tls.as_ref())?,
                subject: cert.map(|c| c.subject.clone()),
                cn: r.certificate_cn().map(String::from),
            },
        )
    }
}

#[pymethods]
impl PyAuthRequest {
    /// `(ip, port)` of the client.
    #[getter]
    fn peer(&self) -> (String, u16) {
        (self.ip.clone(), self.port)
    }
    /// The client's IP.
    #[getter]
    fn ip(&self) -> &str {
        &self.ip
    }
    /// The client's port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }
    /// The `meta` object of the client's hello, as a dict (`{}` when it sent none).
    #[getter]
    fn meta(&self, py: Python<'_>) -> Py<PyAny> {
        self.meta.clone_ref(py)
    }
    /// `meta["token"]` when it is a string (what `ClientConfig(token=...)` sends), else None.
    #[getter]
    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
    /// The Veltix version the client announced (`"3.3.0"` for Python Veltix 3.3.0).
    #[getter]
    fn peer_version(&self) -> &str {
        &self.peer_version
    }
    /// The TLS session (`TlsInfo`) when the server speaks TLS, else None.
    #[getter]
    fn tls(&self, py: Python<'_>) -> Option<Py<PyTlsInfo>> {
        self.tls.as_ref().map(|t| t.clone_ref(py))
    }
    /// The subject of the client's verified certificate (mutual TLS), else None.
    #[getter]
    fn certificate_subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
    /// The common name of the client's verified certificate (mutual TLS), else None.
    #[getter]
    fn certificate_cn(&self) -> Option<&str> {
        self.cn.as_deref()
    }

    /// Shows the keys of `meta`, never its values (they may be credentials).
    fn __repr__(&self) -> String {
        format!(
            "AuthRequest(peer=('{}', {}), meta_keys={:?}, peer_version={:?}, certificate_subject={:?})",
            self.ip, self.port, self.meta_keys, self.peer_version, self.subject
        )
    }
}

/// Runs the Python authenticate hook (the package's wrapper, which normalises the user's answer
/// to `(accept, reason, tags_json)`) for one client, on the tokio blocking-pool thread the core
/// calls the sync hook on: the GIL is taken only for the call.
fn run_auth_hook(st: &ServerState, hook: &Py<PyAny>, req: &AuthRequest) -> AuthDecision {
    // Counted before the check, so `shutdown` either sees this call or it sees the flag.
    let _running = InFlight::enter();
    if SHUTDOWN.load(Ordering::Acquire) {
        return AuthDecision::reject("server shutting down");
    }
    let decided = Python::try_attach(|py| {
        let r = (|| -> PyResult<AuthDecision> {
            let request = PyAuthRequest::from_core(py, req)?;
            let answer = hook.call1(py, (request,))?;
            let (accept, reason, tags): (bool, String, Option<String>) = answer.extract(py)?;
            if !accept {
                return Ok(AuthDecision::reject(reason));
            }
            let tags: HashMap<String, serde_json::Value> = match tags {
                Some(t) => serde_json::from_str(&t)
                    .map_err(|e| PyValueError::new_err(format!("authenticate tags: {e}")))?,
                None => HashMap::new(),
            };
            Ok(AuthDecision::Accept(tags))
        })();
        r.unwrap_or_else(|e| {
            report(py, &st.on_error, hook, e);
            AuthDecision::reject("authentication failed")
        })
    });
    decided.unwrap_or_else(|| AuthDecision::reject("server shutting down"))
}

fn server_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> PyResult<Option<ServerTls>> {
    match (cert, key) {
        (None, None) if client_ca.is_none() => Ok(None),
        (Some(cert), Some(key)) => {
            let tls = ServerTls::from_pem_files(cert, key);
            Ok(Some(match client_ca {
                Some(ca) => tls.client_ca_file(ca),
                None => tls,
            }))
        }
        _ => Err(PyValueError::new_err(
            "TLS needs both tls_cert and tls_key (tls_client_ca needs them too)",
        )),
    }
}

fn client_tls(
    tls: bool,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> PyResult<Option<ClientTls>> {
    if !tls && ca.is_none() {
        if server_name.is_some() || cert.is_some() || key.is_some() {
            return Err(PyValueError::new_err(
                "tls_server_name, tls_cert and tls_key need tls=True or tls_ca",
            ));
        }
        return Ok(None);
    }
    let mut t = match ca {
        Some(ca) => ClientTls::ca_file(ca),
        None => ClientTls::system_roots(),
    };
    if let Some(name) = server_name {
        t = t.server_name(name);
    }
    match (cert, key) {
        (None, None) => {}
        (Some(cert), Some(key)) => t = t.client_cert_files(cert, key),
        _ => {
            return Err(PyValueError::new_err(
                "a client certificate needs both tls_cert and tls_key",
            ))
        }
    }
    Ok(Some(t))
}

fn client_meta(meta_json: Option<String>) -> PyResult<serde_json::Map<String, serde_json::Value>> {
    match meta_json {
        None => Ok(serde_json::Map::new()),
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            Ok(_) => Err(PyValueError::new_err("meta must be a JSON object")),
            Err(e) => Err(PyValueError::new_err(format!(
                "meta is not valid JSON: {e}"
            ))),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Connection events (the core's `observe` hook) for the Python bus
// ---------------------------------------------------------------------------------------------

/// Event groups the Python bus listens to (bit mask set by `set_events`).
const EV_PING: u32 = 1;
const EV_PONG: u32 = 2;
const EV_HANDSHAKE: u32 = 4;
const EV_FULL: u32 = 8;
const EV_ACCEPT: u32 = 16;
const EV_HANDLER: u32 = 32;
const EV_RECONNECT: u32 = 64;

/// A core event copied out of the I/O thread, for the package's `on_event(kind, *args)`.
enum Owned {
    Ping(u32),
    Pong(u32),
    Start,
    Done(String),
    Fail(String, Option<String>),
    Full((String, u16), usize, usize),
    Accept(String),
    Violation((String, u16), String),
    Cancelled(u32),
}

struct Queued {
    target: Arc<Py<PyAny>>,
    event: Owned,
}

/// Events handed to the event thread / delivered by it (for [`flush_events`]).
static EV_SENT: AtomicU64 = AtomicU64::new(0);
static EV_DONE: Mutex<u64> = Mutex::new(0);
static EV_DONE_CV: Condvar = Condvar::new();
static EV_TX: std::sync::OnceLock<std::sync::mpsc::Sender<Queued>> = std::sync::OnceLock::new();

thread_local! {
    static ON_EVENT_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn addr_of(a: std::net::SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

/// Python Veltix's `HANDSHAKE_FAIL` reason (and `peer_version` for a version mismatch).
fn fail_reason(e: &Error) -> (String, Option<String>) {
    match e {
        Error::ServerFull(r) | Error::Rejected(r) => (r.clone(), None),
        Error::Handshake(veltix::HandshakeError::IncompatibleVersion { peer, .. }) => {
            ("version_mismatch".into(), Some(peer.clone()))
        }
        Error::Handshake(veltix::HandshakeError::NotAcknowledged(_)) => ("ack_failed".into(), None),
        Error::Tls(_) | Error::TlsConfig(_) => ("tls_failed".into(), None),
        _ => ("recv_failed".into(), None),
    }
}

/// The process-wide event thread: delivers queued events in order, many per GIL acquisition.
/// The core's observer runs on I/O threads, which never attach to the interpreter.
fn event_sender() -> &'static std::sync::mpsc::Sender<Queued> {
    EV_TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Queued>();
        let spawned = std::thread::Builder::new()
            .name("veltix-py-events".into())
            .spawn(move || {
                ON_EVENT_THREAD.with(|t| t.set(true));
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < 256 {
                        match rx.try_recv() {
                            Ok(q) => batch.push(q),
                            Err(_) => break,
                        }
                    }
                    let n = batch.len() as u64;
                    if !SHUTDOWN.load(Ordering::Acquire) {
                        let _running = InFlight::enter();
                        let _ = Python::try_attach(|py| {
                            for q in batch.drain(..) {
                                deliver(py, q);
                            }
                        });
                    }
                    drop(batch);
                    *lock(&EV_DONE) += n;
                    EV_DONE_CV.notify_all();
                }
            });
        if let Err(e) = spawned {
            eprintln!("veltix_rs: cannot start the event thread: {e}");
        }
        tx
    })
}

fn deliver(py: Python<'_>, q: Queued) {
    let f = q.target.bind(py);
    let r = match q.event {
        Owned::Ping(id) => f.call1(("ping", id)),
        Owned::Pong(id) => f.call1(("pong", id)),
        Owned::Start => f.call1(("handshake_start",)),
        Owned::Done(v) => f.call1(("handshake_done", v)),
        Owned::Fail(reason, v) => f.call1(("handshake_fail", reason, v)),
        Owned::Full(addr, current, max) => f.call1(("server_full", addr, current, max)),
        Owned::Accept(e) => f.call1(("accept", e)),
        Owned::Violation(addr, reason) => f.call1(("protocol", addr, reason)),
        Owned::Cancelled(attempt) => f.call1(("reconnect_cancelled", attempt)),
    };
    if let Err(e) = r {
        e.write_unraisable(py, Some(f));
    }
}

/// The core observer of one server or client: copies the events the bus listens to (`mask`)
/// and queues them for the event thread. Costs one atomic load for an unwatched event.
fn observer(
    mask: Arc<std::sync::atomic::AtomicU32>,
    target: Py<PyAny>,
) -> impl Fn(&veltix::observe::Event<'_>) + Send + Sync + 'static {
    use veltix::observe::Event as E;
    let target = Arc::new(target);
    move |e: &E<'_>| {
        let m = mask.load(Ordering::Acquire);
        let event = match e {
            E::PingReceived { request_id, .. } if m & EV_PING != 0 => Owned::Ping(*request_id),
            E::PongSent { request_id, .. } if m & EV_PONG != 0 => Owned::Pong(*request_id),
            E::HandshakeStarted { .. } if m & EV_HANDSHAKE != 0 => Owned::Start,
            E::HandshakeDone { peer_version, .. } if m & EV_HANDSHAKE != 0 => {
                Owned::Done(peer_version.to_string())
            }
            E::HandshakeFailed { error, .. } if m & EV_HANDSHAKE != 0 => {
                let (reason, version) = fail_reason(error);
                Owned::Fail(reason, version)
            }
            E::ServerFull { peer, current, max } if m & EV_FULL != 0 => {
                Owned::Full(addr_of(*peer), *current, *max)
            }
            E::AcceptFailed { error } if m & EV_ACCEPT != 0 => Owned::Accept(error.to_string()),
            E::ProtocolViolation { peer, reason } if m & EV_HANDLER != 0 => {
                Owned::Violation(addr_of(*peer), reason.to_string())
            }
            E::ReconnectCancelled { attempt, .. } if m & EV_RECONNECT != 0 => {
                Owned::Cancelled(*attempt)
            }
            _ => return,
        };
        EV_SENT.fetch_add(1, Ordering::AcqRel);
        if event_sender()
            .send(Queued {
                target: target.clone(),
                event,
            })
            .is_err()
        {
            *lock(&EV_DONE) += 1;
        }
    }
}

/// Waits (GIL released, bounded) until the event thread delivered every event queued so far,
/// so that e.g. `HANDSHAKE_DONE` is on the bus before `connect()` returns or `ON_CONNECT` runs.
/// No-op when nothing is pending or on the event thread itself.
fn flush_events(py: Python<'_>) {
    let target = EV_SENT.load(Ordering::Acquire);
    if *lock(&EV_DONE) >= target || ON_EVENT_THREAD.with(|t| t.get()) {
        return;
    }
    py.detach(move || {
        let done = lock(&EV_DONE);
        let _ = EV_DONE_CV
            .wait_timeout_while(done, Duration::from_secs(2), |d| *d < target)
            .unwrap_or_else(|p| p.into_inner());
    });
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// The native handle of one connected client (wrapped by `veltix_rs.ClientInfo`).
#[pyclass(module = "veltix_rs._native", name = "ClientHandle", frozen)]
pub struct ClientHandle {
    inner: ClientInfo,
    gen1: bool,
}

#[pymethods]
impl ClientHandle {
    /// Process-wide unique connection id.
    #[getter]
    fn id(&self) -> u64 {
        self.inner.id()
    }
    /// Peer IP as a string.
    #[getter]
    fn ip(&self) -> String {
        self.inner.ip().to_string()
    }
    /// Peer port.
    #[getter]
    fn port(&self) -> u16 {
        self.inner.port()
    }
    /// True once the handshake succeeded.
    #[getter]
    fn handshake_done(&self) -> bool {
        self.inner.handshake_done()
    }
    /// True while the connection is open.
    #[getter]
    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }
    /// The TLS session (`TlsInfo`) on a TLS server, else None.
    #[getter]
    fn tls(&self, py: Python<'_>) -> PyResult<Option<Py<PyTlsInfo>>> {
        py_tls(py, self.inner.tls())
    }
    /// The core's tags of this client (those the authenticate hook set) as a JSON object
    /// string; None when there are none.
    fn tags_json(&self) -> PyResult<Option<String>> {
        let tags = self.inner.tag_map();
        if tags.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(&tags)
            .map(Some)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Queues one frame; False if the connection is closed, its queue is full, or the message is
    /// invalid (reserved type, too large). Large payloads release the GIL.
    #[pyo3(signature = (code, content, request_id = None))]
    fn send(&self, py: Python<'_>, code: u16, content: &[u8], request_id: Option<u32>) -> bool {
        let inner = &self.inner;
        send_parts(
            py,
            |c, id, b| inner.send_slice(c, id, b).is_ok(),
            code,
            request_id,
            content,
        )
    }

    /// Sends a `Request` object (the fast path of `Server.send`); False if it is not a valid
    /// request or cannot be queued.
    fn send_request(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> bool {
        match read_request(request) {
            Some((code, content, id)) => self.send(py, code, content.as_bytes(py), id),
            None => false,
        }
    }

    /// Sends and waits (GIL released) for the reply with the same id; None on timeout, send
    /// failure, or as soon as the connection drops.
    #[pyo3(signature = (code, content, request_id, timeout))]
    fn send_and_wait(
        &self,
        py: Python<'_>,
        code: u16,
        content: &[u8],
        request_id: Option<u32>,
        timeout: f64,
    ) -> PyResult<Option<Py<PyResponse>>> {
        let timeout = secs(timeout)?;
        let req = request(code, content, request_id);
        let inner = self.inner.clone();
        match py.detach(move || inner.send_and_wait(req, timeout)) {
            Ok(m) => Ok(Some(PyResponse::from_core_owned(py, &m, self.gen1)?)),
            Err(_) => Ok(None),
        }
    }

    /// PING round trip in ms (GIL released); None on timeout or disconnect.
    fn ping(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<f64>> {
        let timeout = secs(timeout)?;
        let inner = self.inner.clone();
        Ok(py.detach(move || inner.ping(timeout)).ok().map(ms))
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

struct ServerState {
    /// The Python `ClientInfo` of each live connection (one object per connection, so tags and
    /// identity hold).
    clients: Mutex<HashMap<u64, Py<PyAny>>>,
    wrap_client: Py<PyAny>,
    on_error: Py<PyAny>,
    gen1: bool,
    /// Set while the bus has `RECEIVED`/`ROUTED`/`UNHANDLED` subscribers: dispatch then also
    /// calls `on_observe(client, response, kind)`.
    observe: AtomicBool,
    on_observe: Py<PyAny>,
    /// The Python `on_recv` fallback and its argument order (the core's `on_recv` is always
    /// installed, so unrouted messages can be reported as `UNHANDLED`).
    on_recv: Mutex<Option<(Py<PyAny>, bool)>>,
}

thread_local! {
    /// The Python `ClientInfo` this worker thread looked up last, by connection id (ids are
    /// process-wide unique): a batch holds one connection's messages, so this saves the map's
    /// lock and lookup for all but the first message of a batch.
    static LAST_CLIENT: std::cell::RefCell<Option<(u64, Py<PyAny>)>> =
        const { std::cell::RefCell::new(None) };
}

impl ServerState {
    /// [`ServerState::py_client`] through this thread's one-entry cache (message dispatch).
    fn py_client_cached(&self, py: Python<'_>, c: &ClientInfo) -> PyResult<Py<PyAny>> {
        let id = c.id();
        let cached = LAST_CLIENT.with(|l| match &*l.borrow() {
            Some((last, obj)) if *last == id => Some(obj.clone_ref(py)),
            _ => None,
        });
        if let Some(obj) = cached {
            return Ok(obj);
        }
        let obj = self.py_client(py, c)?;
        let old = LAST_CLIENT.with(|l| l.replace(Some((id, obj.clone_ref(py)))));
        drop(old);
        Ok(obj)
    }

    fn py_client(&self, py: Python<'_>, c: &ClientInfo) -> PyResult<Py<PyAny>> {
        if let Some(o) = lock(&self.clients).get(&c.id()) {
            return Ok(o.clone_ref(py));
        }
        let handle = Py::new(
            py,
            ClientHandle {
                inner: c.clone(),
                gen1: self.gen1,
            },
        )?;
        let obj = self.wrap_client.call1(py, (handle,))?;
        let stored = lock(&self.clients)
            .entry(c.id())
            .or_insert_with(|| obj.clone_ref(py))
            .clone_ref(py);
        Ok(stored)
    }
}

/// The native server behind `veltix_rs.Server` (and `veltix_rs.v1.Server`).
#[pyclass(module = "veltix_rs._native", name = "NativeServer", frozen)]
pub struct NativeServer {
    server: Arc<veltix::Server>,
    state: Arc<ServerState>,
    events: Arc<std::sync::atomic::AtomicU32>,
}

#[pymethods]
impl NativeServer {
    /// Builds the server (does not bind). `wrap_client(handle)` makes the Python `ClientInfo`;
    /// `on_connect(client)` / `on_disconnect(client)` are the package's dispatchers;
    /// `on_error(func, exc)` reports callback exceptions. `tls_cert` + `tls_key` (PEM files,
    /// read by `start()`) make it a TLS server; `tls_client_ca` adds mutual TLS.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (host, port, buffer_size, max_connection, max_message_size,
        handshake_timeout, max_workers, id_window, generation_, performance_mode,
        wrap_client, on_connect, on_disconnect, on_error, on_observe,
        tls_cert = None, tls_key = None, tls_client_ca = None, on_event = None))]
    fn new(
        host: String,
        port: u16,
        buffer_size: usize,
        max_connection: i64,
        max_message_size: usize,
        handshake_timeout: f64,
        max_workers: usize,
        id_window: u32,
        generation_: u8,
        performance_mode: &str,
        wrap_client: Py<PyAny>,
        on_connect: Py<PyAny>,
        on_disconnect: Py<PyAny>,
        on_error: Py<PyAny>,
        on_observe: Py<PyAny>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        tls_client_ca: Option<PathBuf>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let generation = generation(generation_)?;
        let mut config = ServerConfig::new()
            .host(host)
            .port(port)
            .buffer_size(buffer_size)
            .max_message_size(max_message_size)
            .handshake_timeout(secs(handshake_timeout)?)
            .max_workers(max_workers)
            .generation(generation)
            .id_window(id_window.min(32768))
            .performance_mode(performance(performance_mode)?);
        config.tls = server_tls(tls_cert, tls_key, tls_client_ca)?;
        config.max_connections = if max_connection < 0 {
            None
        } else {
            Some(max_connection as usize)
        };
        let server = Arc::new(veltix::Server::new(config));
        let events = Arc::new(std::sync::atomic::AtomicU32::new(0));
        if let Some(f) = on_event {
            server.on_event(observer(events.clone(), f));
        }
        let state = Arc::new(ServerState {
            clients: Mutex::new(HashMap::new()),
            wrap_client,
            on_error,
            gen1: generation == Generation::Gen1,
            observe: AtomicBool::new(false),
            on_observe,
            on_recv: Mutex::new(None),
        });
        // One GIL acquisition per batch of one connection's messages.
        server.around_handlers(batch_with_python);
        let st = state.clone();
        server.on_recv(move |c: &ClientInfo, m: Response| {
            with_python(|py| {
                let fallback = lock(&st.on_recv)
                    .as_ref()
                    .map(|(f, rev)| (f.clone_ref(py), *rev));
                match fallback {
                    Some((func, rev)) => dispatch(py, &st, &func, rev, c, m, "on_recv"),
                    None => {
                        if let Err(e) = observe(py, &st, c, &m, "unhandled") {
                            report(py, &st.on_error, &st.on_observe, e);
                        }
                    }
                }
            })
        });
        let st = state.clone();
        server.on_connect(move |c: &ClientInfo| {
            with_python(|py| {
                // HANDSHAKE_DONE (event thread) is on the bus before ON_CONNECT.
                flush_events(py);
                let r = st
                    .py_client(py, c)
                    .and_then(|obj| on_connect.call1(py, (obj,)));
                if let Err(e) = r {
                    report(py, &st.on_error, &on_connect, e);
                }
            })
        });
        let st = state.clone();
        server.on_disconnect(move |c: &ClientInfo| {
            with_python(|py| {
                let r = st
                    .py_client(py, c)
                    .and_then(|obj| on_disconnect.call1(py, (obj,)));
                if let Err(e) = r {
                    report(py, &st.on_error, &on_disconnect, e);
                }
                let gone = lock(&st.clients).remove(&c.id());
                drop(gone);
                let cached = LAST_CLIENT.with(|l| {
                    let mut l = l.borrow_mut();
                    match &*l {
                        Some((id, _)) if *id == c.id() => l.take(),
                        _ => None,
                    }
                });
                drop(cached);
            })
        });
        Ok(NativeServer {
            server,
            state,
            events,
        })
    }

    /// Binds and starts serving; returns `(host, port)` actually bound. Raises `OSError` when
    /// the address cannot be bound, `TlsConfigError` when a TLS file is missing, unreadable,
    /// not PEM or the key does not match, `RuntimeError` if already running.
    fn start(&self, py: Python<'_>) -> PyResult<(String, u16)> {
        match self.server.start() {
            Ok(a) => Ok((a.ip().to_string(), a.port())),
            Err(Error::AlreadyRunning) => Err(PyRuntimeError::new_err("server already running")),
            Err(e) => Err(to_py_err(py, e)),
        }
    }

    /// True while listening.
    #[getter]
    fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// True when `max_connection` is reached.
    #[getter]
    fn is_full(&self) -> bool {
        self.server.is_full()
    }

    /// Registers `func` for type `code`. It is called `func(client, response)`, or
    /// `func(response, client)` with `reversed_args` (the 1.6 order).
    #[pyo3(signature = (code, func, reversed_args = false))]
    fn route(&self, code: u16, func: Py<PyAny>, reversed_args: bool) {
        let st = self.state.clone();
        self.server.route(code, move |c: &ClientInfo, m: Response| {
            with_python(|py| dispatch(py, &st, &func, reversed_args, c, m, "registered"))
        });
    }

    /// Removes the route of `code`; True if there was one.
    fn unroute(&self, code: u16) -> bool {
        self.server.unroute(code)
    }

    /// Sets the authenticate hook (replacing any previous one): `hook(AuthRequest)` must return
    /// `(accept, reason, tags_json)` (the package's wrapper normalises the user's answer). It
    /// runs on tokio's blocking pool, within `handshake_timeout`, the GIL taken only for the
    /// call; an exception (or a malformed answer) is reported through `on_error` and rejects
    /// the client with "authentication failed".
    fn authenticate(&self, hook: Py<PyAny>) {
        let st = self.state.clone();
        self.server
            .authenticate(move |req: &AuthRequest| run_auth_hook(&st, &hook, req));
    }

    /// Sets the fallback for messages without a route (same call convention as `route`).
    #[pyo3(signature = (func, reversed_args = false))]
    fn on_recv(&self, func: Py<PyAny>, reversed_args: bool) {
        *lock(&self.state.on_recv) = Some((func, reversed_args));
    }

    /// Turns `on_observe` reporting (the bus's `RECEIVED`/`ROUTED`/`UNHANDLED`) on or off.
    fn set_observe(&self, on: bool) {
        self.state.observe.store(on, Ordering::Release);
    }

    /// Which connection events go to `on_event` (bits: 1 PING, 2 PONG, 4 handshakes, 8 server
    /// full, 16 accept errors, 32 protocol violations).
    fn set_events(&self, mask: u32) {
        self.events.store(mask, Ordering::Release);
    }

    /// The Python `ClientInfo` of every client whose handshake is done.
    fn clients(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.server
            .clients()
            .iter()
            .map(|c| self.state.py_client(py, c))
            .collect()
    }

    /// Sends one frame to every client not in `except_ids` (connection ids); True if it was
    /// queued to all of them (also True with no clients).
    fn broadcast(
        &self,
        py: Python<'_>,
        code: u16,
        content: &[u8],
        request_id: Option<u32>,
        except_ids: Vec<u64>,
    ) -> bool {
        let all = self.server.clients();
        let (except, targets): (Vec<ClientInfo>, Vec<ClientInfo>) =
            all.into_iter().partition(|c| except_ids.contains(&c.id()));
        let req = request(code, content, request_id);
        let server = self.server.clone();
        let run = move || match server.broadcast(req, &except) {
            Ok(n) => n >= targets.len(),
            Err(_) => false,
        };
        if content.len() >= DETACH_SEND_BYTES {
            py.detach(run)
        } else {
            run()
        }
    }

    /// The core's counters (connections, frames and bytes in/out, drops, rejections, handshake
    /// failures) as a JSON object string.
    fn stats_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.server.stats())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Closes one client (queued data is flushed); False if it was not connected.
    fn close_client(&self, handle: &ClientHandle) -> bool {
        self.server.close_client(&handle.inner)
    }

    /// Stops serving and closes every client (GIL released); waits for their `on_disconnect`
    /// callbacks unless called from a callback.
    fn close_all(&self, py: Python<'_>) {
        let server = self.server.clone();
        py.detach(move || server.close_all());
    }
}

fn observe(
    py: Python<'_>,
    st: &ServerState,
    c: &ClientInfo,
    m: &Response,
    kind: &str,
) -> PyResult<()> {
    // Unhandled messages are always reported (the package logs a warning, as Veltix does).
    if kind != "unhandled" && !st.observe.load(Ordering::Acquire) {
        return Ok(());
    }
    let client = st.py_client_cached(py, c)?;
    let resp = PyResponse::from_core_owned(py, m, st.gen1)?;
    st.on_observe.call1(py, (client, resp, kind))?;
    Ok(())
}

/// Calls a Python route or `on_recv`: `func(client, response)` (or reversed, the 1.6 order).
fn dispatch(
    py: Python<'_>,
    st: &ServerState,
    func: &Py<PyAny>,
    reversed_args: bool,
    c: &ClientInfo,
    m: Response,
    kind: &str,
) {
    if let Err(e) = observe(py, st, c, &m, kind) {
        report(py, &st.on_error, &st.on_observe, e);
    }
    let r = (move || -> PyResult<()> {
        let client = st.py_client_cached(py, c)?;
        let resp = PyResponse::for_dispatch(py, m, st.gen1)?;
        let arg = resp.clone_ref(py);
        // Rust tuples of Python objects go through vectorcall (no argument tuple is built).
        let called = if reversed_args {
            func.call1(py, (arg, client))
        } else {
            func.call1(py, (client, arg))
        };
        PyResponse::after_dispatch(py, resp);
        called.map(drop)
    })();
    if let Err(e) = r {
        report(py, &st.on_error, func, e);
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// The native client behind `veltix_rs.Client` (and `veltix_rs.v1.Client`).
#[pyclass(module = "veltix_rs._native", name = "NativeClient", frozen)]
pub struct NativeClient {
    client: Arc<veltix::Client>,
    state: Arc<ClientState>,
    events: Arc<std::sync::atomic::AtomicU32>,
}

struct ClientState {
    on_error: Py<PyAny>,
    gen1: bool,
    observe: AtomicBool,
    on_observe: Py<PyAny>,
    on_recv: Mutex<Option<Py<PyAny>>>,
}

impl ClientState {
    fn observe(&self, py: Python<'_>, m: &Response, kind: &str) {
        // Unhandled messages are always reported (the package logs a warning, as Veltix does).
        if kind != "unhandled" && !self.observe.load(Ordering::Acquire) {
            return;
        }
        let r = PyResponse::from_core_owned(py, m, self.gen1)
            .and_then(|resp| self.on_observe.call1(py, (resp, kind)));
        if let Err(e) = r {
            report(py, &self.on_error, &self.on_observe, e);
        }
    }

    fn dispatch(&self, py: Python<'_>, func: &Py<PyAny>, m: Response, kind: &str) {
        self.observe(py, &m, kind);
        let r = PyResponse::for_dispatch(py, m, self.gen1).and_then(|resp| {
            let called = func.call1(py, (resp.clone_ref(py),));
            PyResponse::after_dispatch(py, resp);
            called
        });
        if let Err(e) = r {
            report(py, &self.on_error, func, e);
        }
    }
}

#[pymethods]
impl NativeClient {
    /// Builds the client (does not connect). `on_connect()` and
    /// `on_disconnect((permanent, attempt, retry_max, reason_name))` are the package's
    /// dispatchers; `on_error(func, exc)` reports callback exceptions. TLS: `tls` (system
    /// roots) or `tls_ca` (a CA PEM file), `tls_server_name` (default: `host`), `tls_cert` +
    /// `tls_key` (a client certificate); files are read by `connect()`. `meta_json`: the JSON
    /// object sent as the hello's `meta` (credentials for the server's authenticate hook).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (host, port, buffer_size, max_message_size, handshake_timeout,
        max_workers, retry, retry_delay, generation_, performance_mode,
        on_connect, on_disconnect, on_error, on_observe,
        tls = false, tls_ca = None, tls_server_name = None, tls_cert = None, tls_key = None,
        meta_json = None, on_event = None))]
    fn new(
        host: String,
        port: u16,
        buffer_size: usize,
        max_message_size: usize,
        handshake_timeout: f64,
        max_workers: usize,
        retry: u32,
        retry_delay: f64,
        generation_: u8,
        performance_mode: &str,
        on_connect: Py<PyAny>,
        on_disconnect: Py<PyAny>,
        on_error: Py<PyAny>,
        on_observe: Py<PyAny>,
        tls: bool,
        tls_ca: Option<PathBuf>,
        tls_server_name: Option<String>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        meta_json: Option<String>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let generation = generation(generation_)?;
        let timeout = secs(handshake_timeout)?;
        let mut config = ClientConfig::new(host, port)
            .meta(client_meta(meta_json)?)
            .buffer_size(buffer_size)
            .max_message_size(max_message_size)
            .handshake_timeout(timeout)
            .connect_timeout(timeout)
            .max_workers(max_workers)
            .generation(generation)
            .performance_mode(performance(performance_mode)?)
            .reconnect(ReconnectPolicy::constant(retry, secs(retry_delay)?));
        config.tls = client_tls(tls, tls_ca, tls_server_name, tls_cert, tls_key)?;
        let client = Arc::new(veltix::Client::new(config));
        let events = Arc::new(std::sync::atomic::AtomicU32::new(0));
        if let Some(f) = on_event {
            client.on_event(observer(events.clone(), f));
        }
        let state = Arc::new(ClientState {
            on_error,
            gen1: generation == Generation::Gen1,
            observe: AtomicBool::new(false),
            on_observe,
            on_recv: Mutex::new(None),
        });
        client.around_handlers(batch_with_python);
        let st = state.clone();
        client.on_recv(move |m: Response| {
            with_python(|py| {
                let fallback = lock(&st.on_recv).as_ref().map(|f| f.clone_ref(py));
                match fallback {
                    Some(func) => st.dispatch(py, &func, m, "on_recv"),
                    None => st.observe(py, &m, "unhandled"),
                }
            })
        });
        let st = state.clone();
        client.on_connect(move || {
            with_python(|py| {
                flush_events(py);
                if let Err(e) = on_connect.call0(py) {
                    report(py, &st.on_error, &on_connect, e);
                }
            })
        });
        let st = state.clone();
        client.on_disconnect(move |s: &DisconnectState| {
            with_python(|py| {
                let args = (s.permanent, s.attempt, s.retry_max, reason_name(s.reason));
                if let Err(e) = on_disconnect.call1(py, args) {
                    report(py, &st.on_error, &on_disconnect, e);
                }
            })
        });
        Ok(NativeClient {
            client,
            state,
            events,
        })
    }

    /// Connects and completes the handshake (GIL released; runs the reconnect loop on failure
    /// when `retry > 0`). Raises `ServerFullError`, `RejectedError` (refused by the server's
    /// authenticate hook), `TlsConfigError` (bad certificate, key or CA file), `TlsError` (TLS
    /// handshake failed), `ConnectionRefusedError`, `TimeoutError` or `ConnectionError`.
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        let client = self.client.clone();
        let r = py.detach(move || client.connect());
        // HANDSHAKE_* (event thread) are on the bus before connect() returns.
        flush_events(py);
        r.map_err(|e| to_py_err(py, e))
    }

    /// True while connected.
    #[getter]
    fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Which connection events go to `on_event` (bits: 1 PING, 2 PONG, 4 handshakes, 32
    /// protocol violations, 64 a reconnect attempt cancelled after it connected).
    fn set_events(&self, mask: u32) {
        self.events.store(mask, Ordering::Release);
    }

    /// Registers `func(response)` for type `code`.
    fn route(&self, code: u16, func: Py<PyAny>) {
        let st = self.state.clone();
        self.client.route(code, move |m: Response| {
            with_python(|py| st.dispatch(py, &func, m, "registered"))
        });
    }

    /// Removes the route of `code`; True if there was one.
    fn unroute(&self, code: u16) -> bool {
        self.client.unroute(code)
    }

    /// Sets the fallback `func(response)` for messages without a route.
    fn on_recv(&self, func: Py<PyAny>) {
        *lock(&self.state.on_recv) = Some(func);
    }

    /// Turns `on_observe` reporting (the bus's `RECEIVED`/`ROUTED`/`UNHANDLED`) on or off.
    fn set_observe(&self, on: bool) {
        self.state.observe.store(on, Ordering::Release);
    }

    /// Queues one frame; False when not connected or the message is invalid.
    #[pyo3(signature = (code, content, request_id = None))]
    fn send(&self, py: Python<'_>, code: u16, content: &[u8], request_id: Option<u32>) -> bool {
        let client = &self.client;
        send_parts(
            py,
            |c, id, b| client.send_slice(c, id, b).is_ok(),
            code,
            request_id,
            content,
        )
    }

    /// Sends a `Request` object (the fast path of `Client.send`); False if it is not a valid
    /// request, or when not connected.
    fn send_request(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> bool {
        match read_request(request) {
            Some((code, content, id)) => self.send(py, code, content.as_bytes(py), id),
            None => false,
        }
    }

    /// Sends and waits (GIL released) for the reply; None on timeout, failure or drop.
    fn send_and_wait(
        &self,
        py: Python<'_>,
        code: u16,
        content: &[u8],
        request_id: Option<u32>,
        timeout: f64,
    ) -> PyResult<Option<Py<PyResponse>>> {
        let timeout = secs(timeout)?;
        let req = request(code, content, request_id);
        let client = self.client.clone();
        match py.detach(move || client.send_and_wait(req, timeout)) {
            Ok(m) => Ok(Some(PyResponse::from_core_owned(py, &m, self.state.gen1)?)),
            Err(_) => Ok(None),
        }
    }

    /// PING round trip in ms (GIL released); None on timeout or when not connected.
    fn ping(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<f64>> {
        let timeout = secs(timeout)?;
        let client = self.client.clone();
        Ok(py.detach(move || client.ping_server(timeout)).ok().map(ms))
    }

    /// Closes the link (GIL released), cancels reconnects; `on_disconnect` gets MANUAL.
    fn disconnect(&self, py: Python<'_>) {
        let client = self.client.clone();
        py.detach(move || client.disconnect());
    }

    /// The core's counters (across reconnects) as a JSON object string.
    fn stats_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.client.stats())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Cancels a running reconnect loop.
    fn stop_retry(&self) {
        self.client.stop_retry();
    }

    /// Starts a background reconnect loop with `max_` attempts (default: the configured retry).
    #[pyo3(signature = (max_ = None))]
    fn retry(&self, max_: Option<u32>) {
        self.client.retry(max_);
    }
}

// ---------------------------------------------------------------------------------------------
// Module
// ---------------------------------------------------------------------------------------------

/// Installs the package's hooks: `type_factory(code) -> MessageType` and the
/// `InvalidContentError` class. (Sends accept only `Request`s: instances of `RequestBase`.)
#[pyfunction]
fn init(py: Python<'_>, type_factory: Py<PyAny>, invalid_content_error: Py<PyAny>) {
    let _ = TYPE_FACTORY.set(py, type_factory);
    let _ = INVALID_CONTENT.set(py, invalid_content_error);
}

/// How many times handler-pool workers have attached to the interpreter to run a batch of
/// callbacks, process-wide (each batch holds up to 64 messages of one connection). For tests
/// and diagnostics.
#[pyfunction]
fn gil_acquisitions() -> u64 {
    BATCHES.load(Ordering::Relaxed)
}

/// Called at interpreter exit: from now on workers no longer call into Python; then waits (GIL
/// released, at most `timeout` seconds) until the callbacks already running have returned, so
/// that no worker is inside Python while the interpreter finalizes. Returns how many batches
/// are still running (0 normally).
#[pyfunction]
#[pyo3(signature = (timeout = 0.0))]
fn shutdown(py: Python<'_>, timeout: f64) -> usize {
    SHUTDOWN.store(true, Ordering::Release);
    let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
    py.detach(move || {
        let n = lock(&IN_FLIGHT);
        let (n, _) = IN_FLIGHT_DONE
            .wait_timeout_while(n, timeout, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *n
    })
}

/// The native extension of `veltix_rs`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    veltix::wrap_handler_runs(run_with_python);
    m.add_class::<PyResponse>()?;
    m.add_class::<RequestBase>()?;
    m.add_class::<ClientHandle>()?;
    m.add_class::<NativeServer>()?;
    m.add_class::<NativeClient>()?;
    m.add_class::<PyTlsInfo>()?;
    m.add_class::<PyAuthRequest>()?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(gil_acquisitions, m)?)?;
    m.add("CORE_VERSION", "veltix-rs 0.1.0")?;
    Ok(())
}
