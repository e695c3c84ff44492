//! The CUDA C sources in `kernels/`, embedded so a binary compiles them with NVRTC at load time.

/// Prepended to every kernel file: NVRTC has no include path.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// One kernel file and the `extern "C"` entry points it defines.
pub struct KernelFile {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
}

impl KernelFile {
    /// What NVRTC compiles: the common prelude, then the file (line numbers in errors refer to it).
    pub fn full_source(&self) -> String {
        format!("{COMMON}\n#line 1 \"{}\"\n{}", self.name, self.source)
    }
}

macro_rules! kernel_file {
    ($name:literal, [$($k:literal),* $(,)?]) => {
        KernelFile { name: $name, source: include_str!(concat!("../../../kernels/", $name)), kernels: &[$($k),*] }
    };
}

/// Every kernel file (build.rs compiles the same list into the emulator).
pub const FILES: &[KernelFile] = &[
    kernel_file!("encoder.cu", ["encoder_forward", "encoder_backward_wte", "encoder_backward_wpe"]),
    kernel_file!("layernorm.cu", ["layernorm_forward", "layernorm_backward_input", "layernorm_backward_params"]),
    kernel_file!("matmul.cu", ["matmul_tiled", "matmul_backward_bias", "split_reduce_accumulate"]),
    kernel_file!(
        "attention.cu",
        ["attention_forward", "attention_backward_query", "attention_backward_key_value", "kv_cache_write", "attention_decode"]
    ),
    kernel_file!("attnstats.cu", ["attention_stats"]),
    kernel_file!("activation.cu", ["activation_forward", "activation_backward"]),
    kernel_file!("elementwise.cu", ["residual_forward", "scale_columns", "column_dot", "fill", "copy_strided", "argmax_rows"]),
    kernel_file!("crossentropy.cu", ["softmax_crossentropy_forward", "crossentropy_backward"]),
    kernel_file!("adamw.cu", ["adamw_update"]),
    kernel_file!("mask.cu", ["select_rank", "mask_apply", "ste_accumulate", "sou_scores", "sgd_momentum"]),
    kernel_file!("regularize.cu", ["spectral_power_iteration", "spectral_grad_add", "example_tied_dropout"]),
    kernel_file!("smi.cu", ["smi_directions", "smi_class_stats", "smi_score", "smi_row_summary", "ksg_classes", "ksg_scale", "ksg_sort_mi"]),
    kernel_file!(
        "attribution.cu",
        ["gather_rows", "attention_row_forward", "attention_row_backward", "target_prob_backward", "ig_reduce"]
    ),
];

/// Every kernel name, across files.
pub fn all_kernels() -> impl Iterator<Item = &'static str> {
    FILES.iter().flat_map(|f| f.kernels.iter().copied())
}
