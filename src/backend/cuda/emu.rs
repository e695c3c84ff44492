//! The emulator launcher: host memory, and launches that run kernels/*.cu compiled as C++ (build.rs)
//! through the fiber-based CUDA execution model in kernels/cuda_emu.{h,cpp}.

use super::{Dim, Launcher};
use crate::error::{Error, Result};
use std::cell::UnsafeCell;
use std::ffi::{c_char, c_void, CString};

/// A host allocation standing in for device memory; kernels write through raw pointers, as on a GPU.
pub struct EmuMem {
    data: UnsafeCell<Vec<u32>>,
}
// Safety: the op contract (disjoint outputs, stream order) is what keeps concurrent use sound.
unsafe impl Sync for EmuMem {}
unsafe impl Send for EmuMem {}

#[cfg(not(memsieve_no_cuda_emu))]
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
    extern "C" {
        pub fn memsieve_emu_launch(
            name: *const c_char, grid: *const c_uint, block: *const c_uint, smem_bytes: c_uint,
            params: *mut *mut c_void, err: *mut c_char, err_len: c_ulong,
        ) -> c_int;
        pub fn memsieve_emu_has_kernel(name: *const c_char) -> c_int;
        pub fn memsieve_emu_kernel_count() -> c_uint;
    }
}

/// Whether this build contains the emulator (it needs a C++ compiler at build time).
pub fn built() -> bool {
    cfg!(not(memsieve_no_cuda_emu))
}

/// Kernels registered in the emulator library.
pub fn kernel_count() -> usize {
    #[cfg(not(memsieve_no_cuda_emu))]
    // Safety: reads the static registry.
    return unsafe { ffi::memsieve_emu_kernel_count() } as usize;
    #[cfg(memsieve_no_cuda_emu)]
    0
}

/// Whether the emulator library has a kernel of this name.
pub fn has_kernel(name: &str) -> bool {
    #[cfg(not(memsieve_no_cuda_emu))]
    {
        let Ok(c) = CString::new(name) else { return false };
        // Safety: a valid C string; reads the static registry.
        unsafe { ffi::memsieve_emu_has_kernel(c.as_ptr()) != 0 }
    }
    #[cfg(memsieve_no_cuda_emu)]
    {
        let _ = name;
        false
    }
}

/// Launch any registered kernel (self-tests included) with cuLaunchKernel-style parameters whose
/// pointers are host addresses. Errors (bad configuration, divergent barrier) come back as text.
///
/// # Safety
/// `params` must match the kernel's signature and its pointers must cover what the kernel touches.
pub unsafe fn launch_raw(name: &str, grid: Dim, block: Dim, shared_bytes: u32, params: &mut [*mut c_void]) -> std::result::Result<(), String> {
    #[cfg(not(memsieve_no_cuda_emu))]
    {
        let name = CString::new(name).map_err(|_| "kernel name with a NUL byte".to_string())?;
        let mut err = [0 as c_char; 512];
        let rc = ffi::memsieve_emu_launch(
            name.as_ptr(), grid.as_ptr(), block.as_ptr(), shared_bytes, params.as_mut_ptr(), err.as_mut_ptr(), err.len() as _,
        );
        if rc == 0 {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&err.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect::<Vec<u8>>()).into_owned())
        }
    }
    #[cfg(memsieve_no_cuda_emu)]
    {
        let _ = (name, grid, block, shared_bytes, params);
        Err("the CUDA emulator was not built".into())
    }
}

pub struct EmuLauncher {
    _private: (),
}

impl EmuLauncher {
    pub fn new() -> Result<Self> {
        if !built() {
            return Err(Error::Backend(
                "the CUDA emulator was not built into this binary (no C++ compiler at build time); \
                 install g++ and rebuild"
                    .into(),
            ));
        }
        if let Some(k) = super::kernels::all_kernels().find(|k| !has_kernel(k)) {
            return Err(Error::Backend(format!("the CUDA emulator lacks kernel {k}")));
        }
        Ok(EmuLauncher { _private: () })
    }
}

impl Launcher for EmuLauncher {
    type Mem = EmuMem;
    const NAME: &'static str = "cuda-emu";
    const TIMING: crate::backend::profile::Timing = crate::backend::profile::Timing::EmulatorWall;

    fn describe(&self) -> String {
        "CUDA emulator on the cpu (kernels/*.cu compiled by the C++ compiler)".into()
    }

    fn alloc(&self, words: usize) -> Result<EmuMem> {
        let mut v: Vec<u32> = Vec::new();
        v.try_reserve_exact(words.max(1)).map_err(|_| {
            Error::Backend(format!("cannot allocate {:.1} MiB for the CUDA emulator", words as f64 * 4.0 / (1 << 20) as f64))
        })?;
        v.resize(words.max(1), 0);
        Ok(EmuMem { data: UnsafeCell::new(v) })
    }

    fn address(&self, mem: &EmuMem, word_offset: usize) -> u64 {
        // Safety: the Vec is never resized, so its buffer never moves.
        unsafe { (*mem.data.get()).as_ptr().add(word_offset) as u64 }
    }

    fn upload(&self, dst: &EmuMem, word_offset: usize, src: &[u32]) {
        // Safety: launches are synchronous, so no kernel is touching the buffer now.
        unsafe { (&mut (*dst.data.get()))[word_offset..word_offset + src.len()].copy_from_slice(src) }
    }

    fn download(&self, src: &EmuMem, word_offset: usize, dst: &mut [u32]) {
        // Safety: as above.
        unsafe { dst.copy_from_slice(&(&(*src.data.get()))[word_offset..word_offset + dst.len()]) }
    }

    fn launch(&self, kernel: &'static str, grid: Dim, block: Dim, shared_bytes: u32, params: &mut [*mut c_void]) {
        // Safety: the host code passes parameters matching the kernel's signature, and pointers from
        // this launcher's allocations.
        if let Err(e) = unsafe { launch_raw(kernel, grid, block, shared_bytes, params) } {
            // A failed launch is a host-side bug (bad configuration) or a kernel barrier bug.
            panic!("CUDA emulator launch failed: {e}");
        }
    }

    fn synchronize(&self) {}
}
