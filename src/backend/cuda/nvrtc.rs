//! NVRTC compilation (PTX or CUBIN for one architecture), shared by the driver backend and the
//! compile tests. cudarc panics when libnvrtc is missing, so every entry point probes first.

use cudarc::nvrtc::{result, sys};
use std::ffi::CString;

/// Whether libnvrtc can be loaded (from `LD_LIBRARY_PATH`, e.g. the `nvidia-cuda-nvrtc-cu12` wheel).
pub fn available() -> bool {
    // Safety: only opens the library; cudarc's probe does not panic.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, when the library loads.
pub fn version() -> Option<(i32, i32)> {
    if !available() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // Safety: the library is present; the out-pointers are valid.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().ok()?;
    Some((major, minor))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Ptx,
    /// SASS for exactly this architecture: also catches register and shared-memory overflows, and
    /// loads on any driver that supports the architecture (no PTX JIT, so no PTX-version mismatch).
    Cubin,
}

/// Compile one source for `arch` (e.g. "sm_90"). An error carries NVRTC's log.
pub fn compile(source: &str, name: &str, arch: &str, output: Output) -> Result<Vec<u8>, String> {
    compile_with_log(source, name, arch, output, &[]).map(|(bytes, _)| bytes)
}

/// As `compile`, with extra NVRTC options (e.g. `--ptxas-options=-v`), also returning NVRTC's log.
pub fn compile_with_log(
    source: &str, name: &str, arch: &str, output: Output, extra_options: &[&str],
) -> Result<(Vec<u8>, String), String> {
    if !available() {
        return Err("libnvrtc not found: install the nvidia-cuda-nvrtc-cu12 wheel and put its lib directory \
                    on LD_LIBRARY_PATH (see README, GPU backends)"
            .into());
    }
    let src = CString::new(source).map_err(|_| format!("{name}: source contains a NUL byte"))?;
    let cname = CString::new(name).map_err(|_| format!("{name}: name contains a NUL byte"))?;
    let prog = result::create_program(&src, Some(&cname)).map_err(|e| format!("{name}: nvrtcCreateProgram: {e}"))?;
    let arch_flag = match output {
        Output::Ptx => format!("--gpu-architecture=compute_{}", arch.trim_start_matches("sm_")),
        Output::Cubin => format!("--gpu-architecture={arch}"),
    };
    // No fast-math: the kernels must agree with the cpu backend to 1e-4 (llm.c issue #168 for GELU).
    let mut options = vec![arch_flag, "--std=c++17".to_string(), "--fmad=true".to_string()];
    options.extend(extra_options.iter().map(|o| o.to_string()));
    // Safety: `prog` is live until destroy_program below; the buffers are sized by NVRTC.
    let outcome = unsafe {
        match result::compile_program(prog, &options) {
            Ok(()) => match output {
                Output::Ptx => result::get_ptx(prog).map(|v| v.into_iter().map(|c| c as u8).collect::<Vec<u8>>()),
                Output::Cubin => get_cubin(prog),
            }
            .map(|bytes| (bytes, result::get_program_log(prog).map(|l| c_chars_to_string(&l)).unwrap_or_default()))
            .map_err(|e| format!("{name} ({arch}): retrieving the output failed: {e}")),
            Err(e) => {
                let log = result::get_program_log(prog).map(|l| c_chars_to_string(&l)).unwrap_or_default();
                Err(format!("{name} ({arch}): NVRTC compile failed ({e}):\n{log}"))
            }
        }
    };
    // Safety: created above, destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    let (mut bytes, log) = outcome?;
    if output == Output::Ptx {
        // NVRTC includes the trailing NUL in the PTX size.
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
    }
    Ok((bytes, log))
}

/// # Safety
/// `prog` must be a successfully compiled, live program.
unsafe fn get_cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, result::NvrtcError> {
    let mut size = 0usize;
    sys::nvrtcGetCUBINSize(prog, &mut size).result()?;
    let mut buf = vec![0u8; size];
    sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut std::ffi::c_char).result()?;
    Ok(buf)
}

fn c_chars_to_string(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The kernel entry points a PTX text defines.
pub fn entry_names_in_ptx(ptx: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(ptx);
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(".visible .entry ").or_else(|| l.trim_start().strip_prefix(".entry ")))
        .map(|rest| rest.split(|c: char| c == '(' || c.is_whitespace()).next().unwrap_or("").to_string())
        .collect()
}
