//! libnftables in this process: a transaction is one netlink exchange with the kernel,
//! where running `nft` costs a process start (hundreds of milliseconds under
//! emulation), twice in every hand-off (hold, then steer). The library is opened at run
//! time, so prism-steerd still works, through `nft`, where it is missing.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// One libnftables context.
pub struct Nft {
    ctx: *mut c_void,
    free: CtxFree,
    error_buffer: GetBuffer,
    run_cmd: RunCmd,
}

// SAFETY: the context is only used under the mutex below, one call at a time.
unsafe impl Send for Nft {}

fn symbol<T: Copy>(lib: *mut c_void, name: &CStr) -> Option<T> {
    // SAFETY: `lib` is a handle from dlopen and `name` a NUL-terminated string.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    // SAFETY: the caller names a function of this library with type T (a fn pointer,
    // the size of a data pointer).
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

impl Nft {
    fn open() -> Option<Self> {
        // SAFETY: dlopen with a NUL-terminated name; the library stays loaded for good.
        let lib = unsafe { libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            return None;
        }
        let new: CtxNew = symbol(lib, c"nft_ctx_new")?;
        let buffer_error: CtxInt = symbol(lib, c"nft_ctx_buffer_error")?;
        let buffer_output: CtxInt = symbol(lib, c"nft_ctx_buffer_output")?;
        let nft = Self {
            // SAFETY: NFT_CTX_DEFAULT (0); the context is freed on drop.
            ctx: unsafe { new(0) },
            free: symbol(lib, c"nft_ctx_free")?,
            error_buffer: symbol(lib, c"nft_ctx_get_error_buffer")?,
            run_cmd: symbol(lib, c"nft_run_cmd_from_buffer")?,
        };
        if nft.ctx.is_null() {
            return None;
        }
        // SAFETY: a live context; errors and output go to buffers, not to stdio.
        unsafe {
            buffer_error(nft.ctx);
            buffer_output(nft.ctx);
        }
        Some(nft)
    }

    fn run(&self, commands: &str) -> Result<(), String> {
        let text = CString::new(commands).map_err(|_| "nft commands hold a NUL byte".to_string())?;
        // SAFETY: a live context and a NUL-terminated command buffer.
        let rc = unsafe { (self.run_cmd)(self.ctx, text.as_ptr()) };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the context's error buffer is a NUL-terminated string it owns, valid
        // until the next call on the context.
        let err = unsafe { (self.error_buffer)(self.ctx) };
        let msg = if err.is_null() {
            String::new()
        } else {
            // SAFETY: as above.
            unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
        };
        Err(format!(
            "nft: {}",
            msg.lines().next().filter(|l| !l.is_empty()).unwrap_or("failed")
        ))
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        // SAFETY: the context came from nft_ctx_new and is not used after this.
        unsafe { (self.free)(self.ctx) };
    }
}

static LIB: Mutex<Option<Option<Nft>>> = Mutex::new(None);

/// Runs `commands` as one transaction through libnftables; None when the library
/// cannot be loaded (the caller runs `nft`).
pub fn run(commands: &str) -> Option<Result<(), String>> {
    let mut lib = LIB.lock().unwrap_or_else(|e| e.into_inner());
    let nft = lib.get_or_insert_with(Nft::open).as_ref()?;
    Some(nft.run(commands))
}

/// Whether libnftables is in use.
pub fn available() -> bool {
    let mut lib = LIB.lock().unwrap_or_else(|e| e.into_inner());
    lib.get_or_insert_with(Nft::open).is_some()
}
