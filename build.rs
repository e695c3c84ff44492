//! Build-time checks and builds for the hand-written kernels.
//!
//! `validate_wgsl`: every shader in `shaders/` is parsed and validated with naga (the validator wgpu
//! itself runs), with `common.wgsl` prepended as the backend does at load time, so a shader error fails
//! `cargo build` with its file and line.

use std::path::Path;

fn main() {
    validate_wgsl();
}

fn validate_wgsl() {
    let dir = Path::new("shaders");
    println!("cargo:rerun-if-changed=shaders");
    let common = std::fs::read_to_string(dir.join("common.wgsl")).expect("shaders/common.wgsl");
    let prelude_lines = common.lines().count();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("shaders/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for path in names {
        println!("cargo:rerun-if-changed={}", path.display());
        if path.file_name().is_some_and(|n| n == "common.wgsl") {
            continue;
        }
        let body = std::fs::read_to_string(&path).expect("read shader");
        let src = format!("{common}\n{body}");
        // Lines of the file itself, after the prelude and the joining newline.
        let file_line = |line: u32| (line as usize).saturating_sub(prelude_lines + 1);
        match naga::front::wgsl::parse_str(&src) {
            Err(e) => {
                let line = e.location(&src).map_or(0, |l| file_line(l.line_number));
                failures.push(format!("{}:{line}: {}\n{}", path.display(), e.message(), e.emit_to_string(&src)));
            }
            Ok(module) => {
                let mut validator =
                    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
                if let Err(e) = validator.validate(&module) {
                    let line = e.spans().next().map_or(0, |(span, _)| file_line(span.location(&src).line_number));
                    failures.push(format!("{}:{line}: {}\n{}", path.display(), e.as_inner(), e.emit_to_string(&src)));
                }
            }
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            println!("cargo:warning={}", f.lines().next().unwrap_or(""));
        }
        panic!("WGSL validation failed:\n\n{}", failures.join("\n\n"));
    }
}
