//! Every kernel file compiles with NVRTC for sm_80 and sm_90, to PTX and to CUBIN (which also
//! catches register and shared-memory overflows), and defines exactly the entry points the host code
//! launches. Needs libnvrtc (scripts/test.sh installs the nvidia-cuda-nvrtc-cu12 wheel); without it
//! the tests skip loudly, except under CI=true, where they fail.

use memsieve::backend::cuda::{emu, kernels, nvrtc};

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// false: skip (after saying so). Panics under CI, where a skipped compile check would hide breakage.
fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc::available() {
        return true;
    }
    let msg = format!(
        "\n!!!!!!!! SKIPPED {test}: libnvrtc not found. Install it with `pip install nvidia-cuda-nvrtc-cu12` \
         and put <site-packages>/nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH (scripts/test.sh does). !!!!!!!!\n"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}(CI=true: a missing NVRTC fails instead of skipping)");
    }
    eprintln!("{msg}");
    false
}

#[test]
fn every_kernel_file_compiles_to_ptx_for_sm80_and_sm90() {
    if !nvrtc_or_skip("every_kernel_file_compiles_to_ptx_for_sm80_and_sm90") {
        return;
    }
    let (major, minor) = nvrtc::version().expect("nvrtc version");
    println!("NVRTC {major}.{minor}");
    for arch in ARCHS {
        for file in kernels::FILES {
            let ptx = nvrtc::compile(&file.full_source(), file.name, arch, nvrtc::Output::Ptx).unwrap_or_else(|log| panic!("{log}"));
            let text = String::from_utf8_lossy(&ptx);
            let target = format!(".target {arch}");
            assert!(text.contains(&target), "{}: PTX lacks `{target}`", file.name);
            let mut entries = nvrtc::entry_names_in_ptx(&ptx);
            entries.sort();
            let mut want: Vec<String> = file.kernels.iter().map(|k| k.to_string()).collect();
            want.sort();
            assert_eq!(entries, want, "{} ({arch}): PTX entry points differ from the host's kernel table", file.name);
            println!("{arch} {}: {} bytes of PTX, entries {:?}", file.name, ptx.len(), entries);
        }
    }
}

#[test]
fn every_kernel_file_compiles_to_cubin_for_sm80_and_sm90() {
    if !nvrtc_or_skip("every_kernel_file_compiles_to_cubin_for_sm80_and_sm90") {
        return;
    }
    for arch in ARCHS {
        for file in kernels::FILES {
            let (cubin, log) = nvrtc::compile_with_log(&file.full_source(), file.name, arch, nvrtc::Output::Cubin, &["--ptxas-options=-v"])
                .unwrap_or_else(|log| panic!("{log}"));
            assert!(cubin.starts_with(b"\x7fELF"), "{} ({arch}): CUBIN is not an ELF image", file.name);
            println!("{arch} {}: {} bytes of CUBIN\n{log}", file.name, cubin.len());
            // ptxas reports each kernel's registers and spills; a spill in these small kernels means a
            // register-blocking mistake.
            for line in log.lines().filter(|l| l.contains("spill")) {
                assert!(line.contains(" 0 bytes spill stores") && line.contains(" 0 bytes spill loads"), "{} ({arch}): {line}", file.name);
            }
        }
    }
}

#[test]
fn a_compile_error_reports_the_nvrtc_log() {
    if !nvrtc_or_skip("a_compile_error_reports_the_nvrtc_log") {
        return;
    }
    let err = nvrtc::compile("extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }", "broken.cu", "sm_80", nvrtc::Output::Ptx)
        .expect_err("must not compile");
    assert!(err.contains("undefined_name") && err.contains("broken.cu"), "log lacks the error: {err}");
}

/// The emulator (built from the same files) registers every kernel the host code launches.
#[test]
fn the_emulator_has_every_kernel() {
    if !emu::built() {
        let msg = "the CUDA emulator was not built (no C++ compiler at build time)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED the_emulator_has_every_kernel: {msg} !!!!!!!!\n");
        return;
    }
    for k in kernels::all_kernels() {
        assert!(emu::has_kernel(k), "emulator lacks {k}");
    }
    assert!(emu::kernel_count() >= kernels::all_kernels().count());
}
